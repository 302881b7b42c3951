"""core/events.py against docs/events.md, and the typed run-directory files' behaviour."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from ftwiz.core import events
from ftwiz.core.runs import RunDir

DOC = Path(__file__).resolve().parents[1] / "docs" / "events.md"
FILES = {
    "## status.json": events.RunStatus,
    "### `probe` in status.json": events.ProbeSummary,
    "## samples.json": events.SamplesFile,
    "### `examples` rows in samples.json": events.SampleRow,
}


def documented_tables() -> dict[str, dict[str, bool]]:
    """heading -> {field: optional?} from the first table under each heading of docs/events.md."""
    tables: dict[str, dict[str, bool]] = {}
    heading = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line.strip()
            continue
        if heading is None or not line.startswith("| `"):
            continue
        first, meaning = line.split("|")[1:3]
        table = tables.setdefault(heading, {})
        for name in re.findall(r"`([^`]+)`", first):
            table[name] = "*optional*" in meaning
    return tables


def documented_events() -> dict[str, dict[str, bool]]:
    out = {}
    for heading, table in documented_tables().items():
        match = re.match(r"### `(\w+)` — ", heading)
        if match:
            out[match.group(1)] = table
    return out


def test_every_event_type_is_documented_and_defined():
    assert set(documented_events()) == set(events.EVENT_TYPES)


@pytest.mark.parametrize("kind", sorted(events.EVENT_TYPES))
def test_event_fields_match_the_document(kind):
    documented = documented_events()[kind]
    cls = events.EVENT_TYPES[kind]
    defined = {f.name: f.default is None for f in dataclasses.fields(cls) if f.name not in ("t", "v")}
    assert set(defined) == set(documented), f"{kind}: code {sorted(defined)} vs docs/events.md {sorted(documented)}"
    assert defined == documented, f"{kind}: optional fields differ (code: default None; docs: *optional*)"


def test_common_fields_match_the_document():
    (title,) = [heading for heading in documented_tables() if heading.startswith("# ")]
    documented = documented_tables()[title]
    assert {f.name for f in dataclasses.fields(events.Event)} | {"type"} == set(documented)


@pytest.mark.parametrize("heading", sorted(FILES))
def test_file_fields_match_the_document(heading):
    documented = documented_tables()[heading]
    assert {f.name for f in dataclasses.fields(FILES[heading])} == set(documented)


def test_writing_a_field_the_type_does_not_define_fails(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(TypeError):
        run.emit("oom", step=3, per_device_train_batch_size=2)
    with pytest.raises(TypeError):
        run.emit("no-such-type", message="x")
    with pytest.raises(TypeError):
        run.write_status(estimate_usd=0.5)
    with pytest.raises(TypeError):
        run.write_status(probe={"estimate_usd": 0.5})
    assert not run.events_path.exists() and not run.status_path.exists()


def test_round_trip_and_tolerant_parsing(tmp_path):
    run = RunDir(tmp_path)
    written = run.emit(events.LimitEvent(step=17, limit="max_cost", value=5.0, spend_usd=5.01))
    assert "hours" not in written  # optional and empty: left out, as before the types
    (record,) = run.read_events()[0]
    event = events.parse_event(record)
    assert event == events.LimitEvent(t=record["t"], step=17, limit="max_cost", value=5.0, spend_usd=5.01)
    assert events.notice_text(event) == "max_cost $5.00 (spent $5.01): saving and stopping"
    # A newer writer's extra field is dropped; a missing one reads as None; other versions skip.
    newer = events.parse_event({"v": 1, "t": 1.0, "type": "eval", "step": 2, "eval_loss": 1.5, "new": 1})
    assert newer == events.EvalEvent(t=1.0, step=2, eval_loss=1.5, epoch=None)
    assert events.parse_event({"v": 2, "type": "eval"}) is None
    assert events.parse_event({"v": 1, "type": "unheard-of"}) is None


def test_status_probe_round_trip(tmp_path):
    run = RunDir(tmp_path)
    run.write_status(state="running", max_steps=-1, probe=events.ProbeSummary(estimated_cost_usd=0.25, changes=[]))
    status = run.run_status()
    assert status.estimated_cost_usd == 0.25 and status.known_max_steps is None
    assert run.read_status()["probe"]["estimated_cost_usd"] == 0.25


def test_oom_and_nan_notices_say_what_the_event_says():
    oom = events.OomEvent(step=5, attempt=1, max_attempts=2, micro_batch_old=8, micro_batch_new=4,
                          grad_accum_old=1, grad_accum_new=2, resume_from=None, message="CUDA out of memory")
    assert events.notice_text(oom) == "CUDA out of memory (micro-batch now 4)"
    nan = events.NanEvent(step=9, reason="loss is nan", loss=float("nan"), suggestion="lower the LR")
    assert events.notice_text(nan) == "loss is nan"
    hours = events.LimitEvent(step=3, limit="max_hours", value=0.5, hours=0.5001)
    assert events.notice_text(hours) == "max_hours 0.5 (ran 0.50 h): saving and stopping"
