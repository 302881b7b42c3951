"""The run follower and the dashboard's model of a run, without an app."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass

import pytest

from ftwiz.core.engine.results import load_samples, sample_match
from ftwiz.core.events import LimitEvent, NanEvent, ProbeEvent, SampleRow, StepEvent, parse_event, parse_events
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
from helpers_runs import T0, append_events, dead_pid, events_upto, make_run, step_events, write_fixed_run


def test_follower_reads_only_new_whole_lines_and_strips_progress_redraws(tmp_path):
    run = make_run(tmp_path)
    follower = RunFollower(run)
    first = follower.poll()
    assert first.state == "running" and first.events == [] and first.log_lines == []
    first, second = step_events()[:2]
    append_events(run, [first])
    line = json.dumps(second) + "\n"
    with open(run.events_path, "a") as handle:
        handle.write(line[:20])  # a writer caught mid-line
    run.log_path.write_text("loading\n 10%|#  \r 50%|#####  \r100%|##########\npartial")
    update = follower.poll()
    assert [e.step for e in update.events] == [10]
    assert update.log_lines == ["loading", "100%|##########"]
    assert update.status is None  # unchanged status is not resent
    with open(run.events_path, "a") as handle:
        handle.write(line[20:])
    with open(run.log_path, "a") as handle:
        handle.write(" line\n")
    update = follower.poll()
    assert [e.step for e in update.events] == [20] and update.log_lines == ["partial line"]


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
    recorded = parse_events(events_upto(100))
    nan = NanEvent(t=T0 + 200, step=101, reason="loss is nan", loss=float("nan"), suggestion="lower the LR")
    tracker.add([*recorded, nan])
    probe = next(e for e in recorded if isinstance(e, ProbeEvent))
    assert (tracker.step, tracker.max_steps, tracker.estimated_cost_usd) == (100, 238, probe.estimated_cost_usd)
    assert tracker.train_loss == [(e.step, e.loss) for e in recorded if isinstance(e, StepEvent)]
    assert [step for step, _ in tracker.eval_loss] == [100]
    assert tracker.notice is nan and tracker.events_seen == len(recorded) + 1


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
    assert rows["done"].state == "finished" and rows["done"].step == 238
    assert rows["done"].last_loss == last_step_event(fixed.run).loss
    assert rows["done"].age_s == pytest.approx(T0 + 500 - fixed.run.run_status().heartbeat)


def test_per_column_keeps_one_point_per_pixel():
    assert _per_column([(0, 10), (0, 20), (1, 5), (3, 7), (3, 9)]) == [(0, 15), (1, 5), (3, 8)]


def test_event_notices():
    assert format_event(parse_event(step_events()[0])) is None
    limit = LimitEvent(step=17, limit="max_cost", value=5.0, spend_usd=5.01)
    assert format_event(limit) == "■ limit reached at step 17: max_cost $5.00 (spent $5.01): saving and stopping"


def test_samples_file_and_match(tmp_path):
    samples = load_samples(write_fixed_run(tmp_path).run.samples_path)
    assert len(samples.examples) == 8 and ("format_match", 0.0, 1.0) in samples.scores
    assert [sample_match(r) for r in samples.examples] == ["✗"] * 8  # right format, wrong dates
    assert sample_match(SampleRow(prompt="p", reference="2021-03-03", before="x", after=" 2021-03-03")) == "✓"
    assert sample_match(SampleRow(prompt="p")) == ""
    assert load_samples(tmp_path / "missing.json").examples == []
    (tmp_path / "list.json").write_text(json.dumps([{"prompt": "p"}]))
    assert load_samples(tmp_path / "list.json").examples == []


def test_follower_judges_a_stale_heartbeat_by_its_clock_and_the_pid_by_its_command_line(tmp_path):
    """A live pid that is not an engine (a recycled pid: here pytest's own) with a heartbeat
    older than the clock allows is a crashed run; an engine process with one is stalled (hung)."""
    recycled = make_run(tmp_path, "recycled", pid=os.getpid(), heartbeat=T0)
    assert RunFollower(recycled, clock=lambda: T0 + 10).poll().state == "running"
    assert RunFollower(recycled, clock=lambda: T0 + 500).poll().state == "crashed"
    engine = make_run(tmp_path, "engine", heartbeat=T0)  # the shared engine stand-in
    assert RunFollower(engine, clock=lambda: T0 + 10).poll().state == "running"
    assert RunFollower(engine, clock=lambda: T0 + 500).poll().state == "stalled"


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
    append_events(run, events_upto(0))  # the started event says what it detected
    assert run_data_format(run, config) == "prompt_completion"
    assert run_data_format(run, {**config, "data": {"format": "chat"}}) == "chat"
    plain = usage_snippets(run, config, "Date: 1 May 2000\nISO:", "prompt_completion")["load"]
    assert "apply_chat_template" not in plain and 'tokenizer("Date: 1 May 2000\\nISO:", return_tensors="pt")' in plain
    chat = usage_snippets(run, {**config, "data": {"format": "chat"}}, "Hi", "chat")["load"]
    adapter = str(run.adapter_dir.resolve())
    assert "apply_chat_template" in chat and f'AutoTokenizer.from_pretrained("{adapter}")' in chat


def test_download_line_says_files_bytes_speed_and_time_left():
    from ftwiz.core.events import DownloadEvent
    from ftwiz.core.monitor import RunTracker, download_text

    gib = 1024**3
    event = DownloadEvent(model="meta-llama/Llama-3.1-8B", files_done=3, files_total=5, bytes_done=int(4.1 * gib),
                          bytes_total=int(16.1 * gib), bytes_per_s=210e6, eta_s=61.0, done=False)
    assert download_text(event) == "Downloading meta-llama/Llama-3.1-8B: 3/5 files, 4.1 of 16.1 GiB, 210 MB/s, ~1 min left"
    unmeasured = dataclasses.replace(event, bytes_per_s=None, eta_s=None, bytes_total=None)
    assert download_text(unmeasured) == "Downloading meta-llama/Llama-3.1-8B: 3/5 files, 4.1 GiB, measuring the speed"
    done = dataclasses.replace(event, files_done=5, bytes_done=int(16.1 * gib), bytes_per_s=180e6, eta_s=0.0, done=True)
    assert download_text(done) == "Downloaded meta-llama/Llama-3.1-8B: 5 files, 16.1 GiB at 180 MB/s"
    tracker = RunTracker()
    tracker.add([event])
    assert tracker.downloading
    tracker.add([done])
    assert not tracker.downloading and tracker.download == done
