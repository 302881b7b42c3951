"""Snapshots of every planning screen at 80x24 and 120x40, on recorded hardware and fixed data.

Update with `pytest tests/test_tui_snapshots.py --snapshot-update`, then look at the report.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from snapshot_apps import CPU_ONLY, H200, fixed_app, settle

SIZES = [(80, 24), (120, 40)]


@pytest.fixture(autouse=True)
def fixed_cache(monkeypatch):
    """The demo model's path appears in the config: keep it the same everywhere."""
    monkeypatch.setenv("FTWIZ_CACHE", "/tmp/ftwiz-cache")


def goto(step: str, *, model: str | None = None, data: bool = False, demo: bool = False):
    async def run_before(pilot) -> None:
        from ftwiz.core.models import load_model_info

        await settle(pilot)
        app = pilot.app
        if demo:
            app.state.choose_demo()
            app.state.n_examples = 2000
        if model:
            app.state.model_spec, app.state.model_info = model, load_model_info(model)
        if data:
            app.state.data_spec, app.state.n_examples = "train.jsonl", 5000
        app.goto_step(step)
        await settle(pilot)
        for field in app.screen.query(Input):  # a blinking cursor would make the picture depend on time
            field.cursor_blink = False
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_welcome(snap_compare, tmp_path, size):
    assert snap_compare(fixed_app(tmp_path, H200), terminal_size=size, run_before=goto("welcome"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_welcome_without_gpu(snap_compare, tmp_path, size):
    assert snap_compare(fixed_app(tmp_path, CPU_ONLY), terminal_size=size, run_before=goto("welcome"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_decide(snap_compare, tmp_path, size):
    assert snap_compare(fixed_app(tmp_path, H200), terminal_size=size, run_before=goto("decide"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_model(snap_compare, tmp_path, size):
    assert snap_compare(fixed_app(tmp_path, H200), terminal_size=size, run_before=goto("model", model="llama-3.1-8b"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_data_demo(snap_compare, tmp_path, size):
    assert snap_compare(fixed_app(tmp_path, CPU_ONLY), terminal_size=size, run_before=goto("data", demo=True))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_settings(snap_compare, tmp_path, size):
    assert snap_compare(
        fixed_app(tmp_path, H200), terminal_size=size, run_before=goto("settings", model="llama-3.1-8b", data=True)
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_review_demo(snap_compare, tmp_path, size):
    assert snap_compare(fixed_app(tmp_path, CPU_ONLY), terminal_size=size, run_before=goto("review", demo=True))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare, tmp_path, size):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(fixed_app(tmp_path, H200), terminal_size=size, run_before=run_before)
