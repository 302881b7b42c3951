"""The whole demo path through the real engine, driven by the keyboard alone at 80x24:
first screen -> review -> a detached training run -> quit while it trains -> a new app
reattaches to the same run -> it finishes -> the results screen shows the before/after samples."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from textual.widgets import DataTable

from snapshot_apps import CPU_ONLY, fixed_app, settle
from ftwiz.core.runs import list_runs

pytestmark = pytest.mark.slow


async def _until(pilot, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (screen: {type(pilot.app.screen).__name__})")
        await asyncio.sleep(0.2)
        await pilot.pause()


def _screen(app) -> str:
    return type(app.screen).__name__


async def test_demo_from_first_screen_to_samples_with_a_reattach_in_between(tmp_path, monkeypatch):
    monkeypatch.setenv("FTWIZ_CACHE", str(tmp_path / "cache"))
    runs_dir = tmp_path / "runs"

    app = fixed_app(runs_dir, CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert _screen(app) == "WelcomeScreen"
        await pilot.press("d")  # the built-in demo: model and data chosen, straight to review
        await _until(pilot, lambda: _screen(app) == "ReviewScreen", 30, "review")
        await pilot.press("ctrl+n")  # start training
        await _until(pilot, lambda: _screen(app) == "TrainScreen", 120, "the dashboard")
        run = app.screen.run_dir
        await _until(pilot, lambda: run.read_status().get("step", 0) >= 1, 120, "the first step")
        # Quitting the app leaves the run going.
    assert run.state() == "running", run.read_status()
    assert [r.path for r in list_runs(runs_dir)] == [run.path]

    app = fixed_app(runs_dir, CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await _until(pilot, lambda: _screen(app) == "RunsScreen", 30, "the list of runs")
        table = app.screen.query_one(DataTable)
        await _until(pilot, lambda: table.row_count == 1, 10, "the run in the list")
        await pilot.press("enter")
        await _until(pilot, lambda: _screen(app) == "TrainScreen", 10, "the dashboard of the same run")
        assert app.screen.run_dir.path == run.path
        await _until(pilot, lambda: run.state() == "finished", 240, "the run to finish")
        await pilot.pause(1.0)
        await pilot.press("d")
        await _until(pilot, lambda: _screen(app) == "DoneScreen", 20, "the results")
        await pilot.pause()
        adapter = str(app.screen.query_one("#done-adapter").content)
        assert str(run.adapter_dir.resolve()) in adapter
        samples = app.screen.query_one("#done-samples", DataTable)
        assert samples.row_count >= 1  # the held-out prompts, before and after
        score = str(app.screen.query_one("#done-score").content)  # e.g. "format_match: 0% → 100%"
        before, after = (int(x) for x in re.search(r"format_match: (\d+)% → (\d+)%", score).groups())
        assert before <= 10 and after >= 80, score
