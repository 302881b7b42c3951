"""The run directory: the only channel between a training process and whoever watches it.

A run process writes; the UI and the CLI only read. Layout of runs/<name>/:

    config.yaml     the resolved RunConfig (no secrets)
    status.json     {"pid", "state", "step", "max_steps", "epoch", "heartbeat", "exit_code", ...}
    events.jsonl    one JSON object per line, schema in docs/events.md, key "v" = EVENT_SCHEMA_VERSION
    train.log       the full text output of the process
    checkpoints/    checkpoint-<step>/ directories, each complete only with its COMPLETE marker
    adapter/        the final adapter (safetensors), or the full model for method: full
    merged/         the merged model, when asked for
    samples.json    before/after generations on held-out examples

Writes of status.json are atomic (temporary file, then rename) so a reader never sees half
a file; events are appended one whole line at a time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ftwiz.core.errors import UserError

EVENT_SCHEMA_VERSION = 1
HEARTBEAT_STALE_S = 120.0
"""A heartbeat older than this: crashed when the pid no longer runs ftwiz, stalled when it does."""
STALLED = "stalled"
"""Derived, never written: the run process is alive but its heartbeat thread has not written
status.json for HEARTBEAT_STALE_S (hung: deadlocked, stuck in a driver call, stopped with
SIGSTOP, or status.json unwritable). Not final: it may recover; `ftwiz stop` twice kills it."""

ACTIVE_STATES = frozenset({"starting", "running", "stopping"})
FINAL_STATES = frozenset({"finished", "stopped", "failed", "killed"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_name(name: str) -> str:
    """A run name is one path component: no '..', no '/', no absolute paths."""
    if not _NAME_RE.match(name) or ".." in name:
        raise UserError(
            f"run name {name!r}: use letters, digits, '.', '_' and '-' only (at most 100, "
            "starting with a letter or digit); it must stay inside the runs directory"
        )
    return name


def _write_private(path: Path, text: str) -> None:
    """Write atomically, readable by the user only (runs may hold paths and prompts)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextmanager
def private_files() -> Iterator[None]:
    """Files and directories created inside are the user's only (umask 077)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _training_pids(pid: int) -> list[int]:
    """Who gets the graceful SIGTERM: the run process, or under `accelerate launch` its
    training workers (the launcher would tear them down on a timeout, cutting a save short)."""
    try:
        import psutil

        launcher = psutil.Process(pid)
        if "accelerate" not in " ".join(launcher.cmdline()):
            return [pid]
        workers = [
            child.pid
            for child in launcher.children(recursive=True)
            if "ftwiz.core.engine" in " ".join(child.cmdline()) and "accelerate" not in " ".join(child.cmdline())
        ]
        return workers or [pid]
    except Exception:  # noqa: BLE001 - psutil races with exiting processes; fall back to the pid
        return [pid]


def _runs_engine(pid: int | None) -> bool:
    """Whether pid is still an ftwiz run process (not a recycled pid); unknown counts as yes."""
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return True
    return b"ftwiz.core.engine" in cmdline or b"accelerate" in cmdline


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / "config.yaml")
    status_path = property(lambda self: self.path / "status.json")
    events_path = property(lambda self: self.path / "events.jsonl")
    log_path = property(lambda self: self.path / "train.log")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    adapter_dir = property(lambda self: self.path / "adapter")
    merged_dir = property(lambda self: self.path / "merged")
    samples_path = property(lambda self: self.path / "samples.json")

    def read_config(self) -> dict[str, Any]:
        """config.yaml as a plain mapping ({} when missing or unreadable): what watchers display."""
        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}

    # -- status -------------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_status(self, **updates: Any) -> dict[str, Any]:
        """Merge updates into status.json and stamp the heartbeat."""
        status = self.read_status()
        status.update(updates)
        status["heartbeat"] = time.time()
        _write_private(self.status_path, json.dumps(status, indent=2))
        return status

    def state(self, now: float | None = None) -> str:
        """The state a watcher should show: 'crashed' when an active run's process is gone,
        'stalled' when it is there but its heartbeat stopped."""
        status = self.read_status()
        state = status.get("state", "unknown")
        if state in ACTIVE_STATES and not pid_alive(status.get("pid")):
            return "crashed"
        if state in ACTIVE_STATES:
            age = (now or time.time()) - float(status.get("heartbeat", 0))
            # The heartbeat thread beats every few seconds even in long steps: a stale one means
            # the process hangs (still ftwiz) or the pid now belongs to some other program.
            if age > HEARTBEAT_STALE_S:
                return STALLED if _runs_engine(status.get("pid")) else "crashed"
        return state

    # -- events -------------------------------------------------------------------
    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Append one event line; a single write() keeps lines whole for readers."""
        event = {"v": EVENT_SCHEMA_VERSION, "t": round(time.time(), 3), "type": type, **fields}
        line = json.dumps(event, default=str) + "\n"
        fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
        return event

    def read_events(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Events from byte offset on, and the offset to pass next time (follows a growing file)."""
        try:
            with open(self.events_path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except OSError:
            return [], offset
        end = data.rfind(b"\n") + 1  # leave a half-written last line for the next read
        events = []
        for raw in data[:end].splitlines():
            try:
                events.append(json.loads(raw))
            except ValueError:
                continue
        return events, offset + end

    def iter_events(self) -> Iterator[dict[str, Any]]:
        yield from self.read_events(0)[0]

    # -- process control ----------------------------------------------------------
    def stop(self, force: bool = False) -> str:
        """Ask the run to save and stop (SIGTERM); force, or a second stop, kills it."""
        status = self.read_status()
        pid = status.get("pid")
        if not pid_alive(pid):
            return "not-running"
        if force or status.get("state") == "stopping":
            os.killpg(os.getpgid(pid), signal.SIGKILL)
            self.write_status(state="killed", exit_code=-9)
            self.emit("killed", message="stopped by force; progress since the last checkpoint is lost")
            return "killed"
        self.write_status(state="stopping")
        for target in _training_pids(pid):
            try:
                os.kill(target, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return "stopping"


def delete_run(run: RunDir, now: float | None = None) -> None:
    """Remove a run directory and everything in it (adapter, checkpoints, log). A live run is
    refused (its process would go on writing into nothing): stop it first."""
    import shutil

    state = run.state(now)
    if state in ACTIVE_STATES or state == STALLED:
        raise UserError(f"run {run.name}: still {state}; stop it first (`ftwiz stop {run.name}`)")
    if run.path.is_symlink() or not run.path.is_dir():
        raise UserError(f"run {run.name}: {run.path} is not a run directory")
    shutil.rmtree(run.path)


def create_run_dir(runs_dir: str | Path, name: str) -> RunDir:
    """Make a new, empty run directory; an existing name gets a -2, -3, ... suffix, never reused."""
    check_run_name(name)
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    root_real = root.resolve()
    for attempt in range(1, 1000):
        candidate = root / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            candidate.mkdir(mode=0o700)  # atomic: two runs can never get the same directory
        except FileExistsError:
            continue
        if candidate.resolve().parent != root_real:
            candidate.rmdir()
            raise UserError(f"run directory {candidate}: escapes the runs directory {root}")
        return RunDir(candidate)
    raise UserError(f"{root}: too many runs named {name!r}; choose another name")


def open_run(ref: str | Path, runs_dir: str | Path = "runs") -> RunDir:
    """A run by name, or by a path to its directory; either way it must lie inside runs_dir
    (a symlink pointing elsewhere is refused)."""
    root = Path(runs_dir)
    path = Path(ref)
    if not (path / "status.json").exists() and not (path / "config.yaml").exists():
        check_run_name(str(ref))
        path = root / str(ref)
    if not path.is_dir():
        raise UserError(f"run {ref}: no such run in {runs_dir} (see `ftwiz runs`)")
    if path.resolve().parent != root.resolve():
        raise UserError(f"run {ref}: {path} is outside the runs directory {root} (or a symlink out of it)")
    return RunDir(path)


def list_runs(runs_dir: str | Path = "runs") -> list[RunDir]:
    """Run directories, newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    root_real = root.resolve()
    runs = [
        RunDir(p)
        for p in root.iterdir()
        if p.is_dir() and p.resolve().parent == root_real and (p / "config.yaml").exists()
    ]
    return sorted(runs, key=lambda r: r.path.stat().st_mtime, reverse=True)
