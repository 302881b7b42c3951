"""Messages from the run-side workers (run follower, hardware sampler, merge) to their screens.

Posted from thread workers with post_message (thread-safe); each carries one batch, so a
fast run produces a few messages a second, not one per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class RunUpdated(Message):
    """New events / log lines / status of the followed run (a core.monitor.RunUpdate)."""

    update: Any


@dataclass
class HardwareSampled(Message):
    """One hardware sample (a core.monitor.HardwareSample): GPUs, or the run's RSS on CPU."""

    sample: Any


@dataclass
class RunsListed(Message):
    """The runs directory was scanned: a list of RunRow for the runs screen."""

    rows: list[Any]


@dataclass
class MergeFinished(Message):
    """`ftwiz merge` ended: ok, and its last output lines for the user."""

    ok: bool
    output: str


@dataclass
class ChatReady(Message):
    """The chat's models are loaded (core.chat.ChatSession.source says which)."""

    source: str


@dataclass
class ChatPiece(Message):
    """A piece of a streamed answer: side "tuned" or "base"."""

    side: str
    text: str


@dataclass
class ChatTurnDone(Message):
    """Both answers of a turn are complete (or the turn failed: error)."""

    error: str | None = None


@dataclass
class ExportFinished(Message):
    """`ftwiz export --gguf --ollama` ended: ok, and its last output lines."""

    ok: bool
    output: str


@dataclass
class ExportProgressed(Message):
    """A line of the export's progress (a core.export.ExportProgress), read from its JSON line."""

    progress: Any


@dataclass
class PushFinished(Message):
    """core.push.push ended: ok, and one line (the URL and file count, or the error)."""

    ok: bool
    output: str
