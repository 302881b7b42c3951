"""Progress of a run: the bar, step/epoch/ETA/throughput, and the money spent against the plan;
before training, the model's download (files, bytes, speed, time left)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from ftwiz.core.monitor import RunTracker, download_text, format_duration, known_total, steps_text


def progress_line(tracker: RunTracker, elapsed_s: float | None, active: bool = True) -> str:
    """How far the run is; an ETA only while it trains (a stopped run has none)."""
    parts = [f"step {steps_text(tracker.step, tracker.max_steps)}"]
    if tracker.epoch is not None:
        parts.append(f"epoch {tracker.epoch:.2f}")
    if tracker.last_loss is not None:
        loss = f"loss {tracker.last_loss:.4f}"
        if tracker.last_eval_loss is not None:
            loss += f" (eval {tracker.last_eval_loss:.4f})"
        parts.append(loss)
    if active:
        parts.append(f"ETA {format_duration(tracker.eta_s)}")
    if elapsed_s is not None:
        parts.append(f"elapsed {format_duration(elapsed_s)}")
    if tracker.tokens_per_s is not None:
        parts.append(f"{tracker.tokens_per_s:,.0f} tok/s")
    if tracker.learning_rate is not None:
        parts.append(f"lr {tracker.learning_rate:.2e}")
    if tracker.examples_per_step is not None:
        parts.append(f"~{tracker.examples_per_step:g} examples a step")
    return " · ".join(parts)


def spend_line(spent: float | None, estimate: float | None, budget: float | None, cpu: bool = False) -> str:
    """The spend so far next to what the plan said and the hard limit, if any."""
    if spent is None and cpu:
        text = "spent: -- (a CPU run: no GPU-hours to count)"
    elif spent is None:
        text = "spent: -- (no GPU price set)"
    else:
        text = f"spent ${spent:,.2f}"
    if estimate is not None:
        text += f" · plan ${estimate:,.2f}"
    if budget is not None:
        text += f" · budget ${budget:,.2f}"
        if spent is not None:
            text += f" ({spent / budget:.0%} used)"
    return text


class RunProgress(Vertical):
    """The top of the dashboard: how far, how fast, how much."""

    DEFAULT_CSS = """
    RunProgress { height: auto; }
    RunProgress ProgressBar { width: 1fr; }
    RunProgress ProgressBar Bar { width: 1fr; }
    RunProgress Static { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    RunProgress #run-progress-spend { color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        yield ProgressBar(total=None, show_eta=False, id="run-progress-bar")
        yield Static("waiting for the first step…", id="run-progress-line", markup=False)
        yield Static("", id="run-progress-spend", markup=False)

    def show(
        self,
        tracker: RunTracker,
        *,
        elapsed_s: float | None = None,
        estimated_cost_usd: float | None = None,
        budget_usd: float | None = None,
        cpu: bool = False,
        active: bool = True,
    ) -> None:
        bar = self.query_one("#run-progress-bar", ProgressBar)
        total = known_total(tracker.max_steps)
        download = tracker.download
        if tracker.downloading and download is not None:  # before training: the bar is the download's
            if download.bytes_total:
                bar.update(total=download.bytes_total, progress=min(download.bytes_done or 0, download.bytes_total))
            else:
                bar.update(total=None)
            self._set("#run-progress-line", download_text(download))
        elif total:
            bar.update(total=total, progress=min(tracker.step, total))
        else:  # not known yet: the indeterminate bar, never a full one
            bar.update(total=None)
        if not tracker.downloading:
            self._set("#run-progress-line", progress_line(tracker, elapsed_s, active))
        self._set("#run-progress-spend", spend_line(tracker.spend_usd, estimated_cost_usd, budget_usd, cpu))

    def _set(self, selector: str, text: str) -> None:
        """Fixed one-line widgets: skip the screen-wide layout pass an update would cost."""
        static = self.query_one(selector, Static)
        if str(static.content) != text:
            static.update(text, layout=False)


def first_number(*candidates: Any) -> float | None:
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None
