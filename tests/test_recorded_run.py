"""A run directory the real engine wrote (tests/fixtures/demo_run, the CPU demo), fed to every
reader: every figure the dashboard, the runs list, `ftwiz runs`/`attach` and the Done screen
show must be there. A field the engine writes under another name than a reader reads shows
up here as a blank, as the dashboard's cost estimate once did (it read `estimate_usd`; the
engine writes the probe's `estimated_cost_usd`)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ftwiz.cli.run_cmds import format_event as cli_format_event
from ftwiz.cli.run_cmds import run_row
from ftwiz.core import events
from ftwiz.core.engine.results import load_samples, run_data_format, sample_match, usage_snippets
from ftwiz.core.monitor import RunTracker, scan_runs
from ftwiz.tui.widgets.run_log import format_event
from ftwiz.tui.widgets.run_progress import progress_line, spend_line
from helpers_runs import RECORDED, T0, events_upto, recorded_events, write_fixed_run


def test_the_recording_has_every_field_its_types_define_and_no_other():
    """The recording and core/events.py agree (re-record with tests/fixtures/record_demo_run.py
    after changing what the engine writes)."""
    seen = set()
    for record in recorded_events():
        cls = events.EVENT_TYPES[record["type"]]
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        assert set(record) - {"type"} <= names, record["type"]
        assert required <= set(record), record["type"]
        seen.add(record["type"])
    assert {"started", "probe", "model", "step", "eval", "checkpoint", "samples", "finished"} <= seen


def tracker_of(run) -> RunTracker:
    tracker = RunTracker()
    tracker.add(events.parse_events(run.iter_events()))
    tracker.apply_status(run.run_status())
    return tracker


@pytest.mark.parametrize("finished", [True, False])
def test_the_dashboard_shows_every_figure(tmp_path, finished):
    run = write_fixed_run(tmp_path, finished=finished, upto_step=120).run
    tracker = tracker_of(run)
    for name in ("step", "max_steps", "epoch", "eta_s", "tokens_per_s", "learning_rate", "grad_norm",
                 "spend_usd", "estimated_cost_usd", "started_t", "last_t"):
        assert getattr(tracker, name) is not None, name
    assert tracker.train_loss and tracker.eval_loss
    assert (tracker.finished is not None) is finished and tracker.samples_ready is finished
    assert tracker.max_steps == 238 and tracker.step == (238 if finished else 120)
    line = progress_line(tracker, elapsed_s=60.0)
    assert all(part in line for part in ("step ", "epoch ", "ETA ", "elapsed ", "tok/s", "lr "))
    spend = spend_line(tracker.spend_usd, tracker.estimated_cost_usd, 5.0)
    assert "spent $" in spend and "plan $0.01" in spend and "budget $5.00" in spend


def test_the_log_pane_and_attach_describe_every_event():
    for record in recorded_events():
        event = events.parse_event(record)
        assert event is not None
        line = format_event(event)
        if record["type"] in ("checkpoint", "samples", "warning"):
            assert line and line.split(": ", 1)[1], line  # the path or the message
        text = cli_format_event(record)
        assert text and "None" not in text.split("  ")[0], text


def test_the_runs_lists_show_every_column(tmp_path):
    run = write_fixed_run(tmp_path, "demo-lora").run
    (row,) = scan_runs(tmp_path, now=T0 + 600)
    assert (row.state, row.step, row.max_steps) == ("finished", 238, 238)
    assert row.last_loss is not None and row.age_s is not None
    cli = run_row(run, now=T0 + 600)
    assert None not in (cli["step"], cli["max_steps"], cli["loss"], cli["heartbeat_age_s"], cli["age_s"])


def test_the_done_screen_has_samples_scores_and_the_data_format(tmp_path):
    run = write_fixed_run(tmp_path).run
    samples = load_samples(run.samples_path)
    assert samples.count == 8 and samples.metric and samples.scores
    assert ("format_match", 0.0, 1.0) in samples.scores
    for row in samples.examples:
        assert row.prompt and row.reference and row.before is not None and row.after is not None
        assert sample_match(row) in ("✓", "✗")
    config = run.read_config()
    assert run_data_format(run, config) == "prompt_completion"
    snippets = usage_snippets(run, config, samples.examples[0].prompt, run_data_format(run, config))
    assert set(snippets) == {"load", "commands", "merged"} and "ftwiz-demo-tiny" in snippets["load"]


def test_a_run_on_epochs_starts_with_max_steps_unknown():
    """status.json says max_steps -1 until the Trainer counts the steps: the dashboard shows
    "step 0/?", not a bar at -1."""
    first = events.RunStatus.parse(json.loads((RECORDED / "status_history.jsonl").read_text().splitlines()[0])["status"])
    assert first.max_steps == -1 and first.known_max_steps is None
    tracker = RunTracker()
    tracker.apply_status(first)
    tracker.add(events.parse_events([e for e in events_upto(0) if e["type"] != "model"]))
    assert tracker.max_steps is None and progress_line(tracker, None).startswith("step 0/? ·")
