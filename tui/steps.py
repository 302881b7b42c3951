"""The wizard's steps and the screen every step is built on (header, body, back/next, footer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer

from ftwiz.tui.state import STEPS
from ftwiz.tui.widgets.step_header import StepHeader

if TYPE_CHECKING:  # annotations only: app imports this module
    from ftwiz.tui.app import FtwizApp
    from ftwiz.tui.state import WizardState


class StepScreen(Screen):
    """One wizard step. Subclasses compose the body and save their choices in `commit`."""

    STEP: ClassVar[str]
    NEXT_LABEL: ClassVar[str] = "Next"
    BINDINGS = [
        Binding("ctrl+n", "next", "Next step"),
        Binding("escape", "back", "Back"),
    ]

    @property
    def wizard(self) -> FtwizApp:
        return self.app  # type: ignore[return-value]

    @property
    def state(self) -> WizardState:
        return self.wizard.state

    def compose(self) -> ComposeResult:
        yield StepHeader(self.STEP)
        yield from self.compose_top()
        with VerticalScroll(id="body"):
            yield from self.compose_body()
        with Horizontal(id="nav"):
            # Compact: one line instead of three, so that 80x24 keeps room for the step itself.
            yield Button("◂ Back (esc)", id="back", disabled=self.STEP == STEPS[0][0], compact=True)
            yield Button(f"{self.NEXT_LABEL} (ctrl+n) ▸", id="next", variant="primary", compact=True)
        yield Footer()

    NARROW_BELOW: ClassVar[int] = 110
    """Below this width, side-by-side columns stack (class 'narrow' on the screen)."""

    def on_resize(self) -> None:
        self.set_class(self.size.width < self.NARROW_BELOW, "narrow")

    def compose_top(self) -> ComposeResult:
        """What stays in view above the scrolling body (the Method step's ranking)."""
        yield from ()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def commit(self) -> bool:
        """Save this step's choices into the wizard state; False (after telling why) to stay."""
        return True

    def action_next(self) -> None:
        if self.commit():
            self.wizard.next_step()

    def action_back(self) -> None:
        self.commit_quietly()
        self.wizard.previous_step()

    def commit_quietly(self) -> None:
        """Going back keeps what is valid, without complaining about what is not."""

    @on(Button.Pressed, "#next")
    def _next_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_next()

    @on(Button.Pressed, "#back")
    def _back_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_back()
