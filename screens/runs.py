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
        Binding("r", "resume", "Resume"),
        Binding("s", "stop", "Stop"),
        Binding("x,delete", "delete", "Delete"),
        Binding("escape", "back", "Back"),  # to the screen below: the wizard's step, or a dashboard
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
        yield Static("Enter opens a run: its live dashboard, or its results when done. Esc goes back.",
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

    # -- resume, stop, delete: core does it, the list shows the outcome on its next scan ------
    def _selected_row(self) -> RunRow | None:
        row = self.rows.get(self._selected_name() or "")
        if row is None:
            self.notify("No run selected", severity="warning")
        return row

    def action_resume(self) -> None:
        row = self._selected_row()
        if row is not None:
            self.notify(f"Resuming {row.name} from its newest checkpoint…", title="Resume")
            self._resume(row)

    @work(thread=True, exclusive=True, exit_on_error=False, group="run-resume",
          description="Resuming the run")
    def _resume(self, row: RunRow) -> None:
        from ftwiz.core.engine.launch import resume_run

        resume_run(row.run_dir)
        self.app.call_from_thread(self._open_dashboard, row)

    def _open_dashboard(self, row: RunRow) -> None:
        from ftwiz.screens.train import TrainScreen

        if self.is_attached:
            self.app.push_screen(TrainScreen(row.run_dir, **self._train_options))

    def action_stop(self) -> None:
        row = self._selected_row()
        if row is None:
            return
        try:
            result = row.run_dir.stop()
        except OSError as exc:
            self.notify(f"Could not stop {row.name}: {exc}", severity="error")
            return
        messages = {
            "not-running": f"{row.name} is not running ({row.state}).",
            "stopping": f"Stopping {row.name}: it saves a checkpoint, then exits (s again kills it).",
            "killed": f"Killed {row.name}: `r` resumes it from its last checkpoint.",
        }
        self.notify(messages.get(result, result), title="Stop")

    def action_delete(self) -> None:
        from ftwiz.core.runs import ACTIVE_STATES, STALLED
        from ftwiz.tui.widgets.confirm import ConfirmScreen

        row = self._selected_row()
        if row is None:
            return
        if row.state in ACTIVE_STATES or row.state == STALLED:
            self.notify(f"{row.name} is {row.state}: stop it first (s).", severity="warning")
            return
        self.app.push_screen(
            ConfirmScreen(f"Delete {row.run_dir.path} with its adapter, checkpoints and log? "
                          "This cannot be undone."),
            lambda yes: self._delete(row) if yes else None,
        )

    def _delete(self, row: RunRow) -> None:
        from ftwiz.core.errors import UserError
        from ftwiz.core.runs import delete_run

        try:
            delete_run(row.run_dir, self.clock())
        except (UserError, OSError) as exc:
            self.notify(str(exc), severity="error", title="Not deleted")
            return
        self.notify(f"Deleted {row.name}", title="Deleted")
        self.post_message(RunsListed([r for r in self.rows.values() if r.name != row.name]))

    def action_back(self) -> None:
        leave = getattr(self.app, "leave_screen", None)  # the wizard: never down to a blank screen
        if leave is not None:
            leave()
        elif len(self.app.screen_stack) > 1:
            self.app.pop_screen()
