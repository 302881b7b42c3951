"""Step 6: the final run config as YAML; save it for `ftwiz train`, or start training now."""

from __future__ import annotations

from pathlib import Path

from rich.syntax import Syntax
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Static
from textual.worker import Worker, WorkerState

from ftwiz.core.config import RunConfig
from ftwiz.core.demo import demo_config
from ftwiz.tui.messages import BlockersChecked, RunStarted
from ftwiz.tui.steps import StepScreen
from ftwiz.tui.widgets.confirm import ConfirmScreen


METHOD_NAMES = {"lora": "LoRA", "qlora": "QLoRA", "full": "Full fine-tuning"}


class ReviewScreen(StepScreen):
    STEP = "review"
    NEXT_LABEL = "Start training"
    BINDINGS = [Binding("ctrl+s", "save", "Save config")]

    def __init__(self) -> None:
        super().__init__()
        self.config: RunConfig | None = None
        self.problems: list[str] | None = None
        """core.checks.blocking_problems of the config; None until checked."""

    def compose_body(self) -> ComposeResult:
        yield Static("Your run, as a config file", classes="title")
        yield Static("", id="summary", classes="hint")
        yield Static("", id="memory", classes="hint", markup=False)
        yield Static("Checking that this run can work here…", id="blockers", classes="hint")
        with VerticalScroll(id="yaml-box"):  # the YAML scrolls; summary, save and start stay in view
            yield Static("", id="yaml")
        with Horizontal(id="save-row"):
            yield Static("Save as ", classes="hint")
            yield Input(placeholder="file to save to", id="save-path", compact=True)
            yield Button("Save (ctrl+s)", id="save", compact=True)
        yield Static("", id="reuse", classes="hint")

    def on_mount(self) -> None:
        if self.state.config is None and self.state.demo:
            self.state.config = demo_config()
        self.config = self.state.config
        summary = self.query_one("#summary", Static)
        if self.config is None:
            summary.update("[b]No config yet.[/b] Go back (esc) and finish the Settings step.")
            summary.set_classes("warn")
            self.query_one("#next", Button).disabled = True
            return
        name = self.config.name or "run"
        count = self.state.gpu_count
        spread = f" over {count} GPUs with {'FSDP' if self.config.training.fsdp else 'DDP'}" if count > 1 else ""
        summary.update(
            f"{METHOD_NAMES[self.config.method]} of {self.config.model.name_or_path} on {self.config.data.path}"
            f"{spread}"
            f"{'' if self.config.method == 'qlora' else ' (the quantization section applies to QLoRA only)'}. "
            f"Start training runs it in its own process: quitting ftwiz leaves it running."
        )
        self.query_one("#memory", Static).update(self._memory_line(self.config))
        self.query_one("#yaml", Static).update(
            Syntax(self.config.to_yaml(), "yaml", theme="monokai", background_color="default")
        )
        self.query_one("#next", Button).disabled = True  # until the checks below answer
        self.check_blockers(self.config)
        save_path = self.query_one("#save-path", Input)
        save_path.value = f"{name}.yaml"
        self.query_one("#reuse", Static).update(
            f"Reuse it later without the wizard: ftwiz train {save_path.value}"
        )

    def _memory_line(self, config: RunConfig) -> str:
        """Settings' figure, from the same core call, with what it assumes."""
        info = self.state.model_info
        if info is None:
            return "Memory: the demo's tiny model trains on the CPU in a few hundred MB of RAM."
        from ftwiz.core.errors import UserError
        from ftwiz.core.memory import memory_figure

        try:
            figure = memory_figure(config, info, self.state.hardware)
        except UserError as exc:
            return f"Memory: {exc}"
        where = "each GPU" if self.state.gpu_count > 1 else "the GPU"
        return f"Memory: {figure.figure} on {where} at {figure.assumptions}. {figure.comparison}"

    # -- save -----------------------------------------------------------------------------
    @on(Button.Pressed, "#save")
    @on(Input.Submitted, "#save-path")
    def action_save(self) -> None:
        if self.config is None:
            return
        path = Path(self.query_one("#save-path", Input).value.strip() or "run.yaml")
        if path.is_dir():
            self.notify(f"{path} is a directory; give a file name", severity="error")
        elif path.exists():
            self.app.push_screen(
                ConfirmScreen(f"{path} already exists. Overwrite it?"),
                lambda yes: self._write(path) if yes else self.notify("Not saved"),
            )
        else:
            self._write(path)

    def _write(self, path: Path) -> None:
        try:
            self.config.save(path)
        except OSError as exc:
            self.notify(f"{path}: {exc.strerror}", title="Not saved", severity="error")
            return
        self.query_one("#reuse", Static).update(f"Saved. Reuse it later: ftwiz train {path}")
        self.notify(f"Saved {path}", title="Config saved")

    # -- can it work? ------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="blockers",
          description="Checking that the run can work here")
    def check_blockers(self, config: RunConfig) -> None:
        from ftwiz.core.checks import blocking_problems

        self.post_message(BlockersChecked(blocking_problems(config, self.state.hardware, self.state.model_info)))

    def on_blockers_checked(self, message: BlockersChecked) -> None:
        self.problems = message.problems
        box = self.query_one("#blockers", Static)
        if message.problems:
            lines = "\n".join(f"✗ {escape(problem)}" for problem in message.problems)
            box.update(f"[b]This run cannot work here; Start is off until these are fixed:[/b]\n{lines}\n"
                       "Esc goes back to change them; the config can still be saved for another machine.")
            box.set_classes("bad")
        else:
            box.update("✓ Checked: the model is available and the run fits this machine.")
            box.set_classes("good")
        self.query_one("#next", Button).disabled = bool(message.problems)

    # -- start ------------------------------------------------------------------------------
    def commit(self) -> bool:
        """Next on the last planning step starts the run."""
        if self.problems is None:
            self.notify("Still checking that the run can work here…", severity="warning")
            return False
        if self.problems:
            self.notify("This run cannot work here: see the problems listed above the config.",
                        title="Not started", severity="error")
            return False
        if self.config is not None:
            self.query_one("#next", Button).disabled = True
            self.notify("Checking the config and starting the run in its own process"
                        + (" (the demo model is built on first use)" if self.state.demo else "") + "…",
                        title="Starting")
            self.start_training(self.config)
        return False

    @work(thread=True, exclusive=True, exit_on_error=False, group="start-run",
          description="Starting the training run")
    def start_training(self, config: RunConfig) -> None:
        from ftwiz.core.engine.launch import start_run

        if self.state.demo:
            from ftwiz.core.demo import ensure_demo_model

            ensure_demo_model()
        self.post_message(RunStarted(start_run(config, self.wizard.runs_dir)))

    @on(Worker.StateChanged)
    def _start_failed(self, event: Worker.StateChanged) -> None:
        """The app shows why; here the Start button comes back for another try."""
        if event.worker.group == "start-run" and event.state == WorkerState.ERROR:
            self.query_one("#next", Button).disabled = False

    def on_run_started(self, message: RunStarted) -> None:
        name = message.run_dir.name
        summary = self.query_one("#summary", Static)
        summary.update(f"[b]Run {name} started[/b] in its own process. ctrl+r lists it with the other runs "
                       "(reattach, stop, resume); Start training again starts another run.")
        summary.set_classes("hint")
        self.query_one("#next", Button).disabled = False
        self.wizard.show_run(message.run_dir)
