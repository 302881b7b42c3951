"""The wizard driven by Textual's Pilot: keyboard alone, recorded hardware, fixed clock."""

from __future__ import annotations

import subprocess
import sys
import time

from textual.widgets import DataTable, Input, OptionList, Static

from snapshot_apps import CPU_ONLY, H200, fixed_app, open_step, screen_name, settle, wait_for_screen
from ftwiz.tui.app import make_app


def test_importing_the_app_does_not_import_torch():
    code = (
        "import sys, ftwiz.tui.app, ftwiz.screens.welcome, ftwiz.screens.model, ftwiz.screens.review, "
        "ftwiz.screens.help\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_first_screen_mounts_fast(tmp_path):
    """Under a second of this process's CPU time (wall time here depends on busy shared cores).
    Earlier tests' garbage is collected first: a collection of their apps is not this mount's cost."""
    import gc

    gc.collect()
    started = time.process_time()
    app = fixed_app(tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert screen_name(app) == "WelcomeScreen"
        assert time.process_time() - started < 1.0


async def test_welcome_shows_recorded_gpu_and_what_it_can_train(tmp_path):
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        gpus = app.screen.query_one("#gpus", DataTable)
        assert gpus.row_count == 1
        assert gpus.get_row_at(0)[1] == "NVIDIA H200"
        host = str(app.screen.query_one("#host", Static).content)
        assert "16 threads" in host and "128.0 GiB" in host  # as `ftwiz gpus` says it


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
        # the base checkpoint and its instruct release
        assert [catalog.get_option_at_index(i).id for i in range(catalog.option_count)] == ["qwen2.5-7b",
                                                                                          "qwen2.5-7b-instruct"]
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


async def test_demo_path_walks_every_step_with_the_keyboard_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("FTWIZ_CACHE", str(tmp_path / "cache"))
    app = fixed_app(tmp_path / "runs", CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert screen_name(app) == "WelcomeScreen"
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "DecideScreen"
        ranking = app.screen.query_one("#ranking", DataTable)
        assert ranking.row_count == 6
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert app.state.method in ("lora", "qlora")
        assert screen_name(app) == "ModelScreen"
        await pilot.press(*"demo", "enter")
        await settle(pilot)
        assert app.state.model_spec == "demo"
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "DataScreen"
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert app.state.n_examples == 2000
        assert "ready to train" in str(app.screen.query_one("#data-status", Static).content)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "SettingsScreen"
        rate = app.screen.query_one("#f-training-learning_rate", Input)
        assert rate.value == "0.005"
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen_name(app) == "ReviewScreen"
        config = app.state.config
        assert config.data.path == "demo" and config.model.name_or_path.endswith("demo-model-v2")
        assert config.training.learning_rate == 0.005
        await pilot.press("escape")
        await settle(pilot)
        assert screen_name(app) == "SettingsScreen"


async def open_settings_for_8b(app, pilot, n_examples: int, data_stats: dict | None = None) -> None:
    """Straight to the Settings step with Llama-3.1-8B and a validated train.jsonl of n_examples rows."""
    from ftwiz.core.models import load_model_info

    await settle(pilot)
    app.state.model_spec = "llama-3.1-8b"
    app.state.model_info = load_model_info("llama-3.1-8b")
    app.state.data_spec, app.state.n_examples = "train.jsonl", n_examples
    app.state.data_stats = data_stats
    app.goto_step("settings")
    await settle(pilot)


async def test_settings_edits_validate_and_move_the_memory_bar(tmp_path):
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_settings_for_8b(app, pilot, 5000)
        memory = lambda: str(app.screen.query_one("#memory").content)  # noqa: E731
        before = memory()
        assert "fits" in before and "weights" in before
        batch = app.screen.query_one("#f-training-per_device_train_batch_size", Input)
        batch.value = "32"
        await pilot.pause()
        assert memory() != before and "DOES NOT FIT" in memory()
        batch.value = "0"
        await pilot.pause()
        error = str(app.screen.query_one("#settings-error", Static).content)
        assert "per_device_train_batch_size" in error and app.state.config is None
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert screen_name(app) == "SettingsScreen"
        batch.value = "2"
        await pilot.pause()
        assert app.state.config.training.per_device_train_batch_size == 2
        assert app.state.overrides["training.per_device_train_batch_size"] == 2


async def test_alpha_follows_rank_until_the_user_sets_it(tmp_path):
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_settings_for_8b(app, pilot, 5000)
        rank = app.screen.query_one("#f-lora-r", Input)
        alpha = app.screen.query_one("#f-lora-lora_alpha", Input)
        assert alpha.value == str(2 * int(rank.value))
        rank.value = "8"
        await pilot.pause()
        assert alpha.value == "16" and app.state.config.lora.lora_alpha == 16
        assert "2 x rank (8)" in str(app.screen.query_one("#f-lora-lora_alpha-why", Static).content)
        alpha.value = "8"  # the user's own alpha stays
        await pilot.pause()
        rank.value = "32"
        await pilot.pause()
        assert alpha.value == "8" and (app.state.config.lora.r, app.state.config.lora.lora_alpha) == (32, 8)


async def test_settings_warn_a_base_model_with_chat_data_and_name_the_instruct_one(tmp_path):
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(120, 40)) as pilot:
        app.state.data_format = "chat"
        await open_settings_for_8b(app, pilot, 500)
        warning = app.screen.query_one("#plan-warning", Static)
        assert warning.display and "llama-3.1-8b-instruct" in str(warning.content)
        app.state.data_format = "text"  # plain text never meets the chat template
        app.goto_step("data")
        await open_step(pilot, "settings", data_format="text")
        assert not app.screen.query_one("#plan-warning", Static).display


async def test_decide_answers_rerank_and_a_non_training_choice_does_not_advance(tmp_path):
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.goto_step("decide")
        await pilot.pause()
        app.screen.query_one("#q-tried_prompting").value = "no"
        await pilot.pause()
        ranking = app.screen.ranking
        assert ranking[0].method == "prompt_engineering"
        table = app.screen.query_one("#ranking", DataTable)
        table.move_cursor(row=0)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert screen_name(app) == "DecideScreen"


def _fake_run(runs_dir, config):
    """A run directory as the engine leaves it right after starting (this process as its pid)."""
    import os

    from ftwiz.core.runs import create_run_dir

    run = create_run_dir(runs_dir, config.name or "run")
    config.save(run.config_path)
    run.write_status(state="running", pid=os.getpid(), step=0, max_steps=200)
    return run


async def test_review_start_calls_the_engine_and_shows_the_dashboard(tmp_path, monkeypatch):
    import ftwiz.core.demo
    import ftwiz.core.engine.launch

    started = []

    def fake_start_run(config, runs_dir, detach=True):
        started.append(config)
        return _fake_run(runs_dir, config)

    monkeypatch.setattr(ftwiz.core.engine.launch, "start_run", fake_start_run)
    monkeypatch.setattr(ftwiz.core.demo, "ensure_demo_model", lambda root=None: tmp_path, raising=False)
    app = fixed_app(tmp_path / "runs", CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await wait_for_screen(pilot, "TrainScreen")
        assert [c.data.path for c in started] == ["demo"]


async def test_existing_runs_are_offered_first_and_escape_starts_a_new_fine_tune(tmp_path):
    from ftwiz.core.demo import demo_config

    _fake_run(tmp_path / "runs", demo_config())
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for_screen(pilot, "RunsScreen")  # its watcher runs until it closes: no settle()
        await pilot.press("escape")
        await wait_for_screen(pilot, "WelcomeScreen")


async def test_trusting_remote_code_names_the_risk_and_reaches_the_config(tmp_path):
    app = fixed_app(tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        app.goto_step("model")
        await pilot.pause()
        warning = app.screen.query_one("#trust-warning", Static)
        assert "trust_remote_code" not in str(warning.content)
        app.screen.query_one("#trust").value = True
        await pilot.pause()
        assert "runs Python from the model's repository" in str(warning.content)
        assert app.state.trust_remote_code is True


def test_no_gpu_line_says_it_once_plainly():
    from ftwiz.screens.welcome import no_gpu_line

    line = no_gpu_line("CPU only: no NVIDIA driver answered (NVML Shared Library Not Found).")
    assert line.startswith("[b]No NVIDIA GPU found[/b]: no NVIDIA driver answered (NVML Shared Library Not Found). ")
    assert line.count("CPU only") == 0 and ".)" not in line and "no-driver" not in line


async def test_method_ranking_fits_its_pane_at_120x40(tmp_path):
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        table = app.screen.query_one("#ranking", DataTable)
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert [str(c.label) for c in table.columns.values()][-1] == "quality"


async def test_settings_follow_the_data_steps_token_lengths_and_say_why_per_field(tmp_path):
    """Short examples give a short max_length (core's plan from the data statistics), and the
    batch, accumulation and checkpointing fields each carry their own reason."""
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(120, 40)) as pilot:
        stats = {"rows": 2000, "estimate": False, "p50": 40, "p95": 90, "max": 120, "mean": 45.0}
        await open_settings_for_8b(app, pilot, 2000, stats)
        assert app.screen.query_one("#f-training-max_length", Input).value == "128"
        assert app.state.config.training.max_length == 128
        why = {key: str(app.screen.query_one(f"#f-training-{key}-why", Static).content)
               for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "gradient_checkpointing")}
        assert len(set(why.values())) == 3, why
        checkbox = app.screen.query_one("#f-training-gradient_checkpointing")
        assert str(checkbox.label) == ("on" if checkbox.value else "off")
        checkbox.toggle()
        await pilot.pause()
        assert str(checkbox.label) == ("on" if checkbox.value else "off")
        assert "~45 tokens on average" in str(app.screen.query_one("#time-cost", Static).content)


async def test_review_summary_names_the_method_as_people_write_it(tmp_path):
    app = fixed_app(tmp_path / "runs", CPU_ONLY)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("d")
        await settle(pilot)
        summary = str(app.screen.query_one("#summary", Static).content)
        assert summary.startswith("LoRA of ") and "LORA" not in summary
        assert "quantization section applies to QLoRA only" in summary


async def test_data_notes_show_as_plain_text_with_warnings_marked(tmp_path):
    """The Data screen shows each note's words as is ([brackets] too) and marks warnings by their kind."""
    import json

    path = tmp_path / "mixed [v2].json"  # one object per line in a .json file: an info note
    rows = [{"instruction": f"say {i}", "output": f"[{i}]"} for i in range(3)] + [{"text": "a [b] c"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))  # two formats: a warning note
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_step(pilot, "data", data_spec=str(path))
        content = app.screen.query_one("#data-status", Static).content
        lines = content.plain.split("\n")
        assert lines[0] == f"{path}: 4 rows, format alpaca, 1 problem(s)"
        assert lines[1:] == ["a .json file with one object per line: read as JSON lines", "formats by row: alpaca 3, text 1"]
        marked = {content.plain[span.start:span.end].strip() for span in content.spans if str(span.style) == "yellow"}
        assert marked == {lines[2]}
