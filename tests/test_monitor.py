"""The run follower and the dashboard's model of a run, without an app."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

from ftwiz.core.engine.results import load_samples, sample_match
from ftwiz.core.monitor import (
    IdleWatch,
    RunFollower,
    RunTracker,
    follow_run,
    last_step_event,
    scan_runs,
)
from ftwiz.tui.widgets.loss_chart import _per_column
from ftwiz.tui.widgets.run_log import format_event
from helpers_runs import SAMPLES, T0, append_events, dead_pid, make_run, step_event, write_fixed_run


def test_follower_reads_only_new_whole_lines_and_strips_progress_redraws(tmp_path):
    run = make_run(tmp_path)
    follower = RunFollower(run)
    first = follower.poll()
    assert first.state == "running" and first.events == [] and first.log_lines == []
    append_events(run, [step_event(1, 40, T0)])
    with open(run.events_path, "a") as handle:
        handle.write('{"v": 1, "type": "st')  # a writer caught mid-line
    run.log_path.write_text("loading\n 10%|#  \r 50%|#####  \r100%|##########\npartial")
    update = follower.poll()
    assert [e["step"] for e in update.events] == [1]
    assert update.log_lines == ["loading", "100%|##########"]
    assert update.status is None  # unchanged status is not resent
    with open(run.events_path, "a") as handle:
        handle.write('ep", "step": 2}\n')
    with open(run.log_path, "a") as handle:
        handle.write(" line\n")
    update = follower.poll()
    assert [e["step"] for e in update.events] == [2] and update.log_lines == ["partial line"]


def test_follower_shows_only_the_tail_of_a_long_log(tmp_path):
    run = make_run(tmp_path)
    run.log_path.write_text("".join(f"line {i}\n" for i in range(10000)))
    lines = RunFollower(run, log_tail_bytes=1000).poll().log_lines
    assert lines[-1] == "line 9999" and len(lines) < 120 and lines[0].startswith("line ")


def test_follow_run_stops_by_itself_after_a_finished_run_is_read(tmp_path):
    run = write_fixed_run(tmp_path).run
    updates = []
    follow_run(run, updates.append, threading.Event(), interval_s=0)
    assert sum(len(u.events) for u in updates) == len(list(run.iter_events()))


def test_follow_run_honours_cancel(tmp_path):
    run = make_run(tmp_path)
    cancel = threading.Event()
    cancel.set()
    follow_run(run, lambda update: None, cancel, interval_s=10)  # returns at once


def test_tracker_folds_events():
    tracker = RunTracker()
    tracker.add([
        {"t": T0, "type": "started", "max_steps": 40, "estimate_usd": 1.5},
        step_event(1, 40, T0 + 3),
        {"t": T0 + 4, "type": "eval", "step": 1, "eval_loss": 2.0},
        {"t": T0 + 5, "type": "nan", "step": 2, "message": "loss is nan"},
        {"t": T0 + 6, "type": "step", "step": 2, "loss": None},
    ])
    assert (tracker.step, tracker.max_steps, tracker.estimate_usd) == (2, 40, 1.5)
    assert tracker.train_loss == [(1, step_event(1, 40, 0)["loss"])]
    assert tracker.eval_loss == [(1, 2.0)]
    assert tracker.notice["type"] == "nan" and tracker.events_seen == 5


@dataclass
class Sample:
    index: int
    t: float
    utilization_pct: float
    memory_used_bytes: int


def test_idle_watch_needs_a_full_minute_idle_with_memory_held():
    watch = IdleWatch(idle_after_s=60)
    held = 30 * 1024**3
    assert watch.update([Sample(0, 0, 0, held)]) == []
    assert watch.update([Sample(0, 59, 0, held)]) == []
    assert watch.update([Sample(0, 61, 1, held)]) == [(0, 61)]
    assert watch.update([Sample(0, 62, 80, held)]) == []  # busy resets
    assert watch.update([Sample(0, 200, 0, 0)]) == []  # idle but holding nothing


def test_scan_runs_marks_a_run_whose_process_is_gone_as_crashed(tmp_path):
    make_run(tmp_path, "gone", pid=dead_pid(), heartbeat=T0)
    fixed = write_fixed_run(tmp_path, "done")
    rows = {row.name: row for row in scan_runs(tmp_path, now=T0 + 500)}
    assert rows["gone"].state == "crashed"
    assert rows["done"].state == "finished" and rows["done"].step == 40
    assert rows["done"].last_loss == last_step_event(fixed.run)["loss"]
    assert rows["done"].age_s == 500 - 120


def test_per_column_keeps_one_point_per_pixel():
    assert _per_column([(0, 10), (0, 20), (1, 5), (3, 7), (3, 9)]) == [(0, 15), (1, 5), (3, 8)]


def test_event_notices():
    assert format_event({"type": "step", "step": 1}) is None
    assert format_event({"type": "limit", "message": "max_cost $5 reached"}) == "■ limit reached: max_cost $5 reached"


def test_samples_file_and_match(tmp_path):
    path = tmp_path / "samples.json"
    path.write_text(json.dumps(SAMPLES))
    samples = load_samples(path)
    assert len(samples.rows) == 3 and ("format_match", 0.0, 0.875) in samples.scores
    assert sample_match({"after": "x", "expected": "y", "match": True}) == "✓"  # engine's verdict wins
    assert load_samples(tmp_path / "missing.json").rows == []
    path.write_text(json.dumps([{"prompt": "p", "after": "a", "expected": "a"}]))
    assert [sample_match(r) for r in load_samples(path).rows] == ["✓"]


def test_follower_judges_a_stale_heartbeat_by_its_clock_and_the_pid_by_its_command_line(tmp_path):
    """A live pid that is not an engine (a recycled pid: here pytest's own) with a heartbeat
    older than the clock allows is a crashed run; an engine process with one is stalled (hung)."""
    recycled = make_run(tmp_path, "recycled", pid=os.getpid(), heartbeat=T0)
    assert RunFollower(recycled, clock=lambda: T0 + 10).poll().state == "running"
    assert RunFollower(recycled, clock=lambda: T0 + 500).poll().state == "crashed"
    engine = make_run(tmp_path, "engine", heartbeat=T0)  # the shared engine stand-in
    assert RunFollower(engine, clock=lambda: T0 + 10).poll().state == "running"
    assert RunFollower(engine, clock=lambda: T0 + 500).poll().state == "stalled"


ENGINE_SAMPLES = {
    "count": 2, "metric": "demo: format_match = answer is an ISO date and nothing else",
    "before": {"format_match": 0.0}, "after": {"format_match": 1.0},
    "examples": [
        {"prompt": "Date: 18 April 1951\nISO:", "reference": "1951-04-18", "before": "Pr", "after": "1951-04-18"},
        {"prompt": "Date: 3 May 1994\nISO:", "reference": "1994-05-03", "before": "/r", "after": "1995-05-05"},
    ],
}


def test_samples_as_the_engine_writes_them(tmp_path):
    from ftwiz.core.engine.results import expected_text

    path = tmp_path / "samples.json"
    path.write_text(json.dumps(ENGINE_SAMPLES))
    samples = load_samples(path)
    assert samples.metric.startswith("demo: format_match") and samples.count == 2
    assert [expected_text(r) for r in samples.rows] == ["1951-04-18", "1994-05-03"]
    assert [sample_match(r) for r in samples.rows] == ["✓", "✗"]


def test_shell_command_keeps_a_multiline_prompt_on_one_line_and_bash_reads_it_back():
    import subprocess

    from ftwiz.core.engine.results import shell_quote

    for prompt in ["Date: 18 April 1951\nISO:", "it's \\ odd\t\x01", "plain words"]:
        quoted = shell_quote(prompt)
        assert "\n" not in quoted
        echoed = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, text=True).stdout
        assert echoed == prompt


def test_python_snippet_prompts_as_training_did(tmp_path):
    from ftwiz.core.engine.results import run_data_format, usage_snippets

    run = make_run(tmp_path, state="finished")
    config = {"method": "lora", "model": {"name_or_path": "base"}, "data": {"format": "auto"}}
    assert run_data_format(run, config) is None
    append_events(run, [{"t": T0, "type": "warning",
                         "message": "prompt_completion data: 1900 training and 100 evaluation examples"}])
    assert run_data_format(run, config) == "prompt_completion"
    plain = usage_snippets(run, config, "Date: 1 May 2000\nISO:", "prompt_completion")["load"]
    assert "apply_chat_template" not in plain and 'tokenizer("Date: 1 May 2000\\nISO:", return_tensors="pt")' in plain
    chat = usage_snippets(run, {**config, "data": {"format": "chat"}}, "Hi", "chat")["load"]
    adapter = str(run.adapter_dir.resolve())
    assert "apply_chat_template" in chat and f'AutoTokenizer.from_pretrained("{adapter}")' in chat
