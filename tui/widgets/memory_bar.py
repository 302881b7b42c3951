"""The estimate against this GPU's free memory: one bar, then the breakdown that makes it up."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from ftwiz.core.memory import GIB

COLOURS = ["#4EA8DE", "#7F5AF0", "#2A9D8F", "#E9C46A", "#F4A261", "#E76F51", "#9CA3AF", "#A3E635"]


class MemoryBar(Static):
    DEFAULT_CSS = """
    MemoryBar {
        height: auto;
        border: round $primary 50%;
        padding: 0 1;
    }
    """

    _shown: tuple[Any, int | None, int] | None = None

    def on_resize(self) -> None:
        if self._shown is not None:
            self.show(*self._shown)  # the legend's line breaks depend on the width

    def show(self, estimate: Any, free_bytes: int | None, width: int = 50) -> None:
        """estimate: core.memory.MemoryEstimate; free_bytes None means there is no GPU."""
        self._shown = (estimate, free_bytes, width)
        text = Text()
        need = estimate.required_bytes
        if free_bytes:
            scale = max(free_bytes, need)
            text.append("[")
            for i, (name, size) in enumerate(estimate.breakdown.items()):
                text.append("█" * round(width * size / scale), style=COLOURS[i % len(COLOURS)])
            overhead = need - estimate.peak_bytes
            text.append("▒" * round(width * max(overhead, 0) / scale), style="grey50")
            text.append("·" * max(0, width - (len(text.plain) - 1)), style="grey35")
            text.append("] ")
            fits = need <= free_bytes
            text.append(
                f"{need / GIB:.1f} / {free_bytes / GIB:.1f} GiB free  {'fits' if fits else 'DOES NOT FIT'}",
                style="bold green" if fits else "bold red",
            )
        else:
            text.append(f"needs {need / GIB:.1f} GiB on a GPU (no GPU here: the estimate is for planning)")
        text.append(
            f"\npeak allocated {estimate.peak_gib:.1f} GiB · reserved {estimate.reserved_gib:.1f} GiB · "
            f"nvidia-smi ~{estimate.nvidia_smi_gib:.1f} GiB\n",
            style="dim",
        )
        # Legend items never split: a line break goes before an item that would not fit whole.
        room = self.content_region.width or 76
        column = 0
        for i, (name, size) in enumerate(estimate.breakdown.items()):
            label = f"{name} {size / GIB:.2f} GiB"
            item = 2 + len(label)
            if column and column + 3 + item > room:
                text.append("\n")
                column = 0
            elif column:
                text.append("   ")
                column += 3
            text.append("■ ", style=COLOURS[i % len(COLOURS)])
            text.append(label)
            column += item
        self.update(text)
