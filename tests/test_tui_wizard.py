"""The wizard driven by Textual's Pilot: keyboard alone, recorded hardware, fixed clock."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from textual.widgets import Button, DataTable, Input, OptionList, Static

from snapshot_apps import CPU_ONLY, H200, fixed_app
from ftwiz.tui.app import make_app



async def settle(pilot) -> None:
    """Let workers finish and their messages land."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def screen_name(app) -> str:
    return type(app.screen).__name__


def test_importing_the_app_does_not_import_torch():
    code = (
        "import sys, ftwiz.tui.app, ftwiz.screens.welcome, ftwiz.screens.model, ftwiz.screens.review, "
        "ftwiz.screens.help\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_first_screen_mounts_fast(tmp_path):
    started = time.perf_counter()
    app = fixed_app(tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert screen_name(app) == "WelcomeScreen"
        assert time.perf_counter() - started < 1.0


async def test_welcome_shows_recorded_gpu_and_what_it_can_train(tmp_path):
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        gpus = app.screen.query_one("#gpus", DataTable)
        assert gpus.row_count == 1
        assert gpus.get_row_at(0)[1] == "NVIDIA H200"
        host = str(app.screen.query_one("#host", Static).content)
        assert "16 cores" in host and "128.0 GiB" in host


async def test_without_gpu_welcome_says_so_and_offers_the_demo(tmp_path):
    app = fixed_app(tmp_path / "runs", CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "No NVIDIA GPU found" in str(app.screen.query_one("#hw-status", Static).content)
        assert not app.screen.query_one("#gpus", DataTable).display
        await pilot.press("d")
        await settle(pilot)
        assert screen_name(app) == "ReviewScreen"
        assert app.state.demo and app.state.config.data.path == "demo"
        assert "data:" in str(app.screen.query_one("#yaml", Static).content.code)


async def test_help_opens_with_f1_and_question_mark(tmp_path):
    app = fixed_app(tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for key in ("f1", "question_mark"):
            await pilot.press(key)
            await pilot.pause()
            assert screen_name(app) == "HelpScreen"
            await pilot.press("escape")
            await pilot.pause()
            assert screen_name(app) == "WelcomeScreen"


async def test_review_saves_and_never_overwrites_without_confirmation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = fixed_app(tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("d")
        await settle(pilot)
        path = tmp_path / "demo.yaml"
        assert app.screen.query_one("#save-path", Input).value == "demo.yaml"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "data:" in path.read_text()
        path.write_text("mine\n")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert screen_name(app) == "ConfirmScreen"
        await pilot.press("n")
        await pilot.pause()
        assert path.read_text() == "mine\n"
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert "data:" in path.read_text()


async def test_model_step_searches_the_catalog_and_shows_the_model(tmp_path):
    app = fixed_app(tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        app.goto_step("model")
        await pilot.pause()
        await pilot.press(*"qwen2.5 7b")
        catalog = app.screen.query_one("#catalog", OptionList)
        assert [catalog.get_option_at_index(i).id for i in range(catalog.option_count)] == ["qwen2.5-7b"]
        await pilot.press("enter")
        await settle(pilot)
        assert app.state.model_spec == "qwen2.5-7b"
        summary = str(app.screen.query_one("#model-summary", Static).content)
        assert "7.62B parameters" in summary and "Qwen2ForCausalLM" in summary
        assert "q_proj, v_proj" in str(app.screen.query_one("#model-targets", Static).content)


async def test_a_failed_worker_becomes_a_visible_notice(tmp_path):
    class BrokenBackend:
        state, message = "ok", "broken"

        def open(self):
            raise RuntimeError("NVML exploded")

        def close(self):
            pass

    app = make_app(runs_dir=tmp_path / "runs", hardware_backend=BrokenBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        messages = [n.message for n in app._notifications]
        assert any("NVML exploded" in m and "Detecting GPUs" in m for m in messages), messages


async def test_command_palette_jumps_to_a_step(tmp_path):
    app = fixed_app(tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"step 3")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert screen_name(app) == "ModelScreen"
