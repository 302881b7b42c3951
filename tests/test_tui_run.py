"""Pilot tests of the run side: dashboard following a run, stop, reattach, responsiveness, done."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time

import pytest
from textual import events
from textual.containers import Vertical
from textual.widgets import DataTable, ProgressBar, Static

from ftwiz.core import demo
from ftwiz.core.engine.results import merge_command
from ftwiz.core.events import ErrorEvent, OomEvent
from ftwiz.core.hardware import GpuSample
from ftwiz.core.runs import RunDir
from ftwiz.screens.done import DoneScreen
from ftwiz.screens.runs import RunsScreen
from ftwiz.screens.train import ConfirmForceStop, TrainScreen
from ftwiz.tui.widgets.loss_chart import LossChart
from ftwiz.tui.widgets.run_log import RunLog
from helpers_runs import (
    FAST,
    T0,
    HostApp,
    RunReplayer,
    append_events,
    dead_pid,
    events_upto,
    make_run,
    recorded_events,
    recorded_log,
    recorded_samples,
    sleeping_process,
    step_events,
    wait_for,
    write_fixed_run,
)


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def log_text(screen) -> str:
    return "\n".join(screen.query_one(RunLog).lines)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_dashboard_follows_a_run_as_it_writes(tmp_path, size):
    run = make_run(tmp_path)  # as the recorded run started: no events, max_steps -1 (epochs)
    writer = RunReplayer(run, delay_s=0.01)
    screen = TrainScreen(run, **FAST)
    app = HostApp(screen)
    steps = step_events()
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: screen.state == "running")
        assert "step 0/? · ETA --" in text_of(screen, "#run-progress-line")  # not a full bar at -1
        assert screen.query_one(ProgressBar).total is None
        assert text_of(screen, "#run-quit-hint") == (
            "Quitting leaves the run going; come back: `ftwiz` or `ftwiz attach demo-lora`")
        assert "Getting ready" in text_of(screen, "#run-notice")  # no step yet
        writer.start()
        await wait_for(pilot, lambda: screen.state == "finished" and screen.tracker.finished)
        writer.join()
        await wait_for(pilot, lambda: "step 238/238" in text_of(screen, "#run-progress-line"))
        bar = screen.query_one(ProgressBar)
        assert (bar.progress, bar.total) == (238, 238)
        line = text_of(screen, "#run-progress-line")
        assert f"epoch {steps[-1]['epoch']:.2f}" in line and f"{steps[-1]['tokens_per_s']:,.0f} tok/s" in line
        # The estimate is the probe's (status.json probe.estimated_cost_usd), as on a real run.
        assert (f"spent ${steps[-1]['spend_usd']:,.2f} · plan $0.01 · budget $5.00"
                in text_of(screen, "#run-progress-spend"))
        chart = screen.query_one(LossChart)
        assert len(chart.train) == len(steps) and [x for x, _ in chart.eval] == [100, 200, 238]
        assert chart.train[-1][1] == steps[-1]["loss"]
        drawn = str(chart.render())
        assert any("\u2800" < ch <= "\u28ff" for ch in drawn)  # braille dots drawn
        assert "● eval" in drawn and drawn.count("●") >= 3  # eval: its own marker, legend + points
        log = log_text(screen)
        assert recorded_log()[-1] in log
        assert "⚠ warning: the tokenizer has no chat template" in log
        assert "✓ checkpoint saved at step 100: checkpoints/checkpoint-100" in log
        assert "✓ run finished at step 238" in log
        assert "Run finished. Press d" in text_of(screen, "#run-notice")
        assert "`ftwiz attach demo-lora` reopens it" in text_of(screen, "#run-quit-hint")  # ended
        await pilot.press("d")
        assert isinstance(app.screen, DoneScreen)


async def test_warning_events_show_in_status_line_and_log(tmp_path):
    run = make_run(tmp_path)
    oom = OomEvent(t=T0 + 130, step=25, attempt=1, max_attempts=3, micro_batch_old=16, micro_batch_new=8,
                   grad_accum_old=1, grad_accum_new=2, resume_from="checkpoints/checkpoint-20",
                   message="CUDA out of memory. Tried to allocate 2.00 GiB")
    append_events(run, [*events_upto(20), oom])
    screen = TrainScreen(run, **FAST)
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "oom" in text_of(screen, "#run-notice"))
        assert "oom: CUDA out of memory. Tried to allocate 2.00 GiB (micro-batch now 8)" in text_of(screen, "#run-notice")
        assert "-warning" in screen.query_one("#run-notice").classes
        assert ("⚠ out of GPU memory at step 25: CUDA out of memory. Tried to allocate 2.00 GiB (micro-batch now 8)"
                in log_text(screen))
        append_events(run, [ErrorEvent(t=T0 + 131, message="dataset vanished", suggestion=None)])
        run.write_status(state="failed", exit_code=1)
        await wait_for(pilot, lambda: screen.state == "failed")
        await pilot.pause()
        notice = text_of(screen, "#run-notice")
        assert "Run failed: dataset vanished" in notice and "ftwiz resume demo-lora" in notice


class ScriptedSampler:
    """Stands in for core.hardware.GpuSampler: 30 s pass per sample, at the utilization set."""

    def __init__(self, utilization: float):
        self.utilization = utilization
        self.calls = 0

    def sample(self):
        self.calls += 1
        return [GpuSample(0, T0 + 30.0 * self.calls, 40 * 1024**3, 80 * 1024**3, self.utilization, 61.0, 305.0)]


async def test_vram_pane_and_idle_gpu_banner(tmp_path):
    run = make_run(tmp_path)
    sampler = ScriptedSampler(utilization=0)
    screen = TrainScreen(run, gpu_sampler=sampler, poll_interval_s=0.02, sample_interval_s=0.05,
                         idle_after_s=60)
    async with HostApp(screen).run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: screen.query_one("#run-banner").has_class("-visible"))
        banner = text_of(screen, "#run-banner")
        assert "while holding 40.0 GiB: the run may be stuck" in banner
        assert sampler.calls >= 3  # not before 60 s (two 30 s steps) of idling
        panel = screen.query_one("#gpu-panel-0")
        assert "GPU 0  40.0/80.0 GiB 50%" in str(panel.memory.render())
        assert "util 0%  61°C  305 W" in str(panel.health.render())
        sampler.utilization = 95
        await wait_for(pilot, lambda: not screen.query_one("#run-banner").has_class("-visible"))
        assert len(panel.history) >= 3


async def test_cpu_run_shows_process_ram_history_and_machine_ram(tmp_path):
    """Without a GPU the memory pane follows the pid in status.json: its RSS with a history
    sparkline, and the machine's RAM used/total."""
    import psutil
    from textual.widgets import Sparkline

    from ftwiz.tui.widgets.vram import VramPane

    process = sleeping_process()
    try:
        run = make_run(tmp_path, pid=process.pid)
        screen = TrainScreen(run, **FAST)
        async with HostApp(screen).run_test(size=(80, 24)) as pilot:
            pane = screen.query_one(VramPane)
            await wait_for(pilot, lambda: len(pane.rss_history) >= 3)
            rss_mib = psutil.Process(process.pid).memory_info().rss / 1024**2
            assert pane.rss_history[-1] == pytest.approx(rss_mib, rel=0.2)
            assert text_of(screen, "#vram-cpu-line").startswith("CPU run: process RAM ")
            assert list(screen.query_one("#vram-cpu", Vertical).query_one(Sparkline).data) == list(pane.rss_history)
            total_gib = f"{psutil.virtual_memory().total / 1024**3:.1f}"
            assert f"/{total_gib} GiB" in text_of(screen, "#vram-ram-line")
            assert text_of(screen, "#vram-ram-line").startswith("machine RAM ")
            process.kill()
            process.wait()
            await wait_for(pilot, lambda: "CPU run ended · peak " in text_of(screen, "#vram-cpu-line"))
    finally:
        process.kill()
        process.wait()


async def test_stop_is_graceful_first_then_forced_after_confirmation(tmp_path):
    process = sleeping_process(ignore_sigterm=True)
    try:
        run = make_run(tmp_path, pid=process.pid)
        screen = TrainScreen(run, **FAST)
        app = HostApp(screen)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: screen.state == "running")
            await pilot.press("s")
            # The request is an event; status.json stays the run's to write (it says "stopping").
            assert [e["type"] for e in run.iter_events()][-1] == "stop_requested"
            assert process.poll() is None  # SIGTERM asks; the run decides when to exit
            await pilot.press("s")
            assert isinstance(app.screen, ConfirmForceStop)
            await pilot.press("n")
            assert process.poll() is None and app.screen is screen
            await pilot.press("s")
            await pilot.press("y")
            assert process.wait(timeout=10) == -signal.SIGKILL
            assert run.read_status()["state"] == "killed"
            await wait_for(pilot, lambda: screen.state == "killed")
    finally:
        process.kill()
        process.wait()


async def test_reattach_lists_live_and_crashed_runs_and_opens_the_dashboard(tmp_path):
    process = sleeping_process()
    try:
        fifth = step_events()[4]
        now = fifth["t"] + 5
        make_run(tmp_path, "live-run", pid=process.pid, upto_step=fifth["step"], heartbeat=fifth["t"])
        make_run(tmp_path, "stale-run", pid=dead_pid(), upto_step=70, heartbeat=T0 - 4000)
        write_fixed_run(tmp_path, "done-run")
        screen = RunsScreen(tmp_path, clock=lambda: now, train_screen_options={**FAST, "clock": lambda: now})
        app = HostApp(screen)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: len(screen.rows) == 3)
            table = screen.query_one(DataTable)
            cells = {key.value: table.get_row(key) for key in table.rows}
            assert cells["live-run"][1:4] == ["running", "50/238", f"{fifth['loss']:.4f}"]
            assert cells["stale-run"][1] == "crashed (process gone)"
            assert cells["done-run"][1:3] == ["finished", "238/238"]
            table.move_cursor(row=table.get_row_index("live-run"))
            await pilot.press("enter")
            assert isinstance(app.screen, TrainScreen)
            dashboard = app.screen
            await wait_for(pilot, lambda: "step 50/238" in text_of(dashboard, "#run-progress-line"))
            assert "running" in text_of(dashboard, "#run-title")
            await pilot.press("escape")
            assert app.screen is screen
            table.move_cursor(row=table.get_row_index("done-run"))
            await pilot.press("enter")
            assert isinstance(app.screen, DoneScreen)
    finally:
        process.kill()
        process.wait()


async def test_ui_stays_responsive_while_events_stream_in(tmp_path, monkeypatch):
    """Key presses are handled while the watcher is delivering a flood of events, and no run
    file is ever read on the event loop's thread."""
    readers: set[str] = set()
    original = RunDir.read_events

    def recording_read_events(self, offset=0):
        readers.add(threading.current_thread().name)
        return original(self, offset)

    monkeypatch.setattr(RunDir, "read_events", recording_read_events)
    run = make_run(tmp_path)
    writer = RunReplayer(run, delay_s=0.003, repeat=200, log_lines_per_event=5)
    screen = TrainScreen(run, **{**FAST, "poll_interval_s": 0.05, "refresh_interval_s": 0.25})
    app = HostApp(screen)
    latencies = []
    async with app.run_test(size=(80, 24)) as pilot:
        writer.start()
        await wait_for(pilot, lambda: screen.tracker.events_seen > 0)
        presses = 30
        for count in range(1, presses + 1):
            # Straight to the driver: pilot.press waits for the whole process to go idle,
            # which a busy writer thread in this process never lets happen.
            sent = time.monotonic()
            app._driver.send_message(events.Key("x", "x"))
            while len(app.presses) < count:
                await asyncio.sleep(0.002)
            latencies.append(time.monotonic() - sent)
            await asyncio.sleep(0.02)
        still_writing = writer.is_alive()
        writer.stop_event.set()
        writer.join()
        assert len(screen.query_one(RunLog).lines) <= 2000
    assert len(app.presses) == presses
    assert app.presses == sorted(app.presses)
    assert app.presses[-1] > app.presses[0], "no events reached the UI between key presses"
    assert still_writing, "the writer finished before the presses: the test proved nothing"
    assert readers and threading.main_thread().name not in readers
    assert sorted(latencies)[presses // 2] < 0.5, latencies  # median; generous for a shared CI box


async def test_done_screen_shows_samples_scores_and_code_with_real_paths(tmp_path):
    fixed = write_fixed_run(tmp_path)
    run = fixed.run
    screen = DoneScreen(run)
    async with HostApp(screen).run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        adapter = str(run.adapter_dir.resolve())
        assert text_of(screen, "#done-adapter") == f"Adapter: {adapter}"
        assert "format_match: 0% → 100%" in text_of(screen, "#done-score")
        assert "What the demo teaches" in text_of(screen, "#done-lesson")  # a demo run: its lesson, not a metric line
        table = screen.query_one("#done-samples", DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        # A demo run grades the ISO format it teaches (the recorded run's fine-tuned answers).
        examples = recorded_samples()["examples"]
        assert len(rows) == 8 and [row[4] for row in rows] == [demo.row_verdict(e) for e in examples[:8]]
        assert rows[0][:4] == ["Date: 18 April 1951…", examples[0]["before"], examples[0]["after"], examples[0]["reference"]]
        code = text_of(screen, "#done-code-load")
        assert f'PeftModel.from_pretrained(base, "{adapter}")' in code
        assert 'AutoModelForCausalLM.from_pretrained("ftwiz-demo-tiny", dtype="auto")' in code
        commands = text_of(screen, "#done-code-commands")
        assert f"ftwiz sample {run.path.resolve()} --prompt" in commands
        assert f"ftwiz merge {run.path.resolve()}" in commands
        assert f'from_pretrained("{run.merged_dir.resolve()}"' in text_of(screen, "#done-code-merged")


async def test_merge_runs_in_a_worker_and_reports(tmp_path):
    run = write_fixed_run(tmp_path).run
    assert merge_command(run) == [sys.executable, "-m", "ftwiz.cli", "merge", str(run.path.resolve())]
    gate = tmp_path / "go"
    fake_merge = [sys.executable, "-c",
                  "import pathlib, sys, time\n"
                  "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.02)\n"
                  "p = pathlib.Path(sys.argv[1]); p.mkdir(); (p / 'config.json').write_text('{}')\n"
                  "print('merged into', p)",
                  str(run.merged_dir), str(gate)]
    screen = DoneScreen(run, merge_argv=fake_merge)
    app = HostApp(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("m")
        assert screen.merging and "Merging" in text_of(screen, "#done-merge-status")
        await pilot.press("x")  # the UI answers while the merge runs
        assert app.presses == [-1] and screen.merging
        gate.touch()
        await wait_for(pilot, lambda: not screen.merging)
        assert text_of(screen, "#done-merged") == f"Merged model: {run.merged_dir.resolve()}"
        assert "merged into" in text_of(screen, "#done-merge-status")


async def test_failed_merge_is_reported(tmp_path):
    run = write_fixed_run(tmp_path).run
    screen = DoneScreen(run, merge_argv=[sys.executable, "-c", "import sys; sys.exit('no adapter here')"])
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await pilot.press("m")
        await wait_for(pilot, lambda: not screen.merging)
        assert "Merge failed: no adapter here" in text_of(screen, "#done-merge-status")
        assert not (run.merged_dir / "config.json").exists()


def test_replayer_leaves_the_recorded_run(tmp_path):
    run = make_run(tmp_path)
    writer = RunReplayer(run, delay_s=0)
    writer.start()
    writer.join(timeout=10)
    assert list(run.iter_events()) == recorded_events()
    status = run.read_status()
    assert status["state"] == "finished" and status["max_steps"] == 238 and status["probe"]["estimated_cost_usd"]
    assert run.log_path.read_text().splitlines() == recorded_log()


async def test_a_stalled_run_says_so_and_can_still_be_stopped(tmp_path):
    run = make_run(tmp_path, heartbeat=T0)  # the engine stand-in lives; its heartbeat is old
    screen = TrainScreen(run, **FAST, clock=lambda: T0 + 500)
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: screen.state == "stalled")
        await wait_for(pilot, lambda: "Run stalled" in text_of(screen, "#run-notice"))
        assert screen.check_action("stop", ()) is True
