"""Group 4 of the adversarial suite: resume checks what it resumes; readers trust nothing.

The run records its data (absolute path, size, SHA-256) and a resume on other data is refused
unless asked for; a complete-marked checkpoint whose files do not load is set aside with a
warning and the previous one is used; a resume keeps what the probe chose; readers of
events.jsonl and status.json skip what they cannot read; a disk filled outside a checkpoint
save ends the run with an error event that says so.
"""

from __future__ import annotations

import json
import os
import zipfile

import pytest
from helpers_engine import config_dict, events, start, tiny_model_dir, wait_state, write_data
from helpers_runs import append_events, make_run

from ftwiz.cli.main import main
from ftwiz.core.engine import checkpoints
from ftwiz.core.engine.checkpoints import BAD_PREFIX, COMPLETE_MARKER, usable_checkpoint
from ftwiz.core.runs import RunDir


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


# -- damaged checkpoints (no training: checkpoints written as the Trainer writes them) --------------
def _checkpoint(root, step: int):
    import torch
    from safetensors.torch import save_file

    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"lora_A": torch.randn(8, 16)}, str(path / "adapter_model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.randn(64, 64)}}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    (path / COMPLETE_MARKER).write_text("ok\n")
    return path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:  # a byte inside the tensor data, not the directory
        info = next(i for i in archive.infolist() if "/data/" in i.filename)
    data[info.header_offset + 200] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated safetensors": lambda p: _truncate(p / "adapter_model.safetensors"),
    "broken trainer_state.json": lambda p: (p / "trainer_state.json").write_text('{"global_step": 8, '),
    "missing trainer_state.json": lambda p: (p / "trainer_state.json").unlink(),
    "corrupt optimizer": lambda p: _flip(p / "optimizer.pt"),
    "truncated optimizer": lambda p: _truncate(p / "optimizer.pt"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_complete_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, damage):
    good = _checkpoint(tmp_path, 4)
    bad = _checkpoint(tmp_path, 8)
    assert usable_checkpoint(tmp_path) == (bad, [])  # both whole: the newest
    DAMAGE[damage](bad)
    found, set_aside = usable_checkpoint(tmp_path)
    assert found == good and [name for name, _ in set_aside] == ["checkpoint-8"]
    assert not bad.exists() and (tmp_path / f"{BAD_PREFIX}checkpoint-8").is_dir()  # kept for a look
    assert checkpoints.latest_checkpoint(tmp_path) == good
    assert checkpoints.rotate(tmp_path, 1) == [] and (tmp_path / f"{BAD_PREFIX}checkpoint-8").is_dir()


def test_no_usable_checkpoint_means_the_start(tmp_path):
    _truncate(_checkpoint(tmp_path, 4) / "adapter_model.safetensors")
    assert usable_checkpoint(tmp_path)[0] is None


# -- the data a run trains on ---------------------------------------------------------------------------
@pytest.fixture
def prepared(model, tmp_path, monkeypatch):
    """A run prepared (checked, written, not started) from a relative data path; launches recorded."""
    from ftwiz.core.config import config_from_dict
    from ftwiz.core.engine import launch as launch_module

    monkeypatch.chdir(tmp_path)
    write_data(tmp_path / "d.jsonl", 16)
    config = config_from_dict({**config_dict(model, "d.jsonl", "r"), "output": {"samples": 0}})
    run = launch_module.start_run(config, tmp_path / "runs", start=False)
    launched = []
    monkeypatch.setattr(launch_module, "launch", lambda run, **kwargs: launched.append(kwargs) or run)
    return run, launched


def test_the_data_is_recorded_at_start_and_read_by_absolute_path(prepared, tmp_path):
    run, _ = prepared
    recorded = run.read_status()["data"]
    data = tmp_path / "d.jsonl"
    assert recorded["path"] == str(data.resolve()) and recorded["size"] == data.stat().st_size
    assert len(recorded["sha256"]) == 64
    assert run.read_config()["data"]["path"] == str(data.resolve())  # not "d.jsonl" of whatever cwd


def test_resuming_from_another_directory_trains_on_the_same_file(prepared, tmp_path, monkeypatch, capsys):
    run, launched = prepared
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_data(elsewhere / "d.jsonl", 40)  # another file of the same relative name
    monkeypatch.chdir(elsewhere)
    assert main(["--runs-dir", str(tmp_path / "runs"), "resume", run.name]) == 0
    assert len(launched) == 1


@pytest.mark.parametrize("change", ["edited", "removed"])
def test_a_resume_on_other_data_is_refused_unless_asked_for(prepared, tmp_path, capsys, change):
    run, launched = prepared
    data = tmp_path / "d.jsonl"
    before = run.read_status()["data"]["sha256"]
    if change == "edited":
        data.write_text(data.read_text().replace("a", "b", 1))  # same size, other content
    else:
        data.unlink()
    assert main(["--runs-dir", str(tmp_path / "runs"), "resume", run.name]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--allow-data-change" in err and "Traceback" not in err
    assert launched == [] and not [e for e in run.iter_events() if e["type"] == "resumed"]
    if change == "edited":
        assert main(["--runs-dir", str(tmp_path / "runs"), "resume", run.name, "--allow-data-change"]) == 0
        assert len(launched) == 1
        assert any("changed data" in e.get("message", "") for e in events(run, "warning"))
        import hashlib

        after = run.read_status()["data"]["sha256"]
        assert after != before and after == hashlib.sha256(data.read_bytes()).hexdigest()


# -- readers -----------------------------------------------------------------------------------------
def test_damaged_events_and_status_never_take_the_runs_list_down(tmp_path, capsys):
    from ftwiz.cli.run_cmds import format_event
    from ftwiz.core.monitor import RunTracker, scan_runs

    good = make_run(tmp_path, "good", state="finished")
    append_events(good, [{"v": 1, "t": 1.0, "type": "step", "step": 1, "max_steps": 4, "loss": 1.5}])
    bad_events = make_run(tmp_path, "bad-events", state="finished")
    with open(bad_events.events_path, "ab") as handle:
        handle.write(b'\xff\xfe binary\n[1, 2]\n"a string"\n42\n{"type": 5}\n' + b"[" * 100000 + b"\n")
        handle.write(b'{"v": 1, "t": "noon", "type": "step", "step": "three", "loss": "low", "eta_s": "soon"}\n')
        handle.write(b'{"v": 1, "t": 2.0, "type": "eval", "step": [], "eval_loss": 1.0}\n')
        handle.write(b'{"v": 1, "t": 3.0, "type": "finished", "step": 4}\n')
    wrong_shape = make_run(tmp_path, "wrong-shape", state="finished")
    wrong_shape.status_path.write_text("[1, 2, 3]")
    wrong_types = make_run(tmp_path, "wrong-types", state="running")
    wrong_types.status_path.write_text(json.dumps({"state": "running", "pid": "x", "heartbeat": "noon",
                                                   "created": "yesterday", "step": "3", "max_steps": [1]}))
    not_json = make_run(tmp_path, "not-json", state="finished")
    not_json.status_path.write_bytes(b"\x00\x01{{{")

    assert main(["--runs-dir", str(tmp_path), "runs", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"good", "bad-events", "wrong-shape", "wrong-types", "not-json"}
    assert rows["good"]["loss"] == 1.5 and rows["bad-events"]["state"] == "finished"
    assert main(["--runs-dir", str(tmp_path), "runs"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    assert {row.name for row in scan_runs(tmp_path, now=10.0)} == set(rows)
    from ftwiz.core.events import parse_events

    tracker = RunTracker()
    tracker.add(parse_events(bad_events.iter_events()))
    assert tracker.finished and tracker.finished.step == 4
    for event in bad_events.iter_events():
        format_event(event)
    assert main(["--runs-dir", str(tmp_path), "attach", "bad-events", "--interval", "0.01"]) == 0
    assert "[finished]" in capsys.readouterr().out


# -- with the run process (a tiny model on the CPU) ---------------------------------------------------
@pytest.fixture(scope="module")
def runs(model, tmp_path_factory):
    """Started together, to share the wait."""
    base = tmp_path_factory.mktemp("resume")
    data = write_data(base / "d.jsonl")
    started = {
        # The probe runs out of memory 4 times: micro-batch 4, 2, 1 without checkpointing, then 4
        # with it; it settles on 2 with checkpointing. After step 6 it runs out of memory with no
        # retries left: failed, with complete checkpoints 4 and 6.
        "resumable": start(model, data, base / "runs", "resumable",
                           env={"FTWIZ_FAULT_OOM_IN_PROBE": "4", "FTWIZ_FAULT_OOM_AT_STEP": "6"},
                           save_steps=2, limits={"oom_retries": 0}),
        # Nothing fits, not even micro-batch 1 with checkpointing.
        "nofit": start(model, data, base / "runs", "nofit", env={"FTWIZ_FAULT_OOM_IN_PROBE": "99"}, max_steps=2),
        # From step 3 on no file may grow past 1500 bytes, outside any checkpoint save: a disk
        # another process filled.
        "diskfull": start(model, data, base / "runs", "diskfull",
                          env={"FTWIZ_FAULT_FSIZE_BYTES": "1500", "FTWIZ_FAULT_FSIZE_AT_STEP": "3"}, save_steps=100),
    }
    return started


@pytest.mark.slow
@pytest.mark.timeout(600)  # starts the module's three runs, then trains again in the foreground
def test_resume_keeps_the_probes_choice_and_skips_a_damaged_checkpoint(runs):
    run = runs["resumable"]
    assert wait_state(run, {"finished", "failed", "crashed"}) == "failed", run.log_path.read_text()[-3000:]
    probe = events(run, "probe")[0]
    assert (probe["micro_batch"], probe["grad_accum"], probe["gradient_checkpointing"], probe["fits"]) == (2, 2, True, True)
    assert [checkpoints.checkpoint_step(p) for p in checkpoints.complete_checkpoints(run.checkpoints_dir)] == [4, 6]
    _truncate(run.checkpoints_dir / "checkpoint-6" / "adapter_model.safetensors")

    from ftwiz.core.engine.launch import resume_run

    resume_run(RunDir(run.path), detach=False)  # no fault variables this time
    assert run.state() == "finished", run.log_path.read_text()[-3000:]
    after = events(run)[max(i for i, e in enumerate(events(run)) if e["type"] == "resumed"):]
    warning = next(e for e in after if e["type"] == "warning" and "checkpoint-6" in e["message"])
    assert "damaged" in warning["message"] and "checkpoint-4" in warning["message"]
    started = next(e for e in after if e["type"] == "started")
    assert started["resumed_from"] == "checkpoints/checkpoint-4"
    assert (started["micro_batch"], started["grad_accum"], started["gradient_checkpointing"]) == (2, 2, True)
    assert not [e for e in after if e["type"] == "probe"]  # the probe's choice stands
    assert (run.checkpoints_dir / f"{BAD_PREFIX}checkpoint-6").is_dir()


@pytest.mark.slow
def test_the_probe_says_when_nothing_fits(runs):
    run = runs["nofit"]
    assert wait_state(run, {"finished", "failed", "crashed"}) == "finished", run.log_path.read_text()[-3000:]
    probe = events(run, "probe")[0]
    assert probe["fits"] is False and (probe["micro_batch"], probe["gradient_checkpointing"]) == (1, True)
    assert any("even micro-batch 1" in e["message"] for e in events(run, "warning"))


@pytest.mark.slow
def test_a_disk_filled_outside_a_save_ends_with_an_error_event(runs):
    run = runs["diskfull"]
    assert wait_state(run, {"finished", "failed", "crashed"}) == "failed", run.log_path.read_text()[-3000:]
    error = events(run, "error")[-1]
    assert error["message"].startswith("disk full") and "df -h" in error["suggestion"]
    assert run.read_status()["state"] == "failed"
    assert not (run.path / ".reserve").exists()
    assert os.path.getsize(run.events_path) > 1500  # written after the limit: the reserve was freed
