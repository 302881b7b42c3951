"""The ftwiz wizard: a Textual app that walks a first fine-tune from the GPU to a running job.

`make_app` is the one factory the CLI and the tests share: tests inject a recorded GPU
backend and a fixed clock. Nothing here imports torch or transformers; screens ask core/
in workers, so the first screen appears at once.
"""

from __future__ import annotations

import importlib

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.theme import Theme
from textual.worker import Worker, WorkerState

from ftwiz.tui.messages import HardwareDetected
from ftwiz.tui.state import STEPS, WizardState
from ftwiz.tui.steps import StepScreen

FTWIZ_THEME = Theme(
    name="ftwiz",
    primary="#4EA8DE",
    secondary="#7F5AF0",
    accent="#F4A261",
    warning="#E9C46A",
    error="#E76F51",
    success="#2A9D8F",
    foreground="#E6E6E6",
    background="#14161A",
    surface="#1C1F26",
    panel="#252A33",
    dark=True,
)


_STEP_SCREENS = {
    "welcome": ("ftwiz.screens.welcome", "WelcomeScreen"),
    "decide": ("ftwiz.screens.decide", "DecideScreen"),
    "model": ("ftwiz.screens.model", "ModelScreen"),
    "data": ("ftwiz.screens.data", "DataScreen"),
    "settings": ("ftwiz.screens.settings", "SettingsScreen"),
    "review": ("ftwiz.screens.review", "ReviewScreen"),
}


def _step_screen(key: str) -> Screen:
    """A fresh screen for a wizard step (screens read their state from the app on mount).

    Imported on first use, so the first screen appears before the later steps are loaded.
    """
    module, name = _STEP_SCREENS[key]
    return getattr(importlib.import_module(module), name)()


class FtwizApp(App):
    TITLE = "ftwiz"
    SUB_TITLE = "your first fine-tune, guided"
    CSS_PATH = ["global.tcss", "app.tcss"]
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("ctrl+r", "runs", "Runs"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        runs_dir: str | Path = "runs",
        hardware_backend: Any = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.hardware_backend = hardware_backend
        self.clock = clock or time.time
        self.state = WizardState()
        self.step_index = 0
        self.register_theme(FTWIZ_THEME)
        self.theme = "ftwiz"

    # -- start --------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.detect_hardware()
        self.goto_step("welcome")
        if self._runs_to_offer():
            from ftwiz.screens.runs import RunsScreen

            # Over Welcome: leaving the list (escape) starts a new fine-tune.
            self.push_screen(RunsScreen(self.runs_dir, clock=self.clock))

    def _runs_to_offer(self) -> bool:
        """Runs exist and the screen that lists them is there to show them."""
        from ftwiz.core.runs import list_runs

        if not list_runs(self.runs_dir):
            return False
        try:
            import ftwiz.screens.runs  # noqa: F401  (built alongside; absent in early checkouts)
        except ImportError:
            return False
        return True

    @work(thread=True, exclusive=True, exit_on_error=False, group="hardware",
          description="Detecting GPUs, CPU, RAM and disk")
    def detect_hardware(self) -> None:
        from ftwiz.core.hardware import detect_hardware

        hardware = detect_hardware(self.hardware_backend, path=str(self.runs_dir.resolve().parent))
        self.post_message(HardwareDetected(hardware))

    def on_hardware_detected(self, message: HardwareDetected) -> None:
        """Every screen in the stack that shows hardware fills in, not only the top one: the
        runs list may sit over the Hardware step while detection finishes."""
        self.state.hardware = message.hardware
        for screen in self.screen_stack:
            show = getattr(screen, "show_hardware", None)
            if show is not None:
                show()

    # -- steps --------------------------------------------------------------------------
    def goto_step(self, key: str) -> None:
        """Show a step; the step screen replaces the current one (the state keeps the choices)."""
        keys = [k for k, _ in STEPS]
        self.step_index = keys.index(key)
        screen = _step_screen(key)
        if isinstance(self.screen, StepScreen):
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def next_step(self) -> None:
        key = STEPS[self.step_index + 1][0]
        if key == "train":
            return  # Review's "Start training" is the only way into a run
        self.goto_step(key)

    def previous_step(self) -> None:
        if self.step_index > 0:
            self.goto_step(STEPS[self.step_index - 1][0])

    def show_run(self, run_dir: Any) -> None:
        """Follow a run: the live dashboard (the run itself is its own process), pushed over the
        step that started it, so that Esc comes back to that step rather than to nothing."""
        from ftwiz.screens.train import TrainScreen

        self.push_screen(TrainScreen(run_dir))

    def leave_screen(self) -> None:
        """Esc on a screen over the wizard: back to the one below it; never down to the app's
        empty default screen (the wizard's current step takes its place)."""
        if len(self.screen_stack) > 2:
            self.pop_screen()
        else:
            self.switch_screen(_step_screen(STEPS[min(self.step_index, len(STEPS) - 2)][0]))

    def action_runs(self) -> None:
        """The runs list, from any screen: reattach, resume, stop or delete a run."""
        from ftwiz.screens.runs import RunsScreen

        if not isinstance(self.screen, RunsScreen):
            self.push_screen(RunsScreen(self.runs_dir, clock=self.clock))

    # -- help, palette, failures --------------------------------------------------------
    def action_help(self) -> None:
        from ftwiz.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(help_topic(self.screen)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "What LoRA, rank, QLoRA, ... mean, in plain words", self.action_help)
        for number, (key, title) in enumerate(STEPS[:-1], start=1):
            yield SystemCommand(
                f"Go to step {number}: {title}", f"Jump to the {title} step of the wizard",
                lambda key=key: self.goto_step(key),
            )
        yield SystemCommand("Runs", "Every run: reattach, resume, stop or delete (ctrl+r)", self.action_runs)
        yield SystemCommand(
            "Demo", "The built-in demo: tiny model and dataset, trains on the CPU", self.start_demo
        )

    def start_demo(self) -> None:
        """Demo choice: model and data set to the built-in demo, straight to Review."""
        self.state.choose_demo()
        self.goto_step("review")

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """A failed worker becomes a visible notice, never a silent stall or a crash."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        what = event.worker.description or event.worker.name
        self.notify(f"{what}: {error}", title="Failed", severity="error", timeout=10)


def help_topic(screen: Screen) -> str | None:
    """The help section for a screen: its wizard step, or the run screen it is."""
    step = getattr(screen, "STEP", None)
    if step:
        return step
    return {"TrainScreen": "train", "RunsScreen": "runs", "DoneScreen": "done"}.get(type(screen).__name__)


def make_app(
    runs_dir: str | Path = "runs",
    hardware_backend: Any = None,
    clock: Callable[[], float] | None = None,
) -> FtwizApp:
    """The wizard app; tests pass a RecordedBackend and a fixed clock."""
    return FtwizApp(runs_dir=runs_dir, hardware_backend=hardware_backend, clock=clock)


def run_wizard(runs_dir: str | Path = "runs") -> None:
    """`ftwiz` with no command."""
    make_app(runs_dir=runs_dir).run()
