"""Run directories for the run-side UI tests, written the way the engine writes them.

`make_run` lays out config.yaml + status.json; `FakeRunWriter` is a thread that appends
events and train.log lines over time like a training process; `write_fixed_run` writes a
byte-for-byte deterministic finished run (fixed times) for snapshot tests.
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
from pathlib import Path
from typing import Any

from textual.app import App
from textual.screen import Screen

from ftwiz.core.config import config_from_dict
from ftwiz.core.runs import EVENT_SCHEMA_VERSION, RunDir, create_run_dir

T0 = 1_750_000_000.0
"""The fixed clock of snapshot fixtures (2025-06-15)."""

ENGINE_MARKER = "ftwiz.core.engine"
"""What RunDir.state() looks for in a live pid's command line to tell a run from a recycled pid."""


def run_config(name: str, max_cost: float | None = 5.0) -> dict[str, Any]:
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


def append_events(run: RunDir, events: list[dict[str, Any]]) -> None:
    """Events with their own times (RunDir.emit stamps the wall clock)."""
    with open(run.events_path, "a", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps({"v": EVENT_SCHEMA_VERSION, **event}) + "\n")


def step_event(step: int, max_steps: int, t: float) -> dict[str, Any]:
    loss = round(2.5 * 0.93**step + 0.4, 4)
    return {
        "t": t, "type": "step", "step": step, "max_steps": max_steps, "loss": loss,
        "learning_rate": 2e-4 * (1 - step / max_steps), "grad_norm": 1.1,
        "tokens_per_s": 1234.5, "epoch": round(step / 20, 2),
        "eta_s": (max_steps - step) * 3.0, "spend_usd": round(step * 0.01, 4),
    }


def make_run(
    runs_dir: Path,
    name: str = "demo-lora",
    *,
    state: str = "running",
    pid: int | None = None,
    step: int = 0,
    max_steps: int = 40,
    heartbeat: float | None = None,
    max_cost: float | None = 5.0,
) -> RunDir:
    """A run as the engine leaves it: an active one has a live engine-like process (shared
    stand-in unless pid is given) and a fresh heartbeat, so RunDir.state() calls it alive."""
    run = create_run_dir(runs_dir, name)
    config_from_dict(run_config(name, max_cost)).save(run.config_path)
    active = state in ("starting", "running", "stopping")
    write_json(run.status_path, {
        "pid": pid if pid is not None else (shared_engine_pid() if active else None),
        "state": state, "step": step, "max_steps": max_steps,
        "heartbeat": heartbeat if heartbeat is not None else time.time(), "exit_code": None,
    })
    return run


class FakeRunWriter(threading.Thread):
    """Writes a run as a training process would: started, steps with log lines, evals, a
    warning, finished, sleeping `delay_s` between steps."""

    def __init__(self, run: RunDir, steps: int = 40, delay_s: float = 0.02, eval_every: int = 10,
                 finish: bool = True, lines_per_step: int = 1) -> None:
        super().__init__(daemon=True)
        self.run_dir, self.steps, self.delay_s = run, steps, delay_s
        self.eval_every, self.finish, self.lines_per_step = eval_every, finish, lines_per_step
        self.stop_event = threading.Event()
        self.written = 0

    def run(self) -> None:  # noqa: D102 - threading.Thread API
        run = self.run_dir
        t = T0
        append_events(run, [{"t": t, "type": "started", "max_steps": self.steps, "estimate_usd": 0.5}])
        for step in range(1, self.steps + 1):
            if self.stop_event.wait(self.delay_s):
                return
            t += 3.0
            events = [step_event(step, self.steps, t)]
            if step % self.eval_every == 0:
                events.append({"t": t, "type": "eval", "step": step, "eval_loss": round(2.6 * 0.95**step + 0.5, 4)})
            if step == self.steps // 2:
                events.append({"t": t, "type": "warning", "step": step, "message": "grad norm spiked"})
            with open(run.log_path, "a", encoding="utf-8") as log:
                for line in range(self.lines_per_step):
                    log.write(f"step {step}/{self.steps} line {line} loss {events[0]['loss']}\n")
            append_events(run, events)
            status = run.read_status()
            status.update(step=step, heartbeat=time.time())  # the engine beats on the wall clock
            write_json(run.status_path, status)
            self.written = step
        if self.finish:
            append_events(run, [{"t": t + 1, "type": "finished", "step": self.steps, "message": "adapter saved"}])
            status = run.read_status()
            status.update(state="finished", exit_code=0, heartbeat=time.time())
            write_json(run.status_path, status)


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


SAMPLES = {
    "metric": "format_match",
    "before": {"format_match": 0.0, "exact_match": 0.0},
    "after": {"format_match": 0.875, "exact_match": 0.5},
    "samples": [
        {"prompt": "When did the meeting happen? It was on March 3rd, 2021.",
         "expected": "2021-03-03", "before": "The meeting was in March", "after": "2021-03-03"},
        {"prompt": "Date of the launch: 7 Jan 2019", "expected": "2019-01-07",
         "before": "january seven", "after": "2019-01-07"},
        {"prompt": "Shipped on the 21st of October 2020", "expected": "2020-10-21",
         "before": "October", "after": "2020-10-12"},
    ],
}


@dataclass
class FixedRun:
    run: RunDir
    runs_dir: Path


def write_fixed_run(runs_dir: Path, name: str = "demo-lora", *, finished: bool = True,
                    pid: int | None = None, steps: int = 40) -> FixedRun:
    """A deterministic run: same bytes every time (times from T0), safe to rewrite concurrently."""
    path = Path(runs_dir) / name
    (path / "adapter").mkdir(parents=True, exist_ok=True)
    run = RunDir(path)
    tmp = path / f".config.{os.getpid()}.tmp"
    tmp.write_text(config_from_dict(run_config(name)).to_yaml(), encoding="utf-8")
    os.replace(tmp, run.config_path)
    events: list[dict[str, Any]] = [{"t": T0, "type": "started", "max_steps": steps, "estimate_usd": 0.5}]
    last = steps if finished else steps // 2
    log = []
    for step in range(1, last + 1):
        events.append(step_event(step, steps, T0 + 3.0 * step))
        log.append(f"{{'loss': {events[-1]['loss']}, 'step': {step}}}")
        if step % 10 == 0:
            events.append({"t": T0 + 3.0 * step, "type": "eval", "step": step,
                           "eval_loss": round(2.6 * 0.95**step + 0.5, 4)})
            events.append({"t": T0 + 3.0 * step, "type": "checkpoint", "step": step,
                           "path": f"checkpoints/checkpoint-{step}"})
    if finished:
        events.append({"t": T0 + 3.0 * steps + 1, "type": "samples", "path": "samples.json"})
        events.append({"t": T0 + 3.0 * steps + 2, "type": "finished", "step": steps, "message": "adapter saved"})
    tmp = path / f".events.{os.getpid()}.tmp"
    tmp.write_text("".join(json.dumps({"v": EVENT_SCHEMA_VERSION, **e}) + "\n" for e in events), encoding="utf-8")
    os.replace(tmp, run.events_path)
    tmp = path / f".log.{os.getpid()}.tmp"
    tmp.write_text("\n".join(log) + "\n", encoding="utf-8")
    os.replace(tmp, run.log_path)
    write_json(run.status_path, {
        "pid": pid, "state": "finished" if finished else "running", "step": last, "max_steps": steps,
        "heartbeat": T0 + 3.0 * last, "exit_code": 0 if finished else None,
    })
    if finished:
        write_json(run.samples_path, SAMPLES)
        write_json(run.adapter_dir / "adapter_config.json", {"peft_type": "LORA", "r": 16})
    return FixedRun(run=run, runs_dir=Path(runs_dir))
