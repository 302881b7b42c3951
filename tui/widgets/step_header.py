"""Where the user is in the wizard: '3/7 Model' and the trail of steps."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ftwiz.tui.state import STEPS


class StepHeader(Static):
    DEFAULT_CSS = """
    StepHeader {
        height: 1;
        padding: 0 1;
        background: $primary-muted;
        color: $text;
    }
    """

    def __init__(self, step: str, **kwargs) -> None:
        super().__init__(self.trail(step), **kwargs)
        self.step = step

    @staticmethod
    def trail(step: str) -> Text:
        keys = [key for key, _ in STEPS]
        index = keys.index(step)
        text = Text()
        text.append(f" {index + 1}/{len(STEPS)} ", style="bold reverse")
        text.append(" ftwiz  ", style="bold")
        for i, (_, title) in enumerate(STEPS):
            if i:
                text.append(" › ", style="dim")
            if i == index:
                text.append(title, style="bold underline")
            elif i < index:
                text.append(title)
            else:
                text.append(title, style="dim")
        return text
