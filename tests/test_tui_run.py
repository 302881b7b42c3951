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

from ftwiz.core.engine.results import merge_command
from ftwiz.core.hardware import GpuSample
from ftwiz.core.runs import RunDir
from ftwiz.screens.done import DoneScreen
from ftwiz.screens.runs import RunsScreen
from ftwiz.screens.train import ConfirmForceStop, TrainScreen
from ftwiz.tui.widgets.loss_chart import LossChart
from ftwiz.tui.widgets.run_log import RunLog
from helpers_runs import (
    T0,
    FakeRunWriter,
    HostApp,
    append_events,
    dead_pid,
    make_run,
    sleeping_process,
    step_event,
    wait_for,
    write_fixed_run,
)

FAST = {"gpu_sampler": None, "poll_interval_s": 0.02, "sample_interval_s": 0.05, "refresh_interval_s": 0.05}


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def log_text(screen) -> str:
    return "\n".join(screen.query_one(RunLog).lines)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_dashboard_follows_a_run_as_it_writes(tmp_path, size):
    run = make_run(tmp_path, max_steps=20)
    writer = FakeRunWriter(run, steps=20, delay_s=0.01, eval_every=10)
    screen = TrainScreen(run, **FAST)
    app = HostApp(screen)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: screen.state == "running")
        assert "step 0/20 · ETA --" in text_of(screen, "#run-progress-line")
        assert text_of(screen, "#run-quit-hint") == (
            "Quitting leaves the run going; come back: `ftwiz` or `ftwiz attach demo-lora`")
        assert "Getting ready" in text_of(screen, "#run-notice")  # no step yet
        writer.start()
        await wait_for(pilot, lambda: screen.state == "finished" and screen.tracker.finished)
        writer.join()
        await wait_for(pilot, lambda: "step 20/20" in text_of(screen, "#run-progress-line"))
        bar = screen.query_one(ProgressBar)
        assert (bar.progress, bar.total) == (20, 20)
        line = text_of(screen, "#run-progress-line")
        assert "step 20/20" in line and "epoch 1.00" in line and "1,234 tok/s" in line
        assert "spent $0.20 · plan $0.50 · budget $5.00" in text_of(screen, "#run-progress-spend")
        chart = screen.query_one(LossChart)
        assert len(chart.train) == 20 and [x for x, _ in chart.eval] == [10, 20]
        assert chart.train[-1][1] == step_event(20, 20, 0)["loss"]
        drawn = str(chart.render())
        assert any("\u2800" < ch <= "\u28ff" for ch in drawn)  # braille dots drawn
        assert "● eval" in drawn and drawn.count("●") >= 3  # eval: its own marker, legend + 2 points
        log = log_text(screen)
        assert "step 20/20 line 0" in log
        assert "⚠ warning at step 10: grad norm spiked" in log
        assert "✓ run finished at step 20" in log
        assert "Run finished. Press d" in text_of(screen, "#run-notice")
        assert "`ftwiz attach demo-lora` reopens it" in text_of(screen, "#run-quit-hint")  # ended
        await pilot.press("d")
        assert isinstance(app.screen, DoneScreen)


async def test_warning_events_show_in_status_line_and_log(tmp_path):
    run = make_run(tmp_path)
    append_events(run, [
        {"t": T0, "type": "started", "max_steps": 40},
        step_event(3, 40, T0 + 9),
        {"t": T0 + 10, "type": "oom", "step": 3, "message": "CUDA out of memory; retrying",
         "per_device_train_batch_size": 2},
    ])
    screen = TrainScreen(run, **FAST)
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "oom" in text_of(screen, "#run-notice"))
        assert "oom: CUDA out of memory; retrying" in text_of(screen, "#run-notice")
        assert "-warning" in screen.query_one("#run-notice").classes
        assert "⚠ out of GPU memory at step 3: CUDA out of memory; retrying (micro-batch now 2)" in log_text(screen)
        append_events(run, [{"t": T0 + 11, "type": "error", "message": "dataset vanished"}])
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
            assert run.read_status()["state"] == "stopping"
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
        live = make_run(tmp_path, "live-run", pid=process.pid, step=5, heartbeat=T0 + 55)
        append_events(live, [{"t": T0, "type": "started", "max_steps": 40},
                             *(step_event(s, 40, T0 + 3 * s) for s in range(1, 6))])
        make_run(tmp_path, "stale-run", pid=dead_pid(), step=7, heartbeat=T0 - 4000)
        write_fixed_run(tmp_path, "done-run")
        screen = RunsScreen(tmp_path, clock=lambda: T0 + 60,
                            train_screen_options={**FAST, "clock": lambda: T0 + 60})
        app = HostApp(screen)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: len(screen.rows) == 3)
            table = screen.query_one(DataTable)
            cells = {key.value: table.get_row(key) for key in table.rows}
            assert cells["live-run"][1:4] == ["running", "5/40", f"{step_event(5, 40, 0)['loss']:.4f}"]
            assert cells["stale-run"][1] == "crashed (process gone)"
            assert cells["done-run"][1:3] == ["finished", "40/40"]
            table.move_cursor(row=table.get_row_index("live-run"))
            await pilot.press("enter")
            assert isinstance(app.screen, TrainScreen)
            dashboard = app.screen
            await wait_for(pilot, lambda: "step 5/40" in text_of(dashboard, "#run-progress-line"))
            assert "step 5/40" in text_of(dashboard, "#run-progress-line")
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
    writer = FakeRunWriter(run, steps=5000, delay_s=0.003, eval_every=50, lines_per_step=5)
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
        assert "format_match: 0% → 88%" in text_of(screen, "#done-score")
        table = screen.query_one("#done-samples", DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        # A demo run grades the ISO format it teaches: the third answer is a wrong date, well formed.
        assert [row[4] for row in rows] == ["✓", "✓", "✓"]
        assert rows[1][:4] == ["Date of the launch:…", "january seven", "2019-01-07", "2019-01-07"]
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


def test_fake_writer_leaves_a_consistent_run(tmp_path):
    run = make_run(tmp_path)
    writer = FakeRunWriter(run, steps=5, delay_s=0)
    writer.start()
    writer.join(timeout=10)
    types = [e["type"] for e in run.iter_events()]
    assert types[0] == "started" and types[-1] == "finished" and types.count("step") == 5
    assert run.read_status()["state"] == "finished"
    assert time.time() > T0


async def test_a_stalled_run_says_so_and_can_still_be_stopped(tmp_path):
    run = make_run(tmp_path, heartbeat=T0)  # the engine stand-in lives; its heartbeat is old
    screen = TrainScreen(run, **FAST, clock=lambda: T0 + 500)
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: screen.state == "stalled")
        await wait_for(pilot, lambda: "Run stalled" in text_of(screen, "#run-notice"))
        assert screen.check_action("stop", ()) is True
