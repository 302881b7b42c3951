"""The training dashboard: follows a run directory live; never owns the run process.

Everything it shows comes from the run directory (events.jsonl, status.json, train.log,
config.yaml) and from the hardware sampler, read by thread workers in core/monitor.py.
Closing the app or this screen leaves the run going.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, Static
from textual.worker import Worker, WorkerState

from ftwiz.core.events import ErrorEvent, RunStatus, notice_text
from ftwiz.core.monitor import (
    IdleWatch,
    RunTracker,
    follow_run,
    format_bytes_gib,
    format_duration,
    make_gpu_sampler,
    sample_hardware,
)
from ftwiz.core.runs import ACTIVE_STATES, RunDir
from ftwiz.tui.run_messages import HardwareSampled, RunUpdated
from ftwiz.tui.widgets.loss_chart import LossChart
from ftwiz.tui.widgets.run_log import RunLog
from ftwiz.tui.widgets.run_progress import RunProgress, first_number
from ftwiz.tui.widgets.vram import VramPane

RESUMABLE_STATES = frozenset({"stopped", "failed", "killed", "crashed"})
"""States `ftwiz resume` (r on the dashboard and the runs list) continues from."""

AUTO = "auto"
"""gpu_sampler=AUTO: sample NVML through the app's hardware backend (or the real one)."""


def state_notice(state: str, name: str, last_error: str | None,
                 checkpoint_step: int | None = None) -> tuple[str, str] | None:
    """(text, severity) for a run that is no longer training, telling what to do next (a resume
    continues from the last checkpoint, or starts over when none was saved)."""
    resume = (f"r (or `ftwiz resume {name}`) continues from the checkpoint at step {checkpoint_step}"
              if checkpoint_step is not None else
              f"no checkpoint was saved, so r (or `ftwiz resume {name}`) starts it over")
    if state == "finished":
        return "Run finished. Press d for the adapter, samples and how to use it.", "success"
    if state == "stalled":
        return (f"Run stalled: its process is alive but has not reported for minutes (hung?). "
                f"See the log; s stops it (press twice to kill), then `ftwiz resume {name}`.", "warning")
    if state == "stopped":
        return f"Run stopped; {resume}.", "warning"
    if state in ("failed", "killed", "crashed"):
        reason = f": {last_error}" if last_error else ""
        return f"Run {state}{reason}. See the log; {resume}.", "error"
    return None


class ConfirmForceStop(ModalScreen[bool]):
    """Second Stop press: killing loses the steps since the last checkpoint, so ask first."""

    BINDINGS = [Binding("y", "answer(True)", "Force stop"), Binding("n,escape", "answer(False)", "Cancel")]

    def __init__(self, run_name: str) -> None:
        super().__init__()
        self.run_name = run_name

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                f"Force-stop {self.run_name}? The process is killed now; steps since the last "
                "checkpoint are lost. (A graceful stop is already under way.)"
            )
            with Horizontal():
                yield Button("Kill it (y)", variant="error", id="force-yes")
                yield Button("Keep waiting (n)", id="force-no")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "force-yes")


class TrainScreen(Screen):
    """Live dashboard of one run: progress, loss chart, VRAM, log, spend, stop."""

    CSS_PATH = "../tui/run.tcss"
    BINDINGS = [
        Binding("s", "stop", "Stop run"),
        Binding("r", "resume", "Resume"),
        Binding("d", "done", "Results"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self,
        run_dir: RunDir,
        *,
        gpu_sampler: Any = AUTO,
        clock: Callable[[], float] | None = None,
        poll_interval_s: float = 0.25,
        sample_interval_s: float = 1.0,
        refresh_interval_s: float = 0.25,
        idle_after_s: float | None = None,
    ) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.tracker = RunTracker()
        self.state = "unknown"
        self.status = RunStatus()
        self.config = run_dir.read_config()
        self._gpu_sampler = gpu_sampler
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._sample_interval_s = sample_interval_s
        self._idle = IdleWatch() if idle_after_s is None else IdleWatch(idle_after_s)
        self._cancel = threading.Event()
        self._stop_requested = False
        self._refresh_interval_s = refresh_interval_s
        self._dirty = self._chart_dirty = False

    # -- layout -----------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="run-title", classes="run-title", markup=False)
        yield Static("", id="run-banner", classes="run-banner", markup=False)
        yield RunProgress(id="run-progress")
        with Horizontal(id="run-middle"):
            yield LossChart(id="loss-chart")
            yield VramPane(id="vram")
        yield RunLog(id="run-log")
        yield Static("", id="run-notice", markup=False)
        tracker = self._tracker_line()
        if tracker:
            yield Static(tracker, id="run-tracker", classes="run-hint", markup=False)
        yield Static(self._quit_hint(), id="run-quit-hint", classes="run-hint", markup=False)
        yield Footer()

    def _tracker_line(self) -> str | None:
        """Where training.report_to sends a copy of the logs (None: no tracker)."""
        from ftwiz.core.tracking import where_logs_go

        report_to = (self.run_dir.read_config().get("training") or {}).get("report_to") or "none"
        where = where_logs_go(self.run_dir.path, report_to)
        return f"Logs also go to {where}" if where else None

    def _quit_hint(self) -> str:
        name = self.run_dir.name
        if self.state in ACTIVE_STATES or self.state in ("unknown", "stalled"):
            return f"Quitting leaves the run going; come back: `ftwiz` or `ftwiz attach {name}`"
        return f"Later: `ftwiz` lists this run with the others; `ftwiz attach {name}` reopens it"

    def _title(self) -> str:
        model = (self.config.get("model") or {}).get("name_or_path", "?")
        method = self.config.get("method", "?")
        return f"Run {self.run_dir.name} · {self.state} · {method} on {model}"

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock or getattr(self.app, "clock", None) or time.time

    def on_mount(self) -> None:
        self.query_one("#vram", VramPane).border_title = "memory"
        self.query_one("#loss-chart", LossChart).border_title = "loss"
        self.query_one("#run-log", RunLog).border_title = "log"
        self._render_progress()
        self.set_interval(self._refresh_interval_s, self._flush)
        self._follow()
        self._sample()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= 110 and self.size.height >= 34, "-wide")

    def on_unmount(self) -> None:
        self._cancel.set()

    # -- workers: all file and NVML reads happen off the event loop ----------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="run-follow",
          description="follow events.jsonl, status.json and train.log")
    def _follow(self) -> None:
        follow_run(self.run_dir, lambda update: self.post_message(RunUpdated(update)),
                   self._cancel, self._poll_interval_s, self.clock, until_done=False)

    @work(thread=True, exclusive=True, exit_on_error=False, group="gpu-poll",
          description="sample GPU memory, utilization, temperature and power")
    def _sample(self) -> None:
        sampler = self._gpu_sampler
        if sampler is AUTO:
            sampler = make_gpu_sampler(getattr(self.app, "hardware_backend", None))
        try:
            sample_hardware(
                sampler,
                lambda: self.run_dir.run_status().pid,
                lambda sample: self.post_message(HardwareSampled(sample)),
                self._cancel,
                self._sample_interval_s,
                self.clock,
            )
        finally:
            if hasattr(sampler, "close"):
                sampler.close()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.notify(f"{event.worker.description}: {event.worker.error}", severity="error",
                        title="Background task failed")

    # -- updates ----------------------------------------------------------------------
    def on_run_updated(self, message: RunUpdated) -> None:
        update = message.update
        self.tracker.add(update.events)
        if update.status is not None:
            self.status = update.status
            self.tracker.apply_status(update.status)
        if update.state is not None and update.state != self.state:
            if update.state in ACTIVE_STATES and self.state not in ACTIVE_STATES:
                self._stop_requested = False  # resumed (here or from another shell)
                self.tracker.finished = None
            self.state = update.state
            self.query_one("#run-title", Static).update(self._title())
            self.query_one("#run-quit-hint", Static).update(self._quit_hint())
            self.refresh_bindings()
        self.query_one("#run-log", RunLog).add(update.log_lines, update.events)
        self._chart_dirty |= any(event.type in ("step", "eval") for event in update.events)
        self._dirty = True
        if update.state is not None:
            self._flush()  # state changes show at once; the rest coalesces in the timer

    def _flush(self) -> None:
        """Redraw progress, notice and chart at most once per refresh interval, however many
        events arrived: the chart is the expensive part of a redraw."""
        if self._chart_dirty:
            self._chart_dirty = False
            self.query_one("#loss-chart", LossChart).set_series(
                self.tracker.train_loss, self.tracker.eval_loss, self.tracker.max_steps
            )
        if self._dirty:
            self._dirty = False
            self._render_progress()
            self._render_notice()

    def _render_progress(self) -> None:
        started = self.tracker.started_t
        end = (self.tracker.finished.t if self.tracker.finished else None) or (
            self.clock() if self.state in ACTIVE_STATES else self.tracker.last_t
        )
        elapsed = end - started if started and end else None
        limits = self.config.get("limits") or {}
        self.query_one("#run-progress", RunProgress).show(
            self.tracker,
            elapsed_s=elapsed,
            estimated_cost_usd=self.tracker.estimated_cost_usd,
            budget_usd=first_number(limits.get("max_cost")),
            cpu=self.status.gpus == 0,
            active=self.state in ACTIVE_STATES or self.state in ("unknown", "stalled"),
        )

    def _render_notice(self) -> None:
        notice = self.query_one("#run-notice", Static)
        event = self.tracker.notice
        error = event.message if isinstance(event, ErrorEvent) else None
        final = state_notice(self.state, self.run_dir.name, error, self.tracker.last_checkpoint_step)
        if final is not None:
            text, severity = final
        elif event is not None:
            text = f"{event.type}: {notice_text(event)}".rstrip(": ")
            severity = "error" if event.type in ("error", "killed") else "warning"
        elif self.tracker.overfitting:
            text, severity = self.tracker.overfitting, "warning"
        elif self.state in ACTIVE_STATES and not self.tracker.step:
            # A CPU box spends up to a minute importing torch and loading before step 1; a first
            # run of a Hub model spends minutes downloading it (the progress line shows how far).
            if self.tracker.downloading:
                text = ("Getting ready: downloading the model from the Hugging Face Hub (once: later runs "
                        "use the copy in the Hugging Face cache).")
            elif self.tracker.started_t:
                text = "Getting ready: loading the model and the data."
            else:
                text = "Getting ready: importing the training libraries (torch, transformers, peft)."
            severity = "info"
        else:
            notice.remove_class("-visible")
            return
        notice.update(text)
        notice.set_classes(f"-visible -{severity}")

    def on_hardware_sampled(self, message: HardwareSampled) -> None:
        sample = message.sample
        self.query_one("#vram", VramPane).show(sample)
        banner = self.query_one("#run-banner", Static)
        idle = self._idle.update(sample.gpus)
        if self.state not in ACTIVE_STATES:
            idle = []  # a finished run's GPU being idle is expected
        if idle:
            index, seconds = idle[0]
            held = next(s.memory_used_bytes for s in sample.gpus if s.index == index)
            banner.update(
                f"⚠ GPU {index} has been idle for {format_duration(seconds)} while holding "
                f"{format_bytes_gib(held)} GiB: the run may be stuck (data loading, a hung "
                "process). Check the log; s stops the run."
            )
        banner.set_class(bool(idle), "-visible")

    # -- actions ----------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "done":
            return self.state == "finished" or self.tracker.finished is not None
        if action == "stop":
            return self.state in ACTIVE_STATES or self.state in ("unknown", "stalled")
        if action == "resume":
            return self.state in RESUMABLE_STATES
        return True

    def action_resume(self) -> None:
        """Continue a stopped, failed, killed or crashed run in a new process; this dashboard
        follows it (it keeps watching the run directory)."""
        self.notify(f"Resuming {self.run_dir.name} from its newest complete checkpoint…", title="Resume")
        self._resume()

    @work(thread=True, exclusive=True, exit_on_error=False, group="run-resume",
          description="Resuming the run")
    def _resume(self) -> None:
        from ftwiz.core.engine.launch import resume_run

        resume_run(self.run_dir)

    def action_stop(self) -> None:
        """First press: graceful (checkpoint, then exit). Second press: force, after asking."""
        state = self.run_dir.state(self.clock())
        if state not in ACTIVE_STATES and state != "stalled":
            self.notify(f"{self.run_dir.name} is not running ({state}).")
            return
        if self._stop_requested or state == "stopping":
            self.app.push_screen(ConfirmForceStop(self.run_dir.name), self._force_stop)
            return
        from ftwiz.core.errors import UserError

        try:
            result = self.run_dir.stop()
        except (OSError, UserError) as exc:  # e.g. the pid is not this run's engine: nothing signalled
            self.notify(f"Could not stop {self.run_dir.name}: {exc}", severity="error")
            return
        self._stop_requested = True
        self.notify(
            f"Stopping ({result}): the run saves a checkpoint, then exits. Press s again to force.",
            title="Stop requested",
        )

    def _force_stop(self, confirmed: bool | None) -> None:
        if not confirmed:
            return
        from ftwiz.core.errors import UserError

        try:
            result = self.run_dir.stop(force=True)
        except (OSError, UserError) as exc:
            self.notify(f"Could not kill {self.run_dir.name}: {exc}", severity="error")
            return
        self.notify(f"{self.run_dir.name}: {result}", severity="warning")

    def action_done(self) -> None:
        from ftwiz.screens.done import DoneScreen

        self.app.push_screen(DoneScreen(self.run_dir))

    def action_back(self) -> None:
        leave = getattr(self.app, "leave_screen", None)  # the wizard: never down to a blank screen
        if leave is not None:
            leave()
        elif len(self.app.screen_stack) > 1:
            self.app.pop_screen()
