"""The live log pane: train.log lines plus one-line notices for the events that matter."""

from __future__ import annotations

from textual.widgets import Log

from ftwiz.core.events import NOTICE_TYPES, CheckpointEvent, DownloadEvent, Event, SamplesEvent, notice_text
from ftwiz.core.monitor import download_text

MAX_LINES = 2000
"""Bounded: a run prints for hours; the full text stays in train.log."""

_ICONS = {
    "started": "▶",
    "checkpoint": "✓",
    "samples": "✓",
    "finished": "✓",
    "warning": "⚠",
    "oom": "⚠",
    "nan": "⚠",
    "limit": "■",
    "error": "✗",
    "killed": "✗",
}

_TITLES = {
    "started": "run started",
    "checkpoint": "checkpoint saved",
    "samples": "before/after samples saved",
    "finished": "run finished",
    "warning": "warning",
    "oom": "out of GPU memory",
    "nan": "loss is NaN",
    "limit": "limit reached",
    "error": "error",
    "killed": "killed",
}


def format_event(event: Event) -> str | None:
    """One log line for an event worth a line (step and eval events are the chart's job; a
    download's progress is the progress line's, its end gets a line)."""
    kind = event.type
    if isinstance(event, DownloadEvent):
        return f"✓ {download_text(event)}" if event.done else None
    if kind not in _TITLES:
        return None
    text = f"{_ICONS[kind]} {_TITLES[kind]}"
    step = getattr(event, "step", None)
    if step is not None:
        text += f" at step {step}"
    if isinstance(event, (CheckpointEvent, SamplesEvent)):
        detail = event.path
    else:
        detail = notice_text(event) if kind in NOTICE_TYPES else None
    if detail:
        text += f": {detail}"
    return text


class RunLog(Log):
    """A bounded Log fed in batches (one write per poll, not one per line)."""

    DEFAULT_CSS = """
    RunLog { height: 1fr; min-height: 4; border: round $panel; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(max_lines=MAX_LINES, id=id, classes=classes)
        self.following = True
        """Keep the newest line in view; off while the user has scrolled up to read."""

    def add(self, log_lines: list[str], events: list[Event]) -> None:
        lines = list(log_lines)
        lines.extend(line for line in map(format_event, events) if line)
        if not lines:
            return
        # Follow the tail unless the user scrolled up to read; Log's own check misfires when a
        # batch lands before the first layout, leaving the pane stuck above the newest lines.
        self.write_lines(lines, scroll_end=False)
        if self.following:
            self.scroll_end(animate=False, x_axis=False)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        # Scrolled up by the user: stop following until they come back to the end. (A pane made
        # smaller moves its bottom without moving scroll_y; on_resize catches that.)
        self.following = new >= self.max_scroll_y - 1

    def on_resize(self) -> None:
        """A resized pane has a new bottom: a log that followed the tail goes on following it."""
        if self.following:
            self.call_after_refresh(self.scroll_end, animate=False, x_axis=False)
