"""The run directory: the only channel between a training process and whoever watches it.

A run process writes; the UI and the CLI only read. Layout of runs/<name>/:

    config.yaml     the resolved RunConfig (no secrets)
    status.json     {"pid", "state", "step", "max_steps", "epoch", "heartbeat", "exit_code", ...}
    events.jsonl    one JSON object per line, schema in docs/events.md, key "v" = EVENT_SCHEMA_VERSION
                    (both typed in core/events.py: RunStatus, one class per event type)
    train.log       the full text output of the process
    checkpoints/    checkpoint-<step>/ directories, each complete only with its COMPLETE marker
    adapter/        the final adapter (safetensors), or the full model for method: full
    merged/         the merged model, when asked for
    samples.json    before/after generations on held-out examples

Writes of status.json are atomic (temporary file, then rename) so a reader never sees half
a file; events are appended one whole line at a time.

One owner per run directory: `.owner.lock` is held with fcntl.flock(LOCK_EX) by the process
that owns the run (the launcher while it starts the run process, which inherits the lock and
holds it for its whole life). A second trainer cannot take it; `state()` and `stop()` ask the
lock whether the owner lives, so neither a missing status.json nor a recycled pid fools them.
While an owner lives only it writes status.json; others append events (`stop_requested`,
`killed`). A run whose owner is gone but whose status still says it is active has its state
read from its events (the last finished / stopped / error / killed); `crashed` is left for a
run that ended without saying how.
"""

from __future__ import annotations

import fcntl
import json
import logging
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
from ftwiz.core.events import (
    EVENT_SCHEMA_VERSION,
    Event,
    KilledEvent,
    RunStatus,
    StopRequestedEvent,
    make_event,
    status_record,
)

HEARTBEAT_STALE_S = 120.0
"""A heartbeat older than this: crashed when the pid no longer runs ftwiz, stalled when it does."""
STALLED = "stalled"
"""Derived, never written: the run process is alive but its heartbeat thread has not written
status.json for HEARTBEAT_STALE_S (hung: deadlocked, stuck in a driver call, stopped with
SIGSTOP, or status.json unwritable). Not final: it may recover; `ftwiz stop` twice kills it."""

ACTIVE_STATES = frozenset({"starting", "running", "stopping"})
FINAL_STATES = frozenset({"finished", "stopped", "failed", "killed"})
FINAL_EVENTS = {"finished": "finished", "stopped": "stopped", "error": "failed", "killed": "killed"}
"""Event type -> the final state it records (what a reader shows when status.json lags behind)."""
LOCK_NAME = ".owner.lock"
LOCK_FD_ENV = "FTWIZ_LOCK_FD"
"""The launcher hands its locked descriptor to the run process under this variable."""
ENGINE_MODULE = "ftwiz.core.engine"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# What status.json fields must be, for readers; a field of another type is dropped with a warning.
_STATUS_TYPES: dict[str, tuple[type, ...]] = {
    "pid": (int,), "worker_pid": (int,), "state": (str,), "step": (int,), "max_steps": (int,),
    "heartbeat": (int, float), "created": (int, float), "launched": (int, float), "exit_code": (int,),
    "epoch": (int, float), "spent_s": (int, float), "gpus": (int,), "micro_batch": (int,), "grad_accum": (int,),
    "oom_count": (int,), "pid_started": (int, float), "pid_cmdline": (list,), "data": (dict,),
    "gradient_checkpointing": (bool,), "probe": (dict,),
}
log = logging.getLogger("ftwiz.runs")


def check_run_name(name: str) -> str:
    """A run name is one path component on one line: no '..', no '/', no absolute paths, no newline."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise UserError(
            f"run name {str(name)[:120]!r}: use letters, digits, '.', '_' and '-' only (at most 100, "
            "starting with a letter or digit); it must stay inside the runs directory"
        )
    return name


def process_identity(pid: int) -> dict[str, Any]:
    """What tells this process from a later one with the same pid: start time and command line."""
    try:
        import psutil

        process = psutil.Process(pid)
        return {"pid_started": process.create_time(), "pid_cmdline": process.cmdline()}
    except Exception:  # noqa: BLE001 - gone already, or not ours to read: nothing to record
        return {}


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
    lock_path = property(lambda self: self.path / LOCK_NAME)

    # -- owner ----------------------------------------------------------------------
    def hold_lock(self, wait_s: float = 0.5) -> int:
        """Take the owner lock; the returned descriptor keeps it until it (and every copy a
        child inherited) is closed or its process ends. UserError when another process owns it."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UserError(f"run {self.name}: cannot open its lock file {self.lock_path}: {exc.strerror}") from None
        deadline = time.monotonic() + wait_s  # a reader's brief probe (owner_alive) must not refuse us
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise UserError(
                        f"run {self.name}: another ftwiz process owns this run directory (its trainer is running); "
                        f"`ftwiz stop {self.name}` first"
                    ) from None
                time.sleep(0.05)

    def owner_alive(self) -> bool | None:
        """True while a process holds the owner lock, False when none does, None for a run
        directory without a lock file (made by an older ftwiz, or never launched)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        finally:
            os.close(fd)  # drops the shared lock at once
        return False

    def read_config(self) -> dict[str, Any]:
        """config.yaml as a plain mapping ({} when missing or unreadable): what watchers display."""
        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}

    # -- status -------------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        """status.json as a mapping; {} when missing or unreadable, fields of the wrong type dropped
        (with a warning in the log): a damaged file never takes a reader down. run_status() types it."""
        try:
            data = json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict):
            log.warning("%s: not a JSON object; ignored", self.status_path)
            return {}
        for key, types in _STATUS_TYPES.items():
            value = data.get(key)
            if value is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
                log.warning("%s: field %s has the wrong type (%s); ignored", self.status_path, key, type(value).__name__)
                del data[key]
        return data

    def run_status(self) -> RunStatus:
        return RunStatus.parse(self.read_status())

    def write_status(self, **updates: Any) -> dict[str, Any]:
        """Merge updates into status.json and stamp the heartbeat; a key RunStatus does not
        define is a TypeError."""
        status = self.read_status()
        status.update(status_record(**updates))
        status["heartbeat"] = time.time()
        _write_private(self.status_path, json.dumps(status, indent=2))
        return status

    def state(self, now: float | None = None) -> str:
        """The state a watcher should show: 'crashed' when an active run's process is gone
        without saying how it ended, 'stalled' when it is there but its heartbeat stopped."""
        status = self.read_status()
        state = status.get("state", "unknown")
        owner = self.owner_alive()
        if owner is True:  # the owner lives, whatever status.json says (or whether it exists)
            if state in FINAL_STATES:
                return state  # written as its last act, the process is on its way out
            beat = status.get("heartbeat")  # none (status.json lost): the owner rewrites it within seconds
            stale = beat is not None and (now or time.time()) - float(beat) > HEARTBEAT_STALE_S
            return STALLED if stale else (state if state in ACTIVE_STATES else "running")
        if owner is False and (state in ACTIVE_STATES or state == "unknown"):
            return self.ended_state()
        if state in ACTIVE_STATES and not pid_alive(status.get("pid")):
            return "crashed"
        if state in ACTIVE_STATES:
            age = (now or time.time()) - float(status.get("heartbeat", 0) or 0)
            # The heartbeat thread beats every few seconds even in long steps: a stale one means
            # the process hangs (still ftwiz) or the pid now belongs to some other program.
            if age > HEARTBEAT_STALE_S:
                return STALLED if _runs_engine(status.get("pid")) else "crashed"
        return state

    def ended_state(self) -> str:
        """How a run whose process is gone ended, from its events since the last launch:
        its last final event, or 'crashed' when it ended without saying how."""
        ended = "crashed"
        for event in self.iter_events():
            kind = event.get("type")
            if kind == "resumed":
                ended = "crashed"
            elif kind in FINAL_EVENTS:
                ended = FINAL_EVENTS[kind]
        return ended

    # -- events -------------------------------------------------------------------
    def emit(self, event: Event | str, **fields: Any) -> dict[str, Any]:
        """Append one event line (an Event of core/events.py, or its type name and fields,
        checked against the same class); a single write() keeps lines whole for readers."""
        if isinstance(event, str):
            event = make_event(event, **fields)
        elif fields:
            raise TypeError("emit: give an Event or a type name with fields, not both")
        record = event.to_record(t=round(time.time(), 3))
        line = json.dumps(record, default=str) + "\n"
        fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
        return record

    def read_events(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Event records (JSON objects as written) from byte offset on, and the offset to pass
        next time (follows a growing file); core.events.parse_events types them."""
        try:
            with open(self.events_path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except OSError:
            return [], offset
        end = data.rfind(b"\n") + 1  # leave a half-written last line for the next read
        events = []
        skipped = 0
        for raw in data[:end].splitlines():
            try:
                event = json.loads(raw)
            except (ValueError, RecursionError):
                event = None
            if isinstance(event, dict) and isinstance(event.get("type", ""), str):
                events.append(event)
            elif raw.strip():
                skipped += 1
        if skipped:
            log.warning("%s: %d unreadable line(s) skipped", self.events_path, skipped)
        return events, offset + end

    def iter_events(self) -> Iterator[dict[str, Any]]:
        yield from self.read_events(0)[0]

    # -- process control ----------------------------------------------------------
    def is_engine(self, status: dict[str, Any]) -> bool:
        """Whether status.json's pid is this run's engine: the start time and command line
        recorded at launch match (older runs without them: an ftwiz engine command line)."""
        pid = status.get("pid")
        if not isinstance(pid, int) or pid <= 0 or not pid_alive(pid):
            return False
        try:
            import psutil

            process = psutil.Process(pid)
            started, cmdline = process.create_time(), process.cmdline()
        except Exception:  # noqa: BLE001 - gone, or not ours: never signal what we cannot check
            return False
        if status.get("pid_started") is not None and abs(started - float(status["pid_started"])) > 0.05:
            return False
        if status.get("pid_cmdline"):
            return cmdline == status["pid_cmdline"]
        return any(ENGINE_MODULE in part for part in cmdline)

    def _stop_requested(self, status: dict[str, Any]) -> bool:
        since = float(status.get("launched") or 0)
        return any(e.get("type") == "stop_requested" and float(e.get("t") or 0) >= since for e in self.iter_events())

    def stop(self, force: bool = False) -> str:
        """Ask the run to save and stop (SIGTERM); force, or a second stop, kills it.

        Nothing is signalled unless the run's owner lives and status.json's pid is its engine
        (start time and command line as recorded). The request and a kill are events; status.json
        stays its owner's to write while it lives.
        """
        owner = self.owner_alive()
        status = self.read_status()
        if owner is False:
            return "not-running"
        deadline = time.monotonic() + (2 * 2.0 + 1 if owner else 0)  # the heartbeat rewrites a lost status
        while not self.is_engine(status):
            if time.monotonic() >= deadline:
                if owner:
                    raise UserError(
                        f"run {self.name}: its owner lives but status.json does not name its process "
                        f"(pid {status.get('pid')!r}); nothing was signalled"
                    )
                return "not-running"
            time.sleep(0.2)
            status = self.read_status()
        pid = int(status["pid"])
        if force or status.get("state") == "stopping" or self._stop_requested(status):
            try:
                if os.getpgid(pid) == pid:  # launched by ftwiz in its own session: the whole group
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.emit(KilledEvent(pid=pid, message="stopped by force; progress since the last checkpoint is lost"))
            self._record_kill()
            return "killed"
        self.emit(StopRequestedEvent(pid=pid))
        for target in _training_pids(pid):
            try:
                os.kill(target, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return "stopping"

    def _record_kill(self) -> None:
        """After a kill the owner is gone: take the lock and write the final state, unless the
        run wrote its own final state first (it is never turned into another)."""
        deadline = time.monotonic() + 5
        while self.owner_alive() is True and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            fd = self.hold_lock(wait_s=0.2)
        except UserError:
            return  # readers derive "killed" from the event
        try:
            if self.read_status().get("state") not in FINAL_STATES:
                self.write_status(state="killed", exit_code=-9)
        finally:
            os.close(fd)


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
    root = check_runs_dir(runs_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"runs directory {root}: cannot create it: {exc.strerror or exc}") from None
    root_real = root.resolve()
    for attempt in range(1, 1000):
        candidate = root / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            candidate.mkdir(mode=0o700)  # atomic: two runs can never get the same directory
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"run directory {candidate}: cannot create it: {exc.strerror or exc}") from None
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


def check_runs_dir(runs_dir: str | Path) -> Path:
    """The runs directory as a Path; UserError when something other than a directory is there."""
    root = Path(runs_dir)
    if root.exists() and not root.is_dir():
        raise UserError(f"--runs-dir {root}: is a file, not a directory; give a directory (it is created if missing)")
    return root


def list_runs(runs_dir: str | Path = "runs") -> list[RunDir]:
    """Run directories, newest first (one that vanishes or cannot be read is left out)."""
    root = check_runs_dir(runs_dir)
    if not root.is_dir():
        return []
    root_real = root.resolve()
    found = []
    try:
        entries = list(root.iterdir())
    except OSError as exc:
        raise UserError(f"runs directory {root}: cannot read it: {exc.strerror or exc}") from None
    for p in entries:
        try:
            if p.is_dir() and p.resolve().parent == root_real and (p / "config.yaml").exists():
                found.append((p.stat().st_mtime, RunDir(p)))
        except OSError:
            continue
    return [run for _, run in sorted(found, key=lambda pair: pair[0], reverse=True)]


def kept_checkpoint_text(finished: Any) -> str | None:
    """Which checkpoint a finished run's result holds and why (the Done screen, `ftwiz status`),
    from a FinishedEvent or its record; None when the run did not evaluate (or predates the fields)."""
    if finished is None:
        return None
    field = finished.get if isinstance(finished, dict) else (lambda name: getattr(finished, name, None))
    best = field("best_checkpoint")
    if not best:
        return None
    loss, count = field("best_eval_loss"), field("evaluations") or 0
    why = f"the lowest evaluation loss ({loss:.4f}) of {count} evaluations" if loss is not None else "the best evaluation"
    ended = "; early stopping ended the run" if field("early_stopped") else ""
    return f"Kept: {best}, {why}: the result holds its weights, not the last step's{ended}"
