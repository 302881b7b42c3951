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
