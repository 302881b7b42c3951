"""Run directories for the run-side tests, replayed from a run the real engine wrote.

tests/fixtures/demo_run/ is a CPU demo run recorded by tests/fixtures/record_demo_run.py (the
real `python -m ftwiz.core.engine`), so every event, status.json and samples.json here has the
fields the engine writes, under the engine's names. Times are moved to start at T0.

`make_run` lays out a run as the engine leaves it at some point of the recording (by default
just started: no events yet, max_steps -1); `RunReplayer` is a thread that appends the rest of
the recording over time, status.json included, like the training process; `write_fixed_run`
writes a byte-for-byte deterministic run (finished, or cut after a step) for snapshot tests.
Events a test needs beyond the recording (an OOM, an error) are built from core.events'
classes, so they too can only carry the engine's field names.
"""

from __future__ import annotations

import json
import os
import atexit
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from textual.app import App
from textual.screen import Screen

from ftwiz.core.events import Event
from ftwiz.core.runs import RunDir, create_run_dir

T0 = 1_750_000_000.0
"""The fixed clock of snapshot fixtures (2025-06-15): the recorded run's creation time."""

RECORDED = Path(__file__).resolve().parent / "fixtures" / "demo_run"

ENGINE_MARKER = "ftwiz.core.engine"
"""What RunDir.state() looks for in a live pid's command line to tell a run from a recycled pid."""


@cache
def _recording() -> dict[str, Any]:
    events = [json.loads(line) for line in (RECORDED / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    history = [json.loads(line) for line in
               (RECORDED / "status_history.jsonl").read_text(encoding="utf-8").splitlines()]
    final = json.loads((RECORDED / "status.json").read_text(encoding="utf-8"))
    return {"events": events, "history": history, "final": final,
            "log": (RECORDED / "train.log").read_text(encoding="utf-8").splitlines(),
            "origin": float(final["created"])}


def _at(t: float) -> float:
    """A recorded time moved onto the fixed clock."""
    return round(T0 + (t - _recording()["origin"]), 3)


def _status_times(status: dict[str, Any]) -> dict[str, Any]:
    return {**status, **{k: _at(status[k]) for k in ("created", "launched", "heartbeat") if status.get(k)}}


def recorded_events() -> list[dict[str, Any]]:
    """Every event of the recorded run, as written, on the fixed clock."""
    return [{**event, "t": _at(event["t"])} for event in _recording()["events"]]


def events_upto(step: int | None) -> list[dict[str, Any]]:
    """The recorded events until the step event of `step` and that step's eval and checkpoint;
    0: those before the first step; None: all of them."""
    events = recorded_events()
    if step is None:
        return events
    steps = [e for e in events if e["type"] == "step"]
    if step == 0:
        return [e for e in events if e["t"] < steps[0]["t"]]
    (cut,) = [e["t"] for e in steps if e["step"] == step]
    return [e for e in events if e["t"] <= cut or (e["type"] in ("eval", "checkpoint") and e["step"] == step)]


def recorded_status(t: float | None = None) -> dict[str, Any]:
    """status.json as the watcher saw it at fixed-clock time t (None: at the end)."""
    if t is None:
        return _status_times(_recording()["final"])
    seen = [entry["status"] for entry in _recording()["history"] if _at(entry["read_t"]) <= t + 0.5]
    return _status_times(seen[-1] if seen else _recording()["history"][0]["status"])


def recorded_log(fraction: float = 1.0) -> list[str]:
    """The first `fraction` of the recorded train.log (its tail: the end of the run)."""
    lines = _recording()["log"]
    return lines[: round(len(lines) * fraction)]


def recorded_samples() -> dict[str, Any]:
    return json.loads((RECORDED / "samples.json").read_text(encoding="utf-8"))


def recorded_config(name: str) -> str:
    text = (RECORDED / "config.yaml").read_text(encoding="utf-8")
    return text.replace("name: demo-lora\n", f"name: {name}\n", 1)


def step_events() -> list[dict[str, Any]]:
    return [e for e in recorded_events() if e["type"] == "step"]


def run_config(name: str, max_cost: float | None = 5.0) -> dict[str, Any]:
    """A small valid run config (the demo's model and data) for tests that need config.yaml."""
    return {
        "name": name,
        "method": "lora",
        "model": {"name_or_path": "ftwiz-demo-tiny"},
        "data": {"path": "demo"},
        "training": {"max_steps": 40},
        "limits": {"max_cost": max_cost, "price_per_hour": 2.0},
    }


def write_json(path: Path, data: Any) -> None:
    """Atomic, so a reader in another thread never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def append_events(run: RunDir, events: list[dict[str, Any] | Event]) -> None:
    """Events with their own times (RunDir.emit stamps the wall clock): recorded records, or
    core.events classes for what the recording lacks."""
    with open(run.events_path, "a", encoding="utf-8") as handle:
        for event in events:
            record = event.to_record() if isinstance(event, Event) else event
            handle.write(json.dumps(record) + "\n")


def make_run(
    runs_dir: Path,
    name: str = "demo-lora",
    *,
    state: str = "running",
    pid: int | None = None,
    heartbeat: float | None = None,
    upto_step: int | None = -1,
    step: int | None = None,
    max_steps: int | None = None,
) -> RunDir:
    """The recorded run as the engine left it after the step event of `upto_step` (-1: just
    started, no events yet; 0: loaded, before its first step; None: finished). An active one
    has a live engine-like process (a shared stand-in unless pid is given) and a fresh
    heartbeat (the wall clock), so RunDir.state() calls it alive."""
    run = create_run_dir(runs_dir, name)
    run.config_path.write_text(recorded_config(run.name), encoding="utf-8")
    events = [] if upto_step == -1 else events_upto(upto_step)
    append_events(run, events)
    status = recorded_status(events[-1]["t"] if events else _at(_recording()["history"][1]["read_t"]))
    active = state in ("starting", "running", "stopping")
    status.update(
        state=state,
        pid=pid if pid is not None else (shared_engine_pid() if active else None),
        heartbeat=heartbeat if heartbeat is not None else time.time(),
    )
    if step is not None:
        status["step"] = step
    if max_steps is not None:
        status["max_steps"] = max_steps
    write_json(run.status_path, status)
    return run


def step_event(step: int, max_steps: int, t: float, **fields: Any) -> dict[str, Any]:
    """A step event for what the recording lacks (a loss curve of a chosen shape), built through
    core.events.StepEvent so it has exactly the fields the engine writes."""
    from ftwiz.core.events import StepEvent

    values = dict(epoch=round(step / 20, 2), loss=round(2.5 * 0.93**step + 0.4, 4),
                  learning_rate=2e-4 * (1 - step / max_steps), grad_norm=1.1, tokens_per_s=1234.5, micro_batch=4,
                  grad_accum=1, eta_s=(max_steps - step) * 3.0, spend_usd=round(step * 0.01, 4))
    values.update(fields)
    return StepEvent(step=step, max_steps=max_steps, **values).to_record(t=t)


class RunReplayer(threading.Thread):
    """Appends the recorded run's events to a run made by make_run(), as the training process
    wrote them: status.json follows as recorded (heartbeat on the wall clock, pid kept),
    train.log lines in proportion, `delay_s` between events. `repeat` > 1 replays the training
    part (steps, evals, checkpoints) again and again with the steps renumbered onward: a long
    run's flood of events for load tests. `finish=False` stops before samples and finished."""

    def __init__(self, run: RunDir, delay_s: float = 0.02, *, repeat: int = 1, finish: bool = True,
                 log_lines_per_event: int | None = None) -> None:
        super().__init__(daemon=True)
        self.run_dir, self.delay_s, self.repeat, self.finish = run, delay_s, repeat, finish
        self.log_lines_per_event = log_lines_per_event
        self.stop_event = threading.Event()
        self.written = 0

    def script(self) -> list[dict[str, Any]]:
        events = recorded_events()
        steps = [e for e in events if e["type"] == "step"]
        last = steps[-1]["max_steps"]
        first_t, last_t = steps[0]["t"], events[-1]["t"]
        training = [e for e in events if first_t <= e["t"] and e["type"] in ("step", "eval", "checkpoint")]
        head = [e for e in events if e["t"] < first_t]
        tail = [e for e in events if e["type"] in ("samples", "finished")]
        out = list(head)
        for round_ in range(self.repeat):
            shift = round_ * last
            for e in training:
                moved = {**e, "t": e["t"] + round_ * (last_t - first_t)}
                if "step" in moved:
                    moved["step"] += shift
                if moved["type"] == "step":
                    moved["max_steps"] = last * self.repeat
                out.append(moved)
        return out + (tail if self.finish else [])

    def run(self) -> None:  # noqa: D102 - threading.Thread API
        run, script = self.run_dir, self.script()
        log = recorded_log()
        pid = run.read_status().get("pid")
        for index, event in enumerate(script, start=1):
            if self.stop_event.wait(self.delay_s):
                return
            append_events(run, [event])
            if self.log_lines_per_event is not None:
                lines = [f"{event['type']} {event.get('step', '')} line {i}" for i in range(self.log_lines_per_event)]
            else:
                lines = log[round(len(log) * (index - 1) / len(script)): round(len(log) * index / len(script))]
            if lines:
                with open(run.log_path, "a", encoding="utf-8") as handle:
                    handle.write("".join(line + "\n" for line in lines))
            status = recorded_status(min(event["t"], _at(_recording()["history"][-2]["read_t"])))
            if event["type"] == "step":
                status.update(step=event["step"], max_steps=event["max_steps"])
            status.update(pid=pid, heartbeat=time.time())
            if event["type"] == "finished":
                status.update(recorded_status(), pid=pid, heartbeat=time.time())
            write_json(run.status_path, status)
            self.written = index


def sleeping_process(ignore_sigterm: bool = False, seconds: float = 120) -> subprocess.Popen:
    """A live process whose pid stands in for a training process: its command line names the
    engine module (as `python -m ftwiz.core.engine RUN_DIR` does), and it runs in its own
    session like a detached run (RunDir.stop(force=True) kills the process group)."""
    code = "import signal, sys, time\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(float(sys.argv[2]))\n"
    process = subprocess.Popen([sys.executable, "-c", code, ENGINE_MARKER, str(seconds)],
                               start_new_session=True, stdout=subprocess.PIPE, text=True)
    process.stdout.readline()  # the signal handler is in place
    return process


_shared_engine: subprocess.Popen | None = None


def shared_engine_pid() -> int:
    """One engine stand-in for every run that only needs to look alive (nothing stops it);
    started on first use, ended when the test process exits."""
    global _shared_engine
    if _shared_engine is None or _shared_engine.poll() is not None:
        _shared_engine = sleeping_process(seconds=3600)
        atexit.register(_end_shared_engine, _shared_engine)
    return _shared_engine.pid


def _end_shared_engine(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


class HostApp(App):
    """Hosts one run-side screen for tests until the wizard app is the host; counts 'x' presses."""

    def __init__(self, screen: Screen, clock: Any = None) -> None:
        super().__init__()
        self.first_screen = screen
        self.clock = clock
        self.presses: list[int] = []

    BINDINGS = [("x", "count", "count")]

    def on_mount(self) -> None:
        self.push_screen(self.first_screen)

    def action_count(self) -> None:
        tracker = getattr(self.screen, "tracker", None)
        self.presses.append(tracker.events_seen if tracker else -1)


async def wait_for(pilot: Any, condition: Any, timeout_s: float = 15.0) -> None:
    """Let the app run until condition() holds (fails the test after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await pilot.pause(0.02)


@dataclass
class FixedRun:
    run: RunDir
    runs_dir: Path


def write_fixed_run(runs_dir: Path, name: str = "demo-lora", *, finished: bool = True,
                    pid: int | None = None, upto_step: int = 120) -> FixedRun:
    """The recorded run, finished or cut after the step event of `upto_step`, with the same
    bytes every time (times on the fixed clock), safe to rewrite concurrently."""
    path = Path(runs_dir) / name
    (path / "adapter").mkdir(parents=True, exist_ok=True)
    run = RunDir(path)
    events = events_upto(None if finished else upto_step)

    def put(target: Path, text: str) -> None:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)

    put(run.config_path, recorded_config(name))
    put(run.events_path, "".join(json.dumps(e) + "\n" for e in events))
    put(run.log_path, "\n".join(recorded_log(1.0 if finished else len(events) / len(recorded_events()))) + "\n")
    status = recorded_status(None if finished else events[-1]["t"])
    status.update(pid=pid, worker_pid=pid)
    write_json(run.status_path, status)
    if finished:
        write_json(run.samples_path, recorded_samples())
        put(run.adapter_dir / "adapter_config.json", (RECORDED / "adapter" / "adapter_config.json").read_text())
    return FixedRun(run=run, runs_dir=Path(runs_dir))


FAST = {"gpu_sampler": None, "poll_interval_s": 0.02, "sample_interval_s": 0.05, "refresh_interval_s": 0.05}
"""TrainScreen's keyword arguments for tests: no GPU sampler, quick polling."""
