"""Messages: the only channel from background work to the UI (posted from worker threads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class HardwareDetected(Message):
    """core.hardware answered; screens that show hardware refresh."""

    hardware: Any


@dataclass
class ModelInfoLoaded(Message):
    """core.models.load_model_info answered for the spec the user typed (info None on error)."""

    spec: str
    info: Any
    error: str | None = None


@dataclass
class DataValidated(Message):
    """core.data validated a dataset: its report and one rendered example (None on error)."""

    spec: str
    report: Any
    example: Any
    error: str | None = None


@dataclass
class PlanReady(Message):
    """core.plan answered for the current settings (plan None and error set when they are invalid)."""

    plan: Any
    error: str | None = None


@dataclass
class RunStarted(Message):
    """core.engine.start_run created the run directory and started the run process."""

    run_dir: Any


@dataclass
class CapabilitiesEstimated(Message):
    """Rows of 'what this hardware can train': model, params, then one cell per method."""

    rows: list[tuple[str, ...]]


@dataclass
class MethodMemory(Message):
    """Peak memory per method for a model on this GPU: (method, peak, verdict) rows."""

    model: str
    rows: list[tuple[str, str, str]]


@dataclass
class BlockersChecked(Message):
    """core.checks.blocking_problems answered for the Review step's config (empty: it can start)."""

    problems: list[str]
