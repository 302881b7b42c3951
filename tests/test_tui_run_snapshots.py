"""Snapshots of the dashboard, done and runs screens at 80x24 and 120x40, from the recorded
demo run (tests/fixtures/demo_run, moved onto a fixed clock) and a fixed clock. Review changes with `pytest --snapshot-update` and the report.

Done and runs screens print absolute paths, so their fixtures live at one fixed path; the
files are written atomically with identical bytes, so concurrent test runs cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ftwiz.screens.done import DoneScreen
from ftwiz.screens.runs import RunsScreen
from ftwiz.screens.train import TrainScreen
from helpers_runs import T0, HostApp, shared_engine_pid, write_fixed_run

SNAPSHOT_ROOT = Path("/tmp/ftwiz-snapshot-runs")
SIZES = [(80, 24), (120, 40)]


@dataclass
class Sample:
    index: int
    t: float
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_pct: float
    temperature_c: float
    power_w: float


class FixedSampler:
    """Two GPUs as an H200 box reports them mid-run."""

    def __init__(self) -> None:
        self.calls = 0

    def sample(self):
        self.calls += 1
        return [Sample(0, T0 + 60, 71 * 1024**3, 143 * 1024**3, 97.0, 64.0, 512.0),
                Sample(1, T0 + 60, 2 * 1024**3, 143 * 1024**3, 0.0, 31.0, 75.0)]


async def _settle(pilot, condition) -> None:
    from helpers_runs import wait_for

    await wait_for(pilot, condition)
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES)
def test_train_screen_snapshot(snap_compare, tmp_path, size):
    # A live engine stand-in, the recorded heartbeat at step 120 against a clock 10 s later:
    # running, at any wall time.
    run = write_fixed_run(tmp_path, finished=False, pid=shared_engine_pid(), upto_step=120).run
    now = run.run_status().heartbeat + 10
    sampler = FixedSampler()
    screen = TrainScreen(run, gpu_sampler=sampler, clock=lambda: now, poll_interval_s=0.02,
                         sample_interval_s=3600, refresh_interval_s=0.02)

    async def ready(pilot):
        await _settle(pilot, lambda: screen.tracker.step == 120 and sampler.calls == 1
                      and "step 120/238" in str(screen.query_one("#run-progress-line").render())
                      and screen.query("#gpu-panel-1"))

    assert snap_compare(HostApp(screen), terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_done_screen_snapshot(snap_compare, size):
    run = write_fixed_run(SNAPSHOT_ROOT / "done").run
    screen = DoneScreen(run)

    async def ready(pilot):
        await _settle(pilot, lambda: screen.query("#done-samples"))

    assert snap_compare(HostApp(screen), terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_runs_screen_snapshot(snap_compare, size):
    root = SNAPSHOT_ROOT / "list"
    write_fixed_run(root, "lora-finished")
    write_fixed_run(root, "qlora-crashed", finished=False, pid=None)  # running, no process
    screen = RunsScreen(root, clock=lambda: T0 + 300)

    async def ready(pilot):
        await _settle(pilot, lambda: len(screen.rows) == 2)

    assert snap_compare(HostApp(screen), terminal_size=size, run_before=ready)
