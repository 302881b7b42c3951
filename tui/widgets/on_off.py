"""A checkbox that reads as its value: the box is empty when off (Checkbox draws its X in both
states, dimmed when off, so "▐X▌ off" read as checked)."""

from __future__ import annotations

from textual.widgets import Checkbox


class OnOff(Checkbox):
    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]  # the class constant, per value here
        return "X" if self.value else " "
