"""Runs in the runs directory, running and finished; Enter reattaches to one.

This is how a user gets back after a dropped SSH connection: `ftwiz` lists the run that kept
training, Enter opens its live dashboard again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState

from ftwiz.core.monitor import RunRow, format_duration, steps_text, watch_runs
from ftwiz.tui.run_messages import RunsListed

STATE_LABELS = {
    "crashed": "crashed (process gone)",
    "starting": "starting",
    "running": "running",
    "stopping": "stopping",
    "stalled": "stalled (no heartbeat)",
}


COLUMNS = (("run", "name"), ("state", "state"), ("step", "step"), ("last loss", "loss"), ("updated", "age"))


def row_cells(row: RunRow) -> tuple[str, ...]:
    steps = steps_text(row.step, row.max_steps)
    loss = "--" if row.last_loss is None else f"{row.last_loss:.4f}"
    age = "--" if row.age_s is None else f"{format_duration(max(0.0, row.age_s))} ago"
    return (row.name, STATE_LABELS.get(row.state, row.state), steps, loss, age)


class RunsScreen(Screen):
    """All runs, newest first; live runs first in mind: Enter on one opens its dashboard."""

    CSS_PATH = "../tui/run.tcss"
    BINDINGS = [
        Binding("enter", "open", "Open", show=True),
        Binding("escape", "back", "New fine-tune"),  # the list sits over the wizard's first step
    ]

    def __init__(
        self,
        runs_dir: str | Path = "runs",
        *,
        clock: Callable[[], float] | None = None,
        refresh_s: float = 2.0,
        train_screen_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.rows: dict[str, RunRow] = {}
        self._clock = clock
        self._refresh_s = refresh_s
        self._train_options = train_screen_options or {}
        self._cancel = threading.Event()

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock or getattr(self.app, "clock", None) or time.time

    def compose(self) -> ComposeResult:
        yield Static(f"Runs in {self.runs_dir}", classes="run-title", markup=False)
        yield Static(
            f"No runs in {self.runs_dir} yet. Start one from the wizard or with `ftwiz train`.",
            id="runs-empty",
            markup=False,
        )
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("Enter opens a run: the live dashboard while it trains, its results when done. "
                     "Esc starts a new fine-tune.",
                     classes="run-hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._watch()

    def on_unmount(self) -> None:
        self._cancel.set()

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs-scan",
          description="scan the runs directory")
    def _watch(self) -> None:
        watch_runs(self.runs_dir, lambda rows: self.post_message(RunsListed(rows)), self._cancel,
                   self._refresh_s, self.clock)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.notify(f"{event.worker.description}: {event.worker.error}", severity="error")

    def on_runs_listed(self, message: RunsListed) -> None:
        table = self.query_one("#runs-table", DataTable)
        selected = self._selected_name()
        self.rows = {row.name: row for row in message.rows}
        cells = [row_cells(row) for row in message.rows]
        # Columns are rebuilt with explicit widths: DataTable's auto widths, measured on idle,
        # leave rows drawn before the measurement cut at the header's width.
        table.clear(columns=True)
        for index, (label, key) in enumerate(COLUMNS):
            table.add_column(label, key=key, width=max([len(label)] + [len(c[index]) for c in cells]))
        for row, row_cells_ in zip(message.rows, cells):
            table.add_row(*row_cells_, key=row.name)
        if selected in self.rows:
            table.move_cursor(row=table.get_row_index(selected), animate=False)
        self.query_one("#runs-empty", Static).set_class(not message.rows, "-visible")

    def _selected_name(self) -> str | None:
        table = self.query_one("#runs-table", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.open_run(event.row_key.value)

    def action_open(self) -> None:
        self.open_run(self._selected_name())

    def open_run(self, name: str | None) -> None:
        """Finished runs open on their results; every other state on the dashboard."""
        row = self.rows.get(name or "")
        if row is None:
            return
        if row.state == "finished":
            from ftwiz.screens.done import DoneScreen

            self.app.push_screen(DoneScreen(row.run_dir))
        else:
            from ftwiz.screens.train import TrainScreen

            self.app.push_screen(TrainScreen(row.run_dir, **self._train_options))

    def action_back(self) -> None:
        leave = getattr(self.app, "leave_screen", None)  # the wizard: never down to a blank screen
        if leave is not None:
            leave()
        elif len(self.app.screen_stack) > 1:
            self.app.pop_screen()
