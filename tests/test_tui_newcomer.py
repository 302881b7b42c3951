"""Issue 13: the wizard walked by a newcomer, keyboard alone, at 80x24 (one test per defect)."""

from __future__ import annotations

import os
import re
import time

import pytest
from textual.widgets import DataTable, Static

from helpers_runs import FAST
from snapshot_apps import (CPU_ONLY, H200, fixed_app, open_settings_for_8b, screen_name, settle,
                           wait_for_screen, wait_until)
from ftwiz.tui.steps import StepScreen


def fake_run(runs_dir, config, **status):
    """A run directory as the engine leaves it right after starting (this process as its pid)."""
    from ftwiz.core.runs import create_run_dir

    run = create_run_dir(runs_dir, config.name or "run")
    config.save(run.config_path)
    run.write_status(**{"state": "running", "pid": os.getpid(), "step": 0, "max_steps": 200, **status})
    return run


def patch_start_run(monkeypatch, tmp_path):
    import ftwiz.core.demo
    import ftwiz.core.engine.launch

    monkeypatch.setattr(ftwiz.core.engine.launch, "start_run",
                        lambda config, runs_dir, detach=True: fake_run(runs_dir, config))
    monkeypatch.setattr(ftwiz.core.demo, "ensure_demo_model", lambda root=None: tmp_path, raising=False)


# -- defect 1: no blank screen after leaving the dashboard ---------------------------------------

async def test_escape_on_the_dashboard_comes_back_to_review_not_a_blank_screen(tmp_path, monkeypatch):
    patch_start_run(monkeypatch, tmp_path)
    app = fixed_app(tmp_path / "runs", CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await wait_for_screen(pilot, "TrainScreen")
        await pilot.press("escape")
        await wait_for_screen(pilot, "ReviewScreen")
        assert "started" in str(app.screen.query_one("#summary", Static).content)


async def test_escape_on_a_dashboard_alone_shows_a_wizard_step(tmp_path):
    from ftwiz.core.demo import demo_config
    from ftwiz.screens.train import TrainScreen

    run = fake_run(tmp_path / "runs", demo_config())
    app = fixed_app(tmp_path / "other-runs", CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.switch_screen(TrainScreen(run))  # the dashboard as the only screen over the app's own
        await wait_for_screen(pilot, "TrainScreen")
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, StepScreen)


# -- defect 2: hardware detected while the runs list was on top ---------------------------------

async def test_hardware_step_fills_in_when_detection_ends_under_the_runs_list(tmp_path):
    from ftwiz.core.demo import demo_config

    fake_run(tmp_path / "runs", demo_config())
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for_screen(pilot, "RunsScreen")
        await wait_until(pilot, lambda: app.state.hardware is not None, what="hardware detected")
        await pilot.press("escape")
        await wait_for_screen(pilot, "WelcomeScreen")
        await pilot.pause()
        assert "Looking at this machine" not in str(app.screen.query_one("#hw-status", Static).content)
        assert app.screen.query_one("#gpus", DataTable).row_count == 1


# -- defect 3: the demo model on the user's own data keeps that data ------------------------------

async def test_demo_model_with_own_data_trains_on_that_data_at_its_length(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("FTWIZ_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "mine.jsonl"
    rows = [{"instruction": f"Repeat this sentence back to me please, number {i} " * 3, "output": "ok " * 30}
            for i in range(5)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    app = fixed_app(tmp_path / "runs", CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.goto_step("model")
        await pilot.pause()
        await pilot.press(*"demo", "enter")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "DataScreen"
        await pilot.press(*str(path), "enter")
        await settle(pilot)
        assert "ready to train" in str(app.screen.query_one("#data-status", Static).content)
        suggested = app.state.data_stats["suggested_max_length"]
        assert suggested != 64
        await pilot.press("ctrl+n")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "ReviewScreen"
        config = app.state.config
        assert config.data.path == str(path)
        assert config.training.max_length == suggested
        assert str(path) in str(app.screen.query_one("#summary", Static).content)


# -- defect 4: a run whose total is not known yet --------------------------------------------------

def stopped_dashboard(tmp_path):
    """A run stopped at step 3 of 40 (its started and step events) and its dashboard, not yet mounted."""
    from helpers_runs import append_events, make_run, step_event
    from ftwiz.screens.train import TrainScreen

    run = make_run(tmp_path, state="stopped", step=3, max_steps=40)
    append_events(run, [{"v": 1, "t": 1.0, "type": "started", "max_steps": 40}, step_event(3, 40, 10.0)])
    return run, TrainScreen(run, **FAST)


async def test_unknown_total_shows_a_question_mark_and_no_full_bar(tmp_path):
    from textual.widgets import ProgressBar

    from helpers_runs import HostApp, append_events, make_run, wait_for
    from ftwiz.screens.runs import RunsScreen
    from ftwiz.screens.train import TrainScreen

    run = make_run(tmp_path, max_steps=-1)
    append_events(run, [{"v": 1, "t": 1.0, "type": "started", "max_steps": -1}])
    screen = TrainScreen(run, **FAST)
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: screen.state == "running" and screen.tracker.events_seen)
        await pilot.pause(0.1)
        line = str(screen.query_one("#run-progress-line", Static).render())
        assert line.startswith("step 0/? ") and "-1" not in line
        bar = screen.query_one(ProgressBar)
        assert bar.total is None and bar.percentage is None
    runs = RunsScreen(tmp_path, refresh_s=0.05)
    async with HostApp(runs).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: runs.rows)
        table = runs.query_one(DataTable)
        assert table.get_row_at(0)[2] == "0/?"


async def test_a_stopped_run_shows_no_eta(tmp_path):
    from helpers_runs import HostApp, wait_for

    run, screen = stopped_dashboard(tmp_path)
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: screen.state == "stopped" and screen.tracker.step == 3)
        await pilot.pause(0.1)
        line = str(screen.query_one("#run-progress-line", Static).render())
        assert line.startswith("step 3/40") and "ETA" not in line


# -- defect 7: the spend estimate of a run written by the real engine -----------------------------

@pytest.mark.slow
async def test_dashboard_shows_the_probes_cost_estimate_of_a_real_run(tmp_path, tmp_path_factory):
    from helpers_engine import start, tiny_model_dir, wait_state, write_data
    from helpers_runs import HostApp, wait_for
    from ftwiz.screens.train import TrainScreen

    model = tiny_model_dir(tmp_path_factory)
    run = start(model, write_data(tmp_path / "data.jsonl", n=40), tmp_path / "runs", name="priced",
                max_steps=4, save_steps=4, limits={"price_per_hour": 3.6})
    assert wait_state(run, {"finished", "failed", "crashed"}) == "finished", run.log_path.read_text()[-2000:]
    estimate = run.read_status()["probe"]["estimated_cost_usd"]
    assert estimate is not None
    screen = TrainScreen(run, **FAST)
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: screen.state == "finished")
        await pilot.pause(0.2)
        assert f"plan ${estimate:,.2f}" in str(screen.query_one("#run-progress-spend", Static).render())


# -- defect 6: the log follows after a resize; a resume from another shell shows up ---------------

async def test_log_keeps_following_the_tail_after_the_terminal_shrinks(tmp_path):
    from helpers_runs import HostApp, make_run, wait_for
    from ftwiz.screens.train import TrainScreen
    from ftwiz.tui.widgets.run_log import RunLog

    run = make_run(tmp_path, max_steps=40)
    run.log_path.write_text("".join(f"line {i}\n" for i in range(200)))
    screen = TrainScreen(run, **FAST)
    async with HostApp(screen).run_test(size=(120, 40)) as pilot:
        log = screen.query_one(RunLog)
        await wait_for(pilot, lambda: log.line_count >= 200 and log.scroll_y >= log.max_scroll_y > 0)
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.1)
        with open(run.log_path, "a") as handle:
            handle.write("".join(f"later {i}\n" for i in range(5)))
        await wait_for(pilot, lambda: "later 4" in log.lines[-1])
        await pilot.pause(0.1)
        assert log.scroll_y == log.max_scroll_y


async def test_a_dashboard_left_open_follows_a_resume_from_another_shell(tmp_path):
    from helpers_runs import HostApp, append_events, shared_engine_pid, step_event, wait_for, write_json

    run, screen = stopped_dashboard(tmp_path)
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: screen.state == "stopped" and screen.tracker.step == 3)
        await pilot.pause(0.3)  # the follower has read everything of the stopped run
        status = run.read_status()
        status.update(state="running", pid=shared_engine_pid(), heartbeat=time.time())
        write_json(run.status_path, status)  # what `ftwiz resume` leaves, as the new process starts
        append_events(run, [{"v": 1, "t": 20.0, "type": "resumed", "previous_state": "stopped"}, step_event(4, 40, 23.0)])
        await wait_for(pilot, lambda: screen.state == "running" and screen.tracker.step == 4, timeout_s=10)
        assert "running" in str(screen.query_one("#run-title", Static).render())


# -- defect 9: the runs list from every screen; resume, stop, delete from it; `ftwiz rm` ----------

async def test_ctrl_r_opens_the_runs_list_from_any_step_and_esc_comes_back(tmp_path):
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for step in ("welcome", "model", "review"):
            app.goto_step(step)
            await pilot.pause()
            before = screen_name(app)
            await pilot.press("ctrl+r")
            await wait_for_screen(pilot, "RunsScreen")
            await pilot.press("escape")
            await wait_for_screen(pilot, before)


async def test_runs_list_stops_resumes_and_deletes(tmp_path, monkeypatch):
    import ftwiz.core.engine.launch
    from helpers_runs import make_run, sleeping_process, wait_for, write_json

    process = sleeping_process(ignore_sigterm=True)
    runs_dir = tmp_path / "runs"
    try:
        live = make_run(runs_dir, "live", pid=process.pid)
        stopped = make_run(runs_dir, "paused", state="stopped", step=10)
        resumed = []

        def fake_resume(run, detach=True):
            resumed.append(run.name)
            status = run.read_status()
            status.update(state="running", pid=process.pid, heartbeat=time.time())
            write_json(run.status_path, status)
            return run

        monkeypatch.setattr(ftwiz.core.engine.launch, "resume_run", fake_resume)
        app = fixed_app(runs_dir, H200)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for_screen(pilot, "RunsScreen")
            runs = app.screen
            await wait_for(pilot, lambda: len(runs.rows) == 2)
            table = runs.query_one(DataTable)
            # Delete refuses a live run, stop stops it.
            table.move_cursor(row=table.get_row_index("live"))
            await pilot.press("x")
            await pilot.pause()
            assert screen_name(app) == "RunsScreen" and live.path.is_dir()
            await pilot.press("s")
            await pilot.pause()
            # The stop is an event; status.json stays the run's own to write (issue 14).
            assert [e["type"] for e in live.iter_events()][-1] == "stop_requested"
            # Resume a stopped run: the dashboard follows it.
            table.move_cursor(row=table.get_row_index("paused"))
            await pilot.press("r")
            await wait_for_screen(pilot, "TrainScreen")
            assert resumed == ["paused"]
            await pilot.press("escape")
            await wait_for_screen(pilot, "RunsScreen")
            # Delete a run that is not live, after confirming.
            write_json(stopped.status_path, {**stopped.read_status(), "state": "stopped", "pid": None})
            await wait_for(pilot, lambda: runs.rows["paused"].state == "stopped")
            table.move_cursor(row=table.get_row_index("paused"))
            await pilot.press("x")
            await wait_for_screen(pilot, "ConfirmScreen")
            await pilot.press("y")
            await wait_for_screen(pilot, "RunsScreen")
            assert not stopped.path.exists()
            await wait_for(pilot, lambda: "paused" not in runs.rows)
    finally:
        process.kill()
        process.wait()


def test_ftwiz_rm_refuses_a_live_run_and_deletes_an_ended_one(tmp_path, capsys):
    from helpers_runs import make_run
    from ftwiz.cli.main import main

    live = make_run(tmp_path, "live")
    ended = make_run(tmp_path, "ended", state="failed")
    assert main(["--runs-dir", str(tmp_path), "rm", "live", "--yes"]) == 2
    assert "stop it first" in capsys.readouterr().err and live.path.is_dir()
    assert main(["--runs-dir", str(tmp_path), "rm", "ended", "--yes"]) == 0
    assert not ended.path.exists()


# -- defect 5: a run that cannot work does not start ------------------------------------------------

async def _review_for_8b(app, pilot, tmp_path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("".join('{"prompt": "p %d", "completion": "c"}\n' % i for i in range(20)))
    await open_settings_for_8b(pilot, str(data), 20)
    await pilot.press("ctrl+n")
    await settle(pilot)
    assert screen_name(app) == "ReviewScreen"


async def test_review_lists_what_blocks_a_run_on_a_machine_without_gpu_and_refuses_to_start(tmp_path, monkeypatch):
    import ftwiz.core.engine.launch

    started = []
    monkeypatch.setattr(ftwiz.core.engine.launch, "start_run", lambda *a, **k: started.append(a))
    app = fixed_app(tmp_path / "runs", CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await _review_for_8b(app, pilot, tmp_path)
        blockers = str(app.screen.query_one("#blockers", Static).content)
        assert "cannot work here" in blockers and "does not fit" in blockers and "NVIDIA GPU" in blockers
        assert app.screen.query_one("#next").disabled
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert started == [] and screen_name(app) == "ReviewScreen"


async def test_review_says_when_the_model_cannot_be_downloaded(tmp_path, monkeypatch):
    import ftwiz.core.checks

    monkeypatch.setattr(ftwiz.core.checks, "model_available", lambda *a, **k: False)
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await _review_for_8b(app, pilot, tmp_path)
        blockers = str(app.screen.query_one("#blockers", Static).content)
        assert "model not available" in blockers and "hf download" in blockers
        assert app.screen.query_one("#next").disabled


def test_model_available_offline_only_when_local_or_cached(tmp_path):
    from ftwiz.core.checks import model_available

    assert model_available(str(tmp_path))  # a local folder
    assert not model_available("nobody-owns-this/ftwiz-missing-model", reachable=False)
    assert model_available("nobody-owns-this/ftwiz-missing-model", reachable=True)


async def test_demo_review_is_checked_and_can_start(tmp_path):
    app = fixed_app(tmp_path / "runs", CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("d")
        await settle(pilot)
        assert str(app.screen.query_one("#blockers", Static).content).startswith("✓ Checked")
        assert not app.screen.query_one("#next").disabled


async def test_a_failed_run_without_checkpoint_does_not_promise_one(tmp_path):
    from helpers_runs import HostApp, append_events, make_run, wait_for
    from ftwiz.screens.train import TrainScreen

    bare = make_run(tmp_path, "bare", state="failed")
    append_events(bare, [{"v": 1, "t": 1.0, "type": "started", "max_steps": 40},
                         {"v": 1, "t": 2.0, "type": "error", "message": "OSError: cannot reach the Hub"}])
    saved = make_run(tmp_path, "saved", state="failed")
    append_events(saved, [{"v": 1, "t": 1.0, "type": "started", "max_steps": 40},
                          {"v": 1, "t": 2.0, "type": "checkpoint", "step": 10, "path": "checkpoints/checkpoint-10"},
                          {"v": 1, "t": 3.0, "type": "error", "message": "boom"}])
    for run, expected in ((bare, "no checkpoint was saved"), (saved, "checkpoint at step 10")):
        screen = TrainScreen(run, **FAST)
        async with HostApp(screen).run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: screen.state == "failed" and screen.tracker.events_seen >= 2)
            await pilot.pause(0.2)
            notice = str(screen.query_one("#run-notice", Static).render())
            assert expected in notice and "last checkpoint" not in notice


# -- defect 8: a focus ring you can see; readable at 80x24 --------------------------------------------

def _contrast(a, b) -> float:
    return abs(a.brightness - b.brightness)


async def test_the_focused_field_stands_out(tmp_path):
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_settings_for_8b(pilot)
        rate = app.screen.query_one("#f-training-learning_rate")
        epochs = app.screen.query_one("#f-training-num_train_epochs")
        rate.focus()
        await pilot.pause()
        assert _contrast(rate.styles.background, epochs.styles.background) > 0.15
        box = app.screen.query_one("#f-training-gradient_checkpointing")
        box.focus()
        await pilot.pause()
        assert _contrast(box.styles.background, epochs.styles.background) > 0.15
        box.value = False
        await pilot.pause()
        assert "X" not in box.render().plain and str(box.label) == "off"


async def test_settings_show_the_focused_fields_reason_in_full_at_80x24(tmp_path):
    from textual.widgets import Input

    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_settings_for_8b(pilot)
        for key in ("training.learning_rate", "lora.r"):
            reason = app.screen.reasons[key]
            app.screen.query_one(f"#f-{key.replace('.', '-')}", Input).focus()
            await pilot.pause()
            detail = app.screen.query_one("#field-detail", Static)
            assert reason in str(detail.render())
            assert detail.region.bottom <= 24 - 2 and detail.region.height >= 1  # on screen, above the nav


async def test_model_and_data_placeholders_fit_at_80x24(tmp_path):
    from textual.widgets import Input

    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for step, selector in (("model", "#model-input"), ("data", "#data-input")):
            app.goto_step(step)
            await settle(pilot)
            field = app.screen.query_one(selector, Input)
            assert len(field.placeholder) <= field.content_region.width, (step, field.placeholder)
        app.goto_step("model")
        await settle(pilot)
        trust = app.screen.query_one("#trust")
        assert trust.region.bottom <= 24 - 2  # the trust_remote_code box is on screen, above the nav


# -- defect 11 (Method step): nothing pre-answered, assumptions said, errors in the form's words ------

async def test_method_questions_start_unanswered_and_the_ranking_says_what_it_assumes(tmp_path):
    from textual.widgets import Input, Select

    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "DecideScreen"
        prompting = app.screen.query_one("#q-tried_prompting", Select)
        assert prompting.value is Select.NULL
        assumed = str(app.screen.query_one("#assumed", Static).render())
        assert "Not answered yet" in assumed and "tried prompting: Yes" in assumed
        prompting.value = "no"
        await pilot.pause()
        assert "tried prompting" not in str(app.screen.query_one("#assumed", Static).render())
        # The ranking stays in view while the body scrolls to the last question.
        size = app.screen.query_one("#q-model_params_b", Input)
        size.focus()
        await pilot.pause()
        table = app.screen.query_one("#ranking")
        assert table.region.y < 24 and table.region.height >= 7
        # A bad number is said under its question, without naming a CLI option.
        size.value = "0"
        await pilot.pause()
        error = app.screen.query_one("#e-model_params_b", Static)
        assert "must be > 0" in str(error.render()) and error.display
        assert "--" not in str(error.render()) + str(app.screen.query_one("#assumed", Static).render())


# -- defect 10: one figure per model, method, length and precision, on every step -------------------

async def test_every_step_shows_the_same_memory_for_the_same_assumptions(tmp_path, monkeypatch):
    """Hardware -> Method -> Model -> Data -> Settings -> Review for llama-3.1-8b with LoRA: the
    floor is one figure wherever it shows; Settings and Review show one figure for the config,
    from one core call, with what it assumes and what it assumes unlike the floor."""
    import ftwiz.core.checks
    from textual.widgets import Input, Select

    from ftwiz.core.decision import ROUGH_MEMORY_NOTE
    from ftwiz.core.memory import FLOOR_ASSUMPTIONS, floor_text, memory_figure, minimum_memory
    from ftwiz.core.models import load_model_info
    from ftwiz.core.parameters import adapter_text, count_summary

    monkeypatch.setattr(ftwiz.core.checks, "model_available", lambda *a, **k: True)  # as if downloadable
    data = tmp_path / "mine.jsonl"
    data.write_text("".join('{"prompt": "Say %d", "completion": " %d"}\n' % (i, i) for i in range(50)))
    info = load_model_info("llama-3.1-8b")
    need = floor_text(minimum_memory(info, "lora"))
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        # Hardware: the floor, at the floor's assumptions.
        capabilities = app.screen.query_one("#capabilities", DataTable)
        row = next(capabilities.get_row_at(i) for i in range(capabilities.row_count)
                   if capabilities.get_row_at(i)[0] == "llama-3.1-8b")
        assert need in str(row[2])
        assert FLOOR_ASSUMPTIONS in " ".join(str(w.render()) for w in app.screen.query(Static))
        # Method: its rough figures say they are rough, and under which assumptions.
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "DecideScreen"
        app.screen.query_one("#q-model_params_b", Input).value = "8"
        await pilot.pause()
        reasons = str(app.screen.query_one("#reasons", Static).render())
        assert "GiB" in reasons and ROUGH_MEMORY_NOTE.split(";")[0] in reasons.replace("\n", " ")
        await pilot.press("ctrl+n")
        await settle(pilot)
        # Model: the same floor.
        assert screen_name(app) == "ModelScreen" and app.state.method == "lora"
        await pilot.press(*"llama-3.1-8b", "enter")
        await settle(pilot)
        assert app.screen.query_one("#model-memory", DataTable).get_row_at(0)[:2] == ["LoRA", need]
        assert FLOOR_ASSUMPTIONS in str(app.screen.query_one("#model-memory-assumes", Static).render())
        await pilot.press("ctrl+n")
        await settle(pilot)
        await pilot.press(*str(data), "enter")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        # Settings, set to the floor's micro-batch, length, rank, targets and checkpointing.
        assert screen_name(app) == "SettingsScreen"
        screen = app.screen
        for key, value in (("per_device_train_batch_size", "1"), ("max_length", "1024")):
            screen.query_one(f"#f-training-{key}", Input).value = value
        screen.query_one("#f-lora-r", Input).value = "16"
        screen.query_one("#f-lora-target_modules", Select).value = "all-linear"
        screen.query_one("#f-training-gradient_checkpointing").value = True
        await pilot.pause()
        config = app.state.config
        figure = memory_figure(config, info, app.state.hardware)
        title = str(screen.query_one("#memory-title", Static).render())
        assert f"({figure.assumptions})" in title and figure.assumptions.startswith(FLOOR_ASSUMPTIONS)
        assert f"{figure.figure.split()[0]} / " in str(screen.query_one("#memory").render())
        comparison = str(screen.query_one("#memory-floor", Static).render())
        # At the floor's assumptions (and the loss every run gets), Settings shows the floor itself.
        assert comparison == figure.comparison and figure.differences == []
        assert figure.figure == need and comparison.startswith(f"The same {need} as the Hardware and Model steps")
        # Another micro-batch: a new figure, and the difference named.
        screen.query_one("#f-training-per_device_train_batch_size", Input).value = "2"
        await pilot.pause()
        other = memory_figure(app.state.config, info, app.state.hardware)
        comparison = str(screen.query_one("#memory-floor", Static).render())
        assert other.figure != need and f"showed {need} at {FLOOR_ASSUMPTIONS};" in comparison
        assert "micro-batch 2 (there: 1)" in other.differences and all(d in comparison for d in other.differences)
        screen.query_one("#f-training-per_device_train_batch_size", Input).value = "1"
        await pilot.pause()
        # The adapter's size is the file peft writes, as `ftwiz params` says it.
        adapter = adapter_text(count_summary(info, 16, "all-linear")["adapter_bytes"])
        explorer = screen.query_one("#explorer", DataTable)
        rank16 = next(explorer.get_row_at(i) for i in range(explorer.row_count) if explorer.get_row_at(i)[0] == "16")
        assert f"({adapter})" in rank16[3]
        # Review: the same figure and words, from the same call.
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "ReviewScreen"
        review = str(app.screen.query_one("#memory", Static).render())
        assert review == f"Memory: {figure.figure} on the GPU at {figure.assumptions}. {figure.comparison}"


def test_the_demo_does_not_warn_about_a_chat_template_its_rows_never_use(tmp_path):
    from ftwiz.core import demo
    from ftwiz.core.data import build_dataset

    notes = []
    build_dataset(demo.demo_config(), demo.build_tokenizer(), notes)
    assert not [n for n in notes if "chat template" in n.message], notes
    chat = demo.write_rows(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
        for i in range(4)])
    config = demo.demo_config().model_copy(update={"data": demo.demo_config().data.model_copy(update={"path": str(chat)})})
    notes = []
    build_dataset(config, demo.build_tokenizer(), notes)
    assert [n for n in notes if "chat template" in n.message]  # chat rows do use it: still said


async def test_model_search_down_moves_the_highlight_and_enter_takes_it(tmp_path):
    from textual.widgets import OptionList

    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.goto_step("model")
        await pilot.pause()
        await pilot.press(*"llama-3.1")
        catalog = app.screen.query_one("#catalog", OptionList)
        names = [catalog.get_option_at_index(i).id for i in range(catalog.option_count)]
        assert names[0] == "llama-3.1-70b" and "llama-3.1-8b" in names
        for _ in range(names.index("llama-3.1-8b")):
            await pilot.press("down")
        await pilot.press("enter")
        await settle(pilot)
        assert app.state.model_spec == "llama-3.1-8b"


async def test_gated_models_name_the_installed_login_command(tmp_path):
    from ftwiz.core.models import load_model_info

    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.goto_step("model")
        await pilot.pause()
        info = load_model_info("llama-3.1-8b")
        info.gated = True
        text = app.screen._describe(info)
        assert "hf auth login" in text and "huggingface-cli" not in text



# -- the Done screen: code that stays valid at 80 columns; the demo's result reads as a success ---------

async def test_done_screen_code_does_not_wrap_and_the_demo_says_what_it_measured(tmp_path):
    from helpers_runs import HostApp, write_fixed_run, wait_for
    from ftwiz.core.engine.results import usage_snippets
    from ftwiz.screens.done import DoneScreen

    fixed = write_fixed_run(tmp_path, "demo-lora")
    screen = DoneScreen(fixed.run)
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        code = screen.query_one("#done-code-load", Static)
        lines = str(code.render()).splitlines()
        assert code.size.height == len(lines)  # one screen line per line of code: nothing wrapped
        assert max(len(line) for line in lines) > 78  # a line longer than the screen: it scrolls instead
        lesson = str(screen.query_one("#done-lesson", Static).render())
        from helpers_runs import recorded_samples

        from ftwiz.core import demo

        samples = recorded_samples()
        fmt = lambda side: f"{samples[side]['format_match']:.0%}"  # noqa: E731 - the recorded run's scores
        assert "learns one format" in lesson and f"{fmt('before')} before, {fmt('after')} after" in lesson
        assert "not expected" in lesson
        table = screen.query_one("#done-samples", DataTable)
        assert [table.get_row_at(i)[4] for i in range(table.row_count)] == [
            demo.row_verdict(e) for e in samples["examples"][:table.row_count]]


# -- step-specific help -----------------------------------------------------------------------------------

async def test_help_starts_with_what_the_current_step_decides(tmp_path):
    from textual.widgets import Markdown

    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        seen = set()
        for step, title in (("welcome", "This step: Hardware"), ("model", "This step: Model"),
                            ("data", "This step: Data")):
            app.goto_step(step)
            await settle(pilot)
            app.set_focus(None)
            await pilot.press("question_mark" if step == "welcome" else "f1")
            await wait_for_screen(pilot, "HelpScreen")
            text = app.screen.query_one(Markdown).source
            assert text.startswith(f"# {title}") and "# Fine-tuning in plain words" in text
            seen.add(text.split("\n", 1)[0])
            await pilot.press("escape")
            await pilot.pause()
        assert len(seen) == 3


# -- the dashboard: evaluation loss beside training loss; overfitting said with what to do --------------

async def test_dashboard_shows_eval_loss_and_warns_of_overfitting(tmp_path):
    from helpers_runs import HostApp, append_events, make_run, step_event, wait_for
    from ftwiz.screens.train import TrainScreen

    run = make_run(tmp_path, max_steps=40)
    events = [{"v": 1, "t": 1.0, "type": "started", "max_steps": 40}]
    for step in range(1, 31):
        events.append(step_event(step, 40, 1.0 + step))  # training loss falls all along
        if step % 10 == 0:
            events.append({"v": 1, "t": 1.0 + step, "type": "eval", "step": step, "eval_loss": {10: 1.2, 20: 1.1, 30: 1.4}[step]})
    append_events(run, events)
    screen = TrainScreen(run, **FAST)
    async with HostApp(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: screen.tracker.step == 30)
        await pilot.pause(0.2)
        assert "(eval 1.4000)" in str(screen.query_one("#run-progress-line", Static).render())
        notice = str(screen.query_one("#run-notice", Static).render())
        assert "Overfitting" in notice and "step 20" in notice and "fewer epochs" in notice


# -- the walk: own data with a catalog model, keyboard alone, 80x24 ----------------------------------------

async def test_own_data_with_a_catalog_model_walks_to_a_run_and_back(tmp_path, monkeypatch):
    import ftwiz.core.checks

    from ftwiz.core.memory import floor_text, minimum_memory
    from ftwiz.core.models import load_model_info

    patch_start_run(monkeypatch, tmp_path)
    monkeypatch.setattr(ftwiz.core.checks, "model_available", lambda *a, **k: True)  # as if downloadable
    data = tmp_path / "mine.jsonl"
    data.write_text("".join('{"prompt": "Say %d", "completion": " %d"}\n' % (i, i) for i in range(50)))
    need = floor_text(minimum_memory(load_model_info("llama-3.2-1b"), "lora"))
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        capabilities = app.screen.query_one("#capabilities", DataTable)
        assert need in str(capabilities.get_row_at(0)[2])  # llama-3.2-1b, LoRA
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "DecideScreen"
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "ModelScreen" and app.state.method == "lora"
        await pilot.press(*"llama-3.2-1b", "enter")
        await settle(pilot)
        assert app.screen.query_one("#model-memory", DataTable).get_row_at(0)[1] == need
        await pilot.press("ctrl+n")
        await settle(pilot)
        await pilot.press(*str(data), "enter")
        await settle(pilot)
        assert app.state.n_examples == 50
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "SettingsScreen"
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "ReviewScreen"
        assert app.state.config.data.path == str(data)
        assert not app.screen.query_one("#next").disabled
        await pilot.press("ctrl+n")
        await wait_for_screen(pilot, "TrainScreen")
        await pilot.press("ctrl+r")
        await wait_for_screen(pilot, "RunsScreen")
        await pilot.press("escape")
        await wait_for_screen(pilot, "TrainScreen")
        await pilot.press("escape")
        await wait_for_screen(pilot, "ReviewScreen")


async def test_a_focused_compact_field_keeps_its_one_line_and_shows_its_value(tmp_path):
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_settings_for_8b(pilot)
        rate = app.screen.query_one("#f-training-learning_rate")
        assert app.focused is rate
        assert rate.region.height == 1 and rate.content_region.height == 1


async def test_question_mark_types_into_a_text_field_and_opens_help_elsewhere(tmp_path):
    from textual.widgets import Input

    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.goto_step("data")
        await settle(pilot)
        field = app.screen.query_one("#data-input", Input)
        assert app.focused is field
        await pilot.press("question_mark")
        await pilot.pause()
        assert screen_name(app) == "DataScreen" and field.value.endswith("?")
        app.set_focus(None)
        await pilot.press("question_mark")
        await wait_for_screen(pilot, "HelpScreen")


def test_every_planned_hyperparameter_lands_in_its_config_section():
    """The plan's hyperparameters (attn_implementation is a model field) make a valid config."""
    from snapshot_apps import H200
    from ftwiz.core.hardware import RecordedBackend, detect_hardware
    from ftwiz.core.models import load_model_info
    from ftwiz.core.plan import make_plan
    from ftwiz.core.wizard import recommended_values, settings_config

    info = load_model_info("llama-3.1-8b")
    plan = make_plan(info, examples=5000, gpu=detect_hardware(RecordedBackend(H200)), method="lora",
                     targets="attention")
    values, _ = recommended_values(plan.to_dict()["hyperparameters"])
    config = settings_config(values, method="lora", model_spec="llama-3.1-8b", data_spec="train.jsonl",
                             info=info, plan=plan)
    assert config.model.attn_implementation == plan.to_dict()["hyperparameters"]["attn_implementation"]["value"]


# -- the model download shows progress (files, bytes, speed) before training ---------------------

async def test_dashboard_shows_the_model_download_before_training(tmp_path, monkeypatch):
    """The run process's own download code (core/engine/download.py) fetches from a Hub on
    127.0.0.1 and writes its events into a run directory the dashboard follows."""
    import threading

    from textual.widgets import ProgressBar

    from fake_hub import FakeHub, hub_client
    from helpers_runs import HostApp, make_run, wait_for
    from test_download import FILES, REPO, WANTED
    from ftwiz.core.engine.download import fetch_model
    from ftwiz.screens.train import TrainScreen

    run = make_run(tmp_path / "runs")
    hold = "model-00001-of-00002.safetensors"
    with FakeHub({REPO: FILES}, chunk=16 * 1024, pause_s=0.01, hold=hold) as hub, \
            hub_client(monkeypatch, hub, tmp_path / "cache"):
        download = threading.Thread(target=fetch_model, args=(REPO, run.emit), kwargs={"interval_s": 0.1})
        screen = TrainScreen(run, **FAST)
        async with HostApp(screen).run_test(size=(80, 24)) as pilot:
            download.start()
            await wait_for(pilot, lambda: hub.holding.is_set() and screen.tracker.download is not None
                           and screen.tracker.download.bytes_per_s)  # speed measured (after half a second)
            await pilot.pause(0.3)
            line = str(screen.query_one("#run-progress-line", Static).render())
            total_kib = sum(len(FILES[name]) for name in WANTED) / 1024
            assert re.fullmatch(rf"Downloading {REPO}: [1-4]/5 files, \d+ of {total_kib:.0f} KiB, [\d.]+ [kMG]B/s, ~\d+ (s|min) left",
                                line), line
            bar = screen.query_one(ProgressBar)
            assert bar.total == screen.tracker.download.bytes_total and 0 < bar.progress < bar.total
            notice = str(screen.query_one("#run-notice", Static).render())
            assert "downloading the model from the Hugging Face Hub" in notice
            hub.release()
            await wait_for(pilot, lambda: not download.is_alive() and screen.tracker.download.done)
            await pilot.pause(0.3)
            line = str(screen.query_one("#run-progress-line", Static).render())
            assert line.startswith("step 0/"), line  # the download is over: the step line is back
            log = "\n".join(screen.query_one("#run-log").lines)
            assert f"✓ Downloaded {REPO}: 5 files" in log
            notice = str(screen.query_one("#run-notice", Static).render())
            assert "downloading" not in notice
        download.join(10)
