"""The run directory's file formats, one typed definition each: events.jsonl, status.json,
samples.json (the schema in words is docs/events.md; tests/test_events.py holds the two alike).

The run process writes these files and the UI and the CLI read them, in different processes and
often in different versions of ftwiz. Both sides go through the classes below, so a field cannot
be written under one name and read under another:

- writers build an event (`StepEvent(step=..., loss=...)`) and hand it to `RunDir.emit`; the
  dataclass refuses a field it does not define (`RunDir.emit("step", lose=1.0)` is a TypeError);
- `RunDir.write_status` refuses a key that `RunStatus` does not define;
- readers turn a line into its class with `parse_event` and read attributes, so a misspelt
  field is an AttributeError in the first test that shows it, not a blank on a real run.

Parsing is tolerant, as a reader of a file written by another version must be: a field the
class does not know is dropped, a field the line lacks is None, a line of another schema
version or of an unknown type is skipped (None). Writing is strict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

EVENT_SCHEMA_VERSION = 1
"""Key "v" of every event; readers skip versions they do not know (docs/events.md)."""


# -- events.jsonl -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Event:
    """Fields every event has besides its type: `t` is stamped by RunDir.emit when written."""

    TYPE: ClassVar[str] = ""
    t: float | None = None
    v: int = EVENT_SCHEMA_VERSION

    @property
    def type(self) -> str:
        return self.TYPE

    def fields(self) -> dict[str, Any]:
        """The event's own fields (no v, t, type), as written: an optional field (one with a
        default) only when it has a value, e.g. a step's GPU memory only on a GPU."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("t", "v") and not (f.default is None and getattr(self, f.name) is None)
        }

    def to_record(self, t: float | None = None) -> dict[str, Any]:
        """The JSON object of one events.jsonl line."""
        return {"v": self.v, "t": self.t if t is None else t, "type": self.TYPE, **self.fields()}


EVENT_TYPES: dict[str, type[Event]] = {}
"""Event type name -> its class."""


def _event(name: str):
    def register(cls: type[Event]) -> type[Event]:
        cls.TYPE = name
        cls = dataclass(frozen=True, kw_only=True)(cls)
        EVENT_TYPES[name] = cls
        return cls

    return register


@_event("download")
class DownloadEvent(Event):
    model: str  # the Hub id the files come from
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int | None
    bytes_per_s: float | None
    eta_s: float | None
    done: bool


@_event("started")
class StartedEvent(Event):
    method: str
    model: str
    precision: str
    device: str
    world_size: int
    data_format: str | None
    train_examples: int
    eval_examples: int
    micro_batch: int
    grad_accum: int
    resumed_from: str | None
    pid: int
    gradient_checkpointing: bool | None = None


@_event("model")
class ModelEvent(Event):
    step: int
    max_steps: int
    trainable_params: int
    total_params: int
    lora_modules: int
    peft_wrappers: int
    rows_per_step: int | None = None  # micro-batch x accumulation x GPUs
    examples_per_step: float | None = None  # training examples those rows hold (several per packed row)


@_event("step")
class StepEvent(Event):
    step: int
    max_steps: int
    epoch: float | None
    loss: float
    learning_rate: float | None
    grad_norm: float | None
    tokens_per_s: float | None
    micro_batch: int
    grad_accum: int
    eta_s: float | None
    spend_usd: float | None
    gpu_mem_alloc_gib: float | None = None
    gpu_mem_reserved_gib: float | None = None
    gpu_mem_peak_gib: float | None = None
    gpus: list[dict[str, Any]] | None = None
    rss_gib: float | None = None


@_event("eval")
class EvalEvent(Event):
    step: int
    eval_loss: float
    epoch: float | None


@_event("checkpoint")
class CheckpointEvent(Event):
    path: str
    step: int


@_event("warning")
class WarningEvent(Event):
    message: str


@_event("info")
class InfoEvent(Event):
    message: str


@_event("probe")
class ProbeEvent(Event):
    fits: bool
    micro_batch: int
    grad_accum: int
    gradient_checkpointing: bool
    changed: bool
    changes: list[str]
    attempts: list[dict[str, Any]]
    tokens_per_s: float | None
    peak_gib: float | None
    optimizer_gib: float | None
    predicted_peak_gib: float | None
    budget_gib: float | None
    tokens_to_train: int | None
    estimated_time_s: float | None
    estimated_cost_usd: float | None
    duration_s: float | None


@_event("oom")
class OomEvent(Event):
    step: int
    attempt: int
    max_attempts: int
    micro_batch_old: int
    micro_batch_new: int
    grad_accum_old: int
    grad_accum_new: int
    resume_from: str | None
    message: str


@_event("nan")
class NanEvent(Event):
    step: int
    reason: str
    loss: float | None
    suggestion: str


@_event("limit")
class LimitEvent(Event):
    step: int
    limit: str
    value: float
    hours: float | None = None
    spend_usd: float | None = None


@_event("stopped")
class StoppedEvent(Event):
    step: int
    checkpoint: str | None = None
    reason: str | None = None
    adapter: str | None = None


@_event("stop_requested")
class StopRequestedEvent(Event):
    pid: int


@_event("killed")
class KilledEvent(Event):
    pid: int
    message: str


@_event("resumed")
class ResumedEvent(Event):
    previous_state: str


@_event("samples")
class SamplesEvent(Event):
    path: str
    count: int
    before: dict[str, float]
    after: dict[str, float]


@_event("error")
class ErrorEvent(Event):
    message: str
    suggestion: str | None


@_event("finished")
class FinishedEvent(Event):
    step: int
    adapter: str
    final_loss: float | None
    duration_s: float
    spend_usd: float | None
    demo_score: dict[str, Any] | None
    best_checkpoint: str | None = None  # the checkpoint whose weights the result holds (lowest eval loss)
    best_eval_loss: float | None = None
    evaluations: int | None = None
    early_stopped: bool | None = None


NOTICE_TYPES = frozenset({"oom", "nan", "warning", "error", "limit", "killed"})
"""Event types that deserve the user's attention (status line, log notice)."""


def make_event(type: str, **fields: Any) -> Event:
    """The event of this type with these fields; a field the type does not define is a TypeError."""
    cls = EVENT_TYPES.get(type)
    if cls is None:
        raise TypeError(f"unknown event type {type!r} (docs/events.md lists them; add it to core/events.py)")
    return cls(**fields)


def parse_event(record: Mapping[str, Any]) -> Event | None:
    """One events.jsonl object as its class; None for another schema version or an unknown type."""
    if not isinstance(record, Mapping) or record.get("v") != EVENT_SCHEMA_VERSION:
        return None
    cls = EVENT_TYPES.get(record.get("type"))  # type: ignore[arg-type]
    if cls is None:
        return None
    return cls(**{f.name: record.get(f.name) for f in dataclasses.fields(cls)})


def parse_events(records: Iterable[Mapping[str, Any]]) -> list[Event]:
    return [event for event in map(parse_event, records) if event is not None]


def notice_text(event: Event) -> str:
    """What an event that deserves attention says in one line, from its own fields."""
    if isinstance(event, (WarningEvent, KilledEvent, ErrorEvent)):
        return event.message or ""
    if isinstance(event, OomEvent):
        return f"{event.message} (micro-batch now {event.micro_batch_new})" if event.micro_batch_new else event.message
    if isinstance(event, NanEvent):
        return event.reason or ""
    if isinstance(event, LimitEvent):
        if event.limit == "max_cost" and event.value is not None:
            spent = f" (spent ${event.spend_usd:,.2f})" if event.spend_usd is not None else ""
            return f"max_cost ${event.value:,.2f}{spent}: saving and stopping"
        if event.limit == "max_hours" and event.value is not None:
            ran = f" (ran {event.hours:.2f} h)" if event.hours is not None else ""
            return f"max_hours {event.value:g}{ran}: saving and stopping"
        return str(event.limit or "")
    return ""


# -- status.json --------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ProbeSummary:
    """status.json's `probe`: the probe's measured figures that replace the plan's estimates."""

    tokens_per_s: float | None = None
    estimated_time_s: float | None = None
    estimated_cost_usd: float | None = None
    peak_gib: float | None = None
    predicted_peak_gib: float | None = None
    changes: list[str] = field(default_factory=list)

    @classmethod
    def from_probe(cls, probe: ProbeEvent) -> ProbeSummary:
        return cls(**{f.name: getattr(probe, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True, kw_only=True)
class RunStatus:
    """status.json: rewritten whole (atomically) by the run process, its heartbeat thread and
    the commands that start, stop and resume it (RunDir.write_status)."""

    state: str | None = None
    pid: int | None = None
    worker_pid: int | None = None
    step: int | None = None
    max_steps: int | None = None
    epoch: float | None = None
    heartbeat: float | None = None
    exit_code: int | None = None
    created: float | None = None
    launched: float | None = None
    gpus: int | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    oom_count: int | None = None
    gradient_checkpointing: bool | None = None
    probe: ProbeSummary | None = None
    spent_s: float | None = None
    pid_started: float | None = None
    pid_cmdline: list[str] | None = None
    data: dict[str, Any] | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> RunStatus:
        if not isinstance(data, Mapping):
            return cls()
        values = {f.name: data.get(f.name) for f in dataclasses.fields(cls)}
        probe = values["probe"]
        values["probe"] = _parse_flat(ProbeSummary, probe) if isinstance(probe, Mapping) else None
        return cls(**values)

    @property
    def known_max_steps(self) -> int | None:
        """max_steps when known: a run on epochs writes -1 until the Trainer has counted them."""
        return self.max_steps if isinstance(self.max_steps, int) and self.max_steps > 0 else None

    @property
    def estimated_cost_usd(self) -> float | None:
        return self.probe.estimated_cost_usd if self.probe else None


STATUS_FIELDS = frozenset(f.name for f in dataclasses.fields(RunStatus))


def check_status_fields(updates: Mapping[str, Any]) -> None:
    """A status.json key RunStatus does not define is a TypeError (writers only)."""
    unknown = sorted(set(updates) - STATUS_FIELDS)
    if unknown:
        raise TypeError(f"status.json has no field {', '.join(unknown)} (core/events.py RunStatus)")
    probe = updates.get("probe")
    if isinstance(probe, Mapping):
        ProbeSummary(**probe)


def status_record(**updates: Any) -> dict[str, Any]:
    """Updates for status.json as JSON values (a ProbeSummary becomes its mapping)."""
    check_status_fields(updates)
    return {k: dataclasses.asdict(v) if isinstance(v, ProbeSummary) else v for k, v in updates.items()}


# -- samples.json -------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SampleRow:
    """One held-out example: its prompt, the reference answer, and both models' outputs."""

    prompt: str | None = None
    reference: str | None = None
    before: str | None = None
    after: str | None = None

    @property
    def exact_match(self) -> bool | None:
        if isinstance(self.reference, str) and isinstance(self.after, str):
            return self.after.strip() == self.reference.strip()
        return None


@dataclass(frozen=True, kw_only=True)
class SamplesFile:
    """samples.json: scores before and after training, and the rows they were measured on."""

    count: int | None = None
    metric: str | None = None
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    examples: list[SampleRow] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def score(self) -> dict[str, Any]:
        """The scores without the rows: the `finished` event's demo_score."""
        return {"count": self.count, "metric": self.metric, "before": self.before, "after": self.after}

    @classmethod
    def parse(cls, data: Any) -> SamplesFile:
        if not isinstance(data, Mapping):
            return cls()
        count, metric = data.get("count"), data.get("metric")
        examples = data.get("examples")
        return cls(
            count=count if isinstance(count, int) and not isinstance(count, bool) else None,
            metric=metric if isinstance(metric, str) else None,
            before=dict(data["before"]) if isinstance(data.get("before"), Mapping) else {},
            after=dict(data["after"]) if isinstance(data.get("after"), Mapping) else {},
            examples=[_parse_flat(SampleRow, row) for row in examples if isinstance(row, Mapping)]
            if isinstance(examples, list) else [],
        )

    @property
    def scores(self) -> list[tuple[str, float | None, float | None]]:
        """(metric, before, after) for every metric either side reports."""
        return [(m, self.before.get(m), self.after.get(m)) for m in dict.fromkeys([*self.before, *self.after])]


def _parse_flat(cls: Any, data: Mapping[str, Any]) -> Any:
    return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


__all__ = [
    "EVENT_SCHEMA_VERSION",
    "EVENT_TYPES",
    "NOTICE_TYPES",
    "CheckpointEvent",
    "DownloadEvent",
    "ErrorEvent",
    "EvalEvent",
    "Event",
    "FinishedEvent",
    "InfoEvent",
    "KilledEvent",
    "LimitEvent",
    "ModelEvent",
    "NanEvent",
    "OomEvent",
    "ProbeEvent",
    "ProbeSummary",
    "ResumedEvent",
    "RunStatus",
    "SampleRow",
    "SamplesEvent",
    "SamplesFile",
    "StartedEvent",
    "StepEvent",
    "StoppedEvent",
    "WarningEvent",
    "check_status_fields",
    "make_event",
    "notice_text",
    "parse_event",
    "parse_events",
    "status_record",
]
