"""Follow a run directory from outside the run process, without Textual.

The dashboard calls `follow_run` and `sample_hardware` from thread workers; both loop until a
cancel event is set and hand each batch to a callback (the screen's post_message). Everything
here only reads the run directory, so it works the same for a run this app started and for one
started by another shell days ago. `RunTracker` folds events into what the dashboard shows, and
`IdleWatch` decides when an idle GPU holding memory deserves a warning.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ftwiz.core.events import (
    NOTICE_TYPES,
    CheckpointEvent,
    DownloadEvent,
    EvalEvent,
    Event,
    FinishedEvent,
    ModelEvent,
    ProbeEvent,
    RunStatus,
    SamplesEvent,
    StartedEvent,
    StepEvent,
    parse_event,
    parse_events,
)
from ftwiz.core.runs import FINAL_STATES, RunDir, list_runs

LOG_TAIL_BYTES = 64 * 1024
"""On (re)attach, show only the end of train.log: a long run's log can be hundreds of MB."""

log = logging.getLogger("ftwiz.monitor")

OVERFIT_RISE = 0.02
"""Evaluation loss this far (2%) above its best, with training loss still falling: overfitting."""


@dataclass
class RunUpdate:
    """One poll's news: new events, new log lines, and the status when it changed."""

    events: list[Event] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    status: RunStatus | None = None
    state: str | None = None

    def __bool__(self) -> bool:
        return bool(self.events or self.log_lines or self.status is not None)


class RunFollower:
    """Reads what is new in events.jsonl and train.log since the last poll (by byte offset)."""

    def __init__(self, run_dir: RunDir, log_tail_bytes: int = LOG_TAIL_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        self.run_dir = run_dir
        self.clock = clock
        self.event_offset = 0
        self.log_offset: int | None = None
        self.log_tail_bytes = log_tail_bytes
        self._partial = ""
        self._last_status: RunStatus | None = None
        self._last_state: str | None = None

    def poll(self) -> RunUpdate:
        records, self.event_offset = self.run_dir.read_events(self.event_offset)
        update = RunUpdate(events=parse_events(records), log_lines=self._read_log())
        status = self.run_dir.run_status()
        state = self.run_dir.state(self.clock())
        if status != self._last_status or state != self._last_state:
            self._last_status, self._last_state = status, state
            update.status, update.state = status, state
        return update

    def _read_log(self) -> list[str]:
        path = self.run_dir.log_path
        try:
            size = path.stat().st_size
        except OSError:
            return []
        if self.log_offset is None:
            self.log_offset = max(0, size - self.log_tail_bytes)
            skip_first = self.log_offset > 0  # started mid-line
        else:
            skip_first = False
        if size < self.log_offset:  # truncated or replaced: start over
            self.log_offset, self._partial = 0, ""
        if size == self.log_offset:
            return []
        with open(path, "rb") as handle:
            handle.seek(self.log_offset)
            data = handle.read(size - self.log_offset)
        self.log_offset += len(data)
        text = self._partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        if skip_first and lines:
            lines.pop(0)
        # Progress bars redraw with carriage returns: keep what the terminal would show last.
        return [line.rsplit("\r", 1)[-1] for line in lines if line.rsplit("\r", 1)[-1].strip()]

    @property
    def done(self) -> bool:
        """The run will write nothing more (final or crashed) and all of it has been read."""
        return self._last_state in FINAL_STATES or self._last_state == "crashed"


def follow_run(
    run_dir: RunDir,
    on_update: Callable[[RunUpdate], object],
    cancel: threading.Event,
    interval_s: float = 0.25,
    clock: Callable[[], float] = time.time,
    until_done: bool = True,
    idle_interval_s: float = 1.0,
) -> None:
    """Poll until cancelled or the run is over; one callback per poll that found news.

    Batching per poll is the coalescing: however fast the run writes, the UI gets at most
    1/interval_s messages a second. The clock judges heartbeat staleness (tests fix it).
    until_done=False (a dashboard left open): an ended run is still watched, every
    idle_interval_s, so that `ftwiz resume` from another shell shows up.
    """
    follower = RunFollower(run_dir, clock=clock)
    while not cancel.is_set():
        update = follower.poll()
        if update:
            on_update(update)
        elif follower.done:
            if until_done:
                return
            cancel.wait(max(interval_s, idle_interval_s))
            continue
        cancel.wait(interval_s)


# -- the dashboard's model of a run ------------------------------------------------------


@dataclass
class RunTracker:
    """What the dashboard shows, folded from events in order (pure; the screen only renders it)."""

    step: int = 0
    max_steps: int | None = None
    epoch: float | None = None
    eta_s: float | None = None
    tokens_per_s: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    spend_usd: float | None = None
    estimated_cost_usd: float | None = None
    """The whole run's cost at the probe's measured speed (probe event, status.json probe)."""
    examples_per_step: float | None = None
    """Examples an optimizer step holds (several per packed row; model event)."""
    started_t: float | None = None
    last_t: float | None = None
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    notice: Event | None = None
    finished: FinishedEvent | None = None
    samples_ready: bool = False
    last_checkpoint_step: int | None = None
    """The newest checkpoint saved (a resume continues from it); None: a resume starts over."""
    download: DownloadEvent | None = None
    """The model download's latest progress (download events, before `started`); None: none."""
    events_seen: int = 0

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            try:
                self._add(event)
            except (TypeError, ValueError, AttributeError) as exc:  # a field of the wrong shape: skip it
                log.warning("event skipped (%s): %.200r", exc, event)

    def _add(self, event: Event) -> None:
        self.events_seen += 1
        if event.t is not None:
            self.last_t = event.t
        if isinstance(event, DownloadEvent):
            self.download = event
        elif isinstance(event, StartedEvent):
            self.started_t = event.t
        elif isinstance(event, ModelEvent):
            self.max_steps = _known_steps(event.max_steps) or self.max_steps
            self.examples_per_step = _number(event.examples_per_step)
        elif isinstance(event, ProbeEvent):
            self.estimated_cost_usd = _number(event.estimated_cost_usd)
        elif isinstance(event, StepEvent):
            self._step(event)
        elif isinstance(event, EvalEvent) and _number(event.eval_loss) is not None:
            self.eval_loss.append((int(event.step if event.step is not None else self.step), float(event.eval_loss)))
        elif isinstance(event, SamplesEvent):
            self.samples_ready = True
        elif isinstance(event, CheckpointEvent):
            self.last_checkpoint_step = event.step if event.step is not None else self.step
        elif isinstance(event, FinishedEvent):
            self.finished = event
        if event.type in NOTICE_TYPES:
            self.notice = event

    def _step(self, event: StepEvent) -> None:
        if event.step is not None:
            self.step = int(event.step)
        self.max_steps = _known_steps(event.max_steps) or self.max_steps
        for name in ("epoch", "eta_s", "tokens_per_s", "learning_rate", "grad_norm", "spend_usd"):
            value = _number(getattr(event, name))  # a damaged field is skipped, not shown
            if value is not None:
                setattr(self, name, value)
        loss = _number(event.loss)
        if loss is not None:
            self.train_loss.append((self.step, loss))

    def apply_status(self, status: RunStatus) -> None:
        """status.json is rewritten with every heartbeat; it fills gaps before the first step event."""
        if status.step is not None and int(status.step) > self.step:
            self.step = int(status.step)
        if status.known_max_steps and not self.max_steps:
            self.max_steps = status.known_max_steps
        if status.epoch is not None and self.epoch is None:
            self.epoch = float(status.epoch)
        if self.estimated_cost_usd is None:
            self.estimated_cost_usd = _number(status.estimated_cost_usd)

    @property
    def downloading(self) -> bool:
        """The model's files are still coming (a download event, not the last, and no step yet)."""
        return self.download is not None and not self.download.done and not self.train_loss

    @property
    def last_loss(self) -> float | None:
        return self.train_loss[-1][1] if self.train_loss else None

    @property
    def last_eval_loss(self) -> float | None:
        return self.eval_loss[-1][1] if self.eval_loss else None

    @property
    def overfitting(self) -> str | None:
        """A warning when evaluation loss has risen since its best while training loss kept
        falling: the model is memorising its examples. None while that is not the case."""
        if len(self.eval_loss) < 2 or len(self.train_loss) < 2:
            return None
        best_step, best = min(self.eval_loss, key=lambda point: point[1])
        last_step, last = self.eval_loss[-1]
        if last_step <= best_step or last < best * (1 + OVERFIT_RISE):
            return None
        train_then = [loss for step, loss in self.train_loss if step <= best_step]
        train_now = self.train_loss[-1][1]
        if not train_then or train_now >= train_then[-1]:
            return None
        return (f"Overfitting: evaluation loss rose from {best:.3f} (step {best_step}) to {last:.3f} while "
                f"training loss fell to {train_now:.3f}. The model is memorising its examples: the "
                f"checkpoint near step {best_step} is likely the best; next time use fewer epochs, more "
                "data, or a lower learning rate.")


def download_size_text(done: float, total: float | None = None) -> str:
    """A download's bytes (binary units; export.size_text is for files): '4.1 of 16.1 GiB' (both in the total's unit), '512 MiB', '3.2 GiB'."""
    scale = total if isinstance(total, (int, float)) and total > 0 else done
    unit, div = ("GiB", 1024**3) if scale >= 1024**3 else ("MiB", 1024**2) if scale >= 1024**2 else ("KiB", 1024)
    digits = 1 if unit == "GiB" else 0
    if isinstance(total, (int, float)) and total > 0:
        return f"{done / div:.{digits}f} of {total / div:.{digits}f} {unit}"
    return f"{done / div:.{digits}f} {unit}"


def speed_text(bytes_per_s: float) -> str:
    """A download speed as download tools say it: '210 MB/s', '850 kB/s' (decimal units)."""
    if bytes_per_s >= 1e9:
        return f"{bytes_per_s / 1e9:.1f} GB/s"
    if bytes_per_s >= 1e6:
        return f"{bytes_per_s / 1e6:.0f} MB/s"
    return f"{bytes_per_s / 1e3:.0f} kB/s"


def time_left_text(seconds: float) -> str:
    """'~40 s left', '~3 min left', '~2 h 10 min left': rounded as a person would say it."""
    if seconds < 60:
        return f"~{max(1, round(seconds))} s left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"~{minutes} min left"
    return f"~{minutes // 60} h {minutes % 60} min left"


def download_text(event: DownloadEvent) -> str:
    """The dashboard's download line: 'Downloading meta-llama/Llama-3.1-8B: 3/5 files, 4.1 of
    16.1 GiB, 210 MB/s, ~1 min left'; when done, what came down and how fast."""
    model = event.model or "the model"
    files = f"{event.files_done}/{event.files_total} files" if isinstance(event.files_total, int) else None
    done = _number(event.bytes_done) or 0.0
    total = _number(event.bytes_total)
    if event.done:
        speed = f" at {speed_text(event.bytes_per_s)}" if _number(event.bytes_per_s) else ""
        return f"Downloaded {model}: {event.files_total} files, {download_size_text(total or done)}{speed}"
    parts = [files, download_size_text(done, total)]
    if _number(event.bytes_per_s) is not None:
        parts.append(speed_text(event.bytes_per_s))
        if _number(event.eta_s) is not None:
            parts.append(time_left_text(event.eta_s))
    else:
        parts.append("measuring the speed")
    return f"Downloading {model}: " + ", ".join(p for p in parts if p)


def known_total(max_steps: Any) -> int | None:
    """The run's total steps, or None while it is not known (the trainer's -1, 0, missing)."""
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, float)) or max_steps <= 0:
        return None
    return int(max_steps)


def steps_text(step: int | None, max_steps: Any) -> str:
    """'12/200', or '12/?' while the total is not known yet; '--' before any step."""
    if step is None:
        return "--"
    total = known_total(max_steps)
    return f"{step}/{total if total else '?'}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _known_steps(value: Any) -> int | None:
    """A step count, or None while unknown: a run on epochs has max_steps -1 until the
    Trainer has counted its steps (shown as "?", not as a full bar)."""
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def last_step_event(run_dir: RunDir, tail_bytes: int = 16 * 1024) -> StepEvent | None:
    """The newest step event, reading only the end of events.jsonl (for the runs list)."""
    try:
        size = run_dir.events_path.stat().st_size
    except OSError:
        return None
    start = max(0, size - tail_bytes)
    records, _ = run_dir.read_events(start)  # a cut first line fails to parse and is skipped
    for record in reversed(records):
        event = parse_event(record)
        if isinstance(event, StepEvent):
            return event
    return None


@dataclass(frozen=True)
class RunRow:
    """One line of the runs list."""

    name: str
    state: str
    step: int | None
    max_steps: int | None
    """None while unknown (a run on epochs, before the Trainer starts)."""
    last_loss: float | None
    age_s: float | None
    run_dir: RunDir


def scan_runs(runs_dir: str | os.PathLike, now: float) -> list[RunRow]:
    """Every run under runs_dir, newest first, with the figures the runs list shows."""
    rows = []
    for run in list_runs(runs_dir):
        try:
            status = run.run_status()
            last = last_step_event(run)
            heartbeat = _number(status.heartbeat)
            step = max((s for s in (status.step, last.step if last else None)
                        if isinstance(s, int) and not isinstance(s, bool)), default=None)
            rows.append(RunRow(
                name=run.name,
                state=run.state(now),
                # status.json's step moves every step; step events only every logging_steps.
                step=step,
                max_steps=(_known_steps(last.max_steps) if last else None) or status.known_max_steps,
                last_loss=_number(last.loss) if last else None,
                age_s=now - heartbeat if heartbeat is not None else None,
                run_dir=run,
            ))
        except Exception as exc:  # noqa: BLE001 - one damaged run never empties the list
            log.warning("run %s: unreadable (%s)", run.name, exc)
            rows.append(RunRow(name=run.name, state="unreadable", step=None, max_steps=None, last_loss=None,
                               age_s=None, run_dir=run))
    return rows


def watch_runs(
    runs_dir: str | os.PathLike,
    on_rows: Callable[[list[RunRow]], object],
    cancel: threading.Event,
    interval_s: float = 2.0,
    clock: Callable[[], float] = time.time,
) -> None:
    """Rescan until cancelled; call back only when something changed."""
    previous = None
    while not cancel.is_set():
        rows = scan_runs(runs_dir, clock())
        key = [(r.name, r.state, r.step, r.last_loss, None if r.age_s is None else int(r.age_s)) for r in rows]
        if key != previous:
            previous = key
            on_rows(rows)
        cancel.wait(interval_s)


# -- hardware --------------------------------------------------------------------------------

IDLE_UTILIZATION_PCT = 2.0
IDLE_AFTER_S = 60.0
HOLDING_MEMORY_BYTES = 512 * 1024**2


class IdleWatch:
    """Warns when a GPU has sat at ~0% utilization for IDLE_AFTER_S while memory is held.

    That is the signature of a run stuck in data loading, a deadlock, or a finished process
    that never let go: the user pays for the GPU and gets nothing.
    """

    def __init__(self, idle_after_s: float = IDLE_AFTER_S) -> None:
        self.idle_after_s = idle_after_s
        self._idle_since: dict[int, float] = {}

    def update(self, samples: Iterable[Any]) -> list[tuple[int, float]]:
        """(gpu index, idle seconds) for every GPU idle too long while holding memory."""
        idle = []
        for sample in samples:
            busy = (sample.utilization_pct or 0) > IDLE_UTILIZATION_PCT
            holding = (sample.memory_used_bytes or 0) > HOLDING_MEMORY_BYTES
            if busy or not holding:
                self._idle_since.pop(sample.index, None)
                continue
            since = self._idle_since.setdefault(sample.index, sample.t)
            if sample.t - since >= self.idle_after_s:
                idle.append((sample.index, sample.t - since))
        return idle


def make_gpu_sampler(backend: Any = None) -> Any | None:
    """A GpuSampler over the given backend (NVML when None), or None when none can work."""
    try:
        from ftwiz.core.hardware import GpuSampler

        return GpuSampler(backend)
    except Exception:  # noqa: BLE001 - no library/driver/GPU is a state, not an error
        return None


def process_rss_bytes(pid: int | None) -> int | None:
    """Resident memory of the training process and its children (CPU runs), or None if gone."""
    if not pid:
        return None
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its parent
            return None
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return total
    except psutil.Error:
        return None


@dataclass
class HardwareSample:
    """One second of hardware truth: GPU samples, or the run process's RSS on a CPU box."""

    t: float
    gpus: list[Any]
    rss_bytes: int | None = None
    ram_used_bytes: int | None = None
    ram_total_bytes: int | None = None


def machine_ram_bytes() -> tuple[int | None, int | None]:
    """(used, total) RAM of this machine; used = total - available, as `free` counts it."""
    import psutil

    try:
        memory = psutil.virtual_memory()
    except (OSError, RuntimeError):
        return None, None
    return memory.total - memory.available, memory.total


def sample_hardware(
    sampler: Any | None,
    pid_of_run: Callable[[], int | None],
    on_sample: Callable[[HardwareSample], object],
    cancel: threading.Event,
    interval_s: float = 1.0,
    clock: Callable[[], float] = time.time,
) -> None:
    """Sample GPUs (or, without GPUs, the run process's RSS and the machine's RAM) every
    interval until cancelled."""
    while not cancel.is_set():
        gpus: list[Any] = []
        if sampler is not None:
            try:
                gpus = list(sampler.sample())
            except Exception:  # noqa: BLE001 - a driver hiccup must not end the dashboard
                gpus = []
        if gpus:
            sample = HardwareSample(t=clock(), gpus=gpus)
        else:
            used, total = machine_ram_bytes()
            sample = HardwareSample(t=clock(), gpus=gpus, rss_bytes=process_rss_bytes(pid_of_run()),
                                    ram_used_bytes=used, ram_total_bytes=total)
        on_sample(sample)
        cancel.wait(interval_s)


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "--"
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def format_bytes_gib(value: float | None) -> str:
    return "--" if value is None else f"{value / 1024**3:.1f}"


def format_bytes(value: float | None) -> str:
    """GiB for GPU-sized figures, MiB below one GiB (a CPU demo run's RAM)."""
    if value is None:
        return "--"
    if value < 1024**3:
        return f"{value / 1024**2:.0f} MiB"
    return f"{value / 1024**3:.1f} GiB"


__all__ = [
    "download_text",
    "HardwareSample",
    "IdleWatch",
    "RunFollower",
    "RunRow",
    "RunTracker",
    "RunUpdate",
    "follow_run",
    "format_bytes",
    "format_bytes_gib",
    "format_duration",
    "known_total",
    "last_step_event",
    "machine_ram_bytes",
    "make_gpu_sampler",
    "process_rss_bytes",
    "sample_hardware",
    "scan_runs",
    "steps_text",
    "watch_runs",
]
