"""The dashboard says how many examples an optimizer step holds (issue 12): with packing a row
holds several examples, so rows x accumulation is not the guide's batch."""

from __future__ import annotations

from types import SimpleNamespace

from ftwiz.core.engine.process import Hooks
from ftwiz.core.monitor import RunTracker
from ftwiz.tui.widgets.run_progress import progress_line


def test_engine_counts_examples_in_packed_rows(monkeypatch):
    hooks = Hooks.__new__(Hooks)
    hooks.micro_batch, hooks.grad_accum, hooks.examples_per_row = 2, 4, 173 / 46  # 173 examples packed in 46 rows
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert hooks.batch_in_examples() == {"rows_per_step": 16, "examples_per_step": round(16 * 173 / 46, 1)}


def test_dashboard_progress_line_shows_examples_a_step():
    from ftwiz.core.events import EVENT_SCHEMA_VERSION, parse_events

    def events(*records):
        return parse_events([{"v": EVENT_SCHEMA_VERSION, **r} for r in records])

    model = {"type": "model", "t": 1.0, "step": 0, "max_steps": 20, "trainable_params": 1, "total_params": 2,
             "lora_modules": 1, "peft_wrappers": 1}
    tracker = RunTracker()
    tracker.add(events({**model, "rows_per_step": 2, "examples_per_step": 7.5}))
    assert tracker.examples_per_step == 7.5
    assert progress_line(tracker, None).endswith("~7.5 examples a step")
    older = RunTracker()  # a run from before the field: nothing claimed
    older.add(events(model))
    assert "examples a step" not in progress_line(older, None)


def test_examples_per_row_from_the_datasets_before_and_after_packing():
    from ftwiz.core.engine.process import examples_per_row

    assert examples_per_row(range(173), range(46)) == 173 / 46
    assert examples_per_row(range(10), iter(range(3))) == 1.0  # an iterable dataset: no length, no claim
