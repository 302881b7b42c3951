"""The model download before training (core/engine/download.py): huggingface_hub's own client
code runs against a Hub on 127.0.0.1 (tests/fake_hub.py), and the `download` events it causes
are what the dashboard shows."""

from __future__ import annotations

import os
import time

import pytest

from fake_hub import FakeHub, hub_client
from ftwiz.core.engine.download import fetch_model, files_to_fetch
from ftwiz.core.errors import UserError
from ftwiz.core.events import DownloadEvent, parse_event
from ftwiz.core.runs import RunDir

REPO = "someorg/tiny-llama"
FILES = {
    "config.json": b'{"model_type": "llama"}',
    "tokenizer.json": b"{}" * 500,
    "model-00001-of-00002.safetensors": os.urandom(600_000),
    "model-00002-of-00002.safetensors": os.urandom(400_000),
    "model.safetensors.index.json": b'{"weight_map": {}}',
    "consolidated.safetensors": b"c" * 50_000,  # Mistral's second copy of the weights
    "original/consolidated.00.pth": b"o" * 50_000,  # Llama's
    "README.md": b"# tiny",
}
WANTED = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
          "model.safetensors.index.json", "tokenizer.json"]


def test_only_the_files_from_pretrained_reads_are_fetched():
    assert files_to_fetch(FILES) == WANTED
    pickled = ["config.json", "pytorch_model.bin", "training_args.bin", "modeling_x.py"]
    assert files_to_fetch(pickled) == ["config.json"]
    assert files_to_fetch(pickled, allow_pickle=True, trust_remote_code=True) == [
        "config.json", "modeling_x.py", "pytorch_model.bin"]
    both = ["config.json", "model.safetensors", "pytorch_model.bin"]
    assert files_to_fetch(both, allow_pickle=True) == ["config.json", "model.safetensors"]


def test_a_download_emits_throttled_progress_with_files_bytes_speed_and_time_left(tmp_path, monkeypatch):
    emitted: list[tuple[float, DownloadEvent]] = []
    with FakeHub({REPO: FILES}, chunk=16 * 1024, pause_s=0.03) as hub, hub_client(monkeypatch, hub, tmp_path / "cache"):
        fetch_model(REPO, lambda event: emitted.append((time.monotonic(), event)), interval_s=0.3)
    events = [event for _, event in emitted]
    total = sum(len(FILES[name]) for name in WANTED)
    assert sorted(hub.gets) == WANTED  # one GET each; no second copy of the weights
    first, *middle, last = events
    assert (first.files_done, first.files_total, first.bytes_done, first.bytes_total) == (0, 5, 0, total)
    assert (last.files_done, last.bytes_done, last.done, last.eta_s) == (5, total, True, 0.0)
    assert last.bytes_per_s and last.model == REPO
    assert middle and not any(event.done for event in middle)
    done = [event.bytes_done for event in events]
    assert done == sorted(done) and 0 < middle[-1].bytes_done < total
    measured = [event for event in middle if event.bytes_per_s is not None]
    # A window with bytes flowing has a time left; a stalled one (0 B/s, seen under CPU load) has none.
    assert measured and all(event.eta_s is not None for event in measured if event.bytes_per_s and event.bytes_done < total)
    assert all(event.eta_s is None for event in measured if event.bytes_per_s == 0)
    gaps = [b - a for (a, _), (b, _) in zip(emitted[1:-1], emitted[2:-1])]
    assert all(gap > 0.2 for gap in gaps), gaps  # at most one event per interval


def test_a_cached_model_and_a_local_folder_download_nothing_and_say_nothing(tmp_path, monkeypatch):
    emitted: list[DownloadEvent] = []
    with FakeHub({REPO: FILES}) as hub, hub_client(monkeypatch, hub, tmp_path / "cache"):
        fetch_model(REPO, lambda event: None)
        gets = list(hub.gets)
        fetch_model(REPO, emitted.append)
        assert hub.gets == gets and emitted == []
    fetch_model(str(tmp_path), emitted.append)  # a local folder: not even the Hub is asked
    assert emitted == []


def test_a_partly_cached_model_counts_its_cached_files_as_done(tmp_path, monkeypatch):
    from huggingface_hub import hf_hub_download

    emitted: list[DownloadEvent] = []
    with FakeHub({REPO: FILES}) as hub, hub_client(monkeypatch, hub, tmp_path / "cache"):
        hf_hub_download(REPO, "config.json")  # what `ftwiz plan` fetched earlier
        fetch_model(REPO, emitted.append)
    assert (emitted[0].files_done, emitted[0].bytes_done) == (1, len(FILES["config.json"]))
    assert emitted[-1].done and emitted[-1].files_done == emitted[-1].files_total == 5


def test_offline_and_not_in_the_cache_is_one_line_saying_what_to_do(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError) as caught:
        fetch_model(REPO, lambda event: None)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("model.name_or_path: ")
    assert "offline" in message and f"hf download {REPO}" in message


def test_offline_with_the_model_in_the_cache_leaves_it_to_from_pretrained(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with FakeHub({REPO: FILES}) as hub, hub_client(monkeypatch, hub, tmp_path / "cache"):
        fetch_model(REPO, lambda event: None)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    emitted: list[DownloadEvent] = []
    fetch_model(REPO, emitted.append)
    assert emitted == []


def test_a_model_the_hub_does_not_have_is_one_line(tmp_path, monkeypatch):
    with FakeHub({REPO: FILES}) as hub, hub_client(monkeypatch, hub, tmp_path / "cache"):
        with pytest.raises(UserError, match=r"^model.name_or_path: nobody/missing: not found on the Hugging Face Hub"):
            fetch_model("nobody/missing", lambda event: None)


def test_a_download_that_breaks_off_fails_with_what_to_do(tmp_path, monkeypatch):
    from ftwiz.core.engine.download import DownloadFailed

    with FakeHub({REPO: FILES}, fail=frozenset({"model-00002-of-00002.safetensors"})) as hub, \
            hub_client(monkeypatch, hub, tmp_path / "cache"):
        with pytest.raises(DownloadFailed) as caught:
            fetch_model(REPO, lambda event: None)
    assert f"downloading {REPO} broke off" in str(caught.value) and "\n" not in str(caught.value)
    assert "ftwiz resume" in caught.value.suggestion


def test_a_broken_download_names_the_command_that_resumes_it(tmp_path, monkeypatch):
    """The run process passes its own `ftwiz resume NAME`; the suggestion says that one."""
    from ftwiz.core.engine.download import DownloadFailed

    with FakeHub({REPO: FILES}, fail=frozenset({"model-00002-of-00002.safetensors"})) as hub, \
            hub_client(monkeypatch, hub, tmp_path / "cache"):
        with pytest.raises(DownloadFailed) as caught:
            fetch_model(REPO, lambda event: None, resume_command="ftwiz resume chat-0412")
    assert "`ftwiz resume chat-0412` continues the download" in caught.value.suggestion


def test_events_written_through_the_run_directory_parse_back(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with FakeHub({REPO: FILES}, chunk=64 * 1024, pause_s=0.01) as hub, hub_client(monkeypatch, hub, tmp_path / "cache"):
        fetch_model(REPO, run.emit, interval_s=0.1)
    events = [parse_event(record) for record in run.iter_events()]
    assert all(isinstance(event, DownloadEvent) for event in events)
    assert events[-1].done and events[-1].t is not None


@pytest.mark.slow
def test_the_run_process_downloads_a_hub_model_before_it_loads_it(tmp_path, tmp_path_factory, monkeypatch):
    """A real run of a Hub id (the demo's tiny Llama served from 127.0.0.1): `download` events,
    the last one done, all before `started`; then it trains from the cached files."""
    from fake_hub import hub_env
    from helpers_engine import events, start, tiny_model_dir, wait_state, write_data

    model = tiny_model_dir(tmp_path_factory)
    files = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    home = tmp_path / "hf-home"
    with FakeHub({REPO: files}, chunk=64 * 1024) as hub, hub_client(monkeypatch, hub, home / "hub"):
        run = start(REPO, write_data(tmp_path / "data.jsonl", n=40), tmp_path / "runs", name="hub",
                    env=hub_env(hub, home), max_steps=2, save_steps=2)
        assert wait_state(run, {"finished", "failed", "crashed"}) == "finished", run.log_path.read_text()[-3000:]
    kinds = [event["type"] for event in events(run)]
    downloads = events(run, "download")
    assert downloads and kinds.index("started") > max(i for i, kind in enumerate(kinds) if kind == "download")
    assert downloads[-1]["done"] and downloads[-1]["files_done"] == downloads[-1]["files_total"]
    weights = [name for name in files if name.endswith(".safetensors")]
    assert weights and all(name in hub.gets for name in weights)
