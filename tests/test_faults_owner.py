"""Group 1 of the adversarial suite: one owner per run directory.

A run directory is owned by the process holding its lock (`.owner.lock`, fcntl.flock) for its
whole life. A second trainer is refused in one line, `stop` signals nothing but this run's own
engine (start time and command line as recorded), status.json is written by its owner only and
stays whole, and a final state is never turned into another (nor into `crashed`).

The owner here is a stand-in with the engine's own lock, Status and signal handling (no torch,
no training), so every case runs in a second or two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_runs import ENGINE_MARKER, append_events, dead_pid, run_config, sleeping_process

from ftwiz.cli.main import main
from ftwiz.core.config import config_from_dict
from ftwiz.core.errors import UserError
from ftwiz.core.runs import RunDir, create_run_dir, process_identity

OWNER = """
import os, sys, time
from pathlib import Path
from ftwiz.core.engine.process import Flags, Status, install_signal_handlers
from ftwiz.core.runs import RunDir, process_identity

run = RunDir(Path(sys.argv[1]))
lock = run.hold_lock(wait_s=0)
flags = Flags()
install_signal_handlers(flags)
status = Status(run, True, flags)
status.update(state="running", pid=os.getpid(), step=1, **process_identity(os.getpid()))
status.start_heartbeat()
print("ready", flush=True)
deadline = time.time() + 60
while not flags.stop_requested and time.time() < deadline:
    time.sleep(0.05)
time.sleep(float(sys.argv[2]))  # the save a graceful stop waits for
status.stop_heartbeat()
run.emit("stopped", step=1, checkpoint=None)
status.update(state="stopped", exit_code=0)
"""


def _run(tmp_path: Path, name: str = "owned", state: str = "stopped") -> RunDir:
    run = create_run_dir(tmp_path, name)
    config_from_dict(run_config(name)).save(run.config_path)
    run.write_status(state=state, step=1, max_steps=40)
    return run


def _owner(run: RunDir, save_s: float = 0.0) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", OWNER, str(run.path), str(save_s), ENGINE_MARKER],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_a_second_trainer_is_refused_while_the_run_has_an_owner(tmp_path, capsys):
    run = _run(tmp_path)
    owner = _owner(run)
    try:
        events_before = run.events_path.read_bytes() if run.events_path.exists() else b""
        # `ftwiz resume` while it trains: refused in one line, nothing written.
        assert main(["--runs-dir", str(tmp_path), "resume", "owned"]) == 2
        assert "running" in _one_line(capsys.readouterr().err)
        # Past every state check (two resumes racing): the lock itself refuses the launch.
        from ftwiz.core.engine.launch import launch

        with pytest.raises(UserError, match="another ftwiz process owns"):
            launch(run, gpu_count=0)
        # A run process started by hand in the same directory exits 2 and touches nothing.
        out = subprocess.run([sys.executable, "-m", "ftwiz.core.engine", str(run.path)],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "RANK": "0"})
        assert out.returncode == 2 and "owns this run directory" in _one_line(out.stderr)
        assert run.read_status()["pid"] == owner.pid
        assert (run.events_path.read_bytes() if run.events_path.exists() else b"") == events_before
    finally:
        _end(owner)


def test_removing_status_json_mid_run_neither_hides_the_run_nor_lets_a_second_one_in(tmp_path, capsys):
    run = _run(tmp_path)
    owner = _owner(run, save_s=0.2)
    try:
        run.status_path.unlink()
        assert run.state() == "running"  # the owner lives, whatever status.json says
        assert main(["--runs-dir", str(tmp_path), "resume", "owned"]) == 2
        capsys.readouterr()
        # The owner writes its whole status at the next heartbeat (not a merge into nothing)...
        _wait(lambda: run.read_status().get("pid") == owner.pid, timeout=5)
        assert run.read_status()["state"] == "running" and run.read_status()["pid_started"]
        # ...and `stop` finds and stops it.
        assert main(["--runs-dir", str(tmp_path), "stop", "owned"]) == 0
        assert "stopping owned" in capsys.readouterr().out
        owner.wait(timeout=20)
        assert run.state() == "stopped"
    finally:
        _end(owner)


def test_stop_leaves_status_json_to_its_owner_and_says_so_in_an_event(tmp_path, capsys):
    run = _run(tmp_path)
    owner = _owner(run, save_s=4)  # longer than a heartbeat
    try:
        assert main(["--runs-dir", str(tmp_path), "stop", "owned"]) == 0
        requested = [e for e in run.iter_events() if e["type"] == "stop_requested"]
        assert requested and requested[0]["pid"] == owner.pid
        # The owner itself says "stopping" (its next status write) and finally "stopped".
        _wait(lambda: run.read_status().get("state") == "stopping", timeout=5)
        owner.wait(timeout=20)
        assert run.read_status()["state"] == "stopped" and run.state() == "stopped"
        # A second stop after it ended changes nothing: still stopped, never crashed.
        assert main(["--runs-dir", str(tmp_path), "stop", "owned"]) == 0
        assert "not running (stopped)" in capsys.readouterr().out
        assert run.read_status()["state"] == "stopped" and run.state() == "stopped"
    finally:
        _end(owner)


@pytest.mark.parametrize("forged", ["start_time", "command_line", "lock_free"])
def test_stop_never_signals_a_process_that_is_not_this_runs_engine(tmp_path, forged, capsys):
    """A crashed run's pid now belongs to another process: neither stop nor a second stop
    (which would SIGKILL the process group) may signal it."""
    stranger = sleeping_process(seconds=60)  # its command line even names the engine module
    try:
        run = _run(tmp_path, state="stopping")  # a second stop would kill
        identity = process_identity(stranger.pid)
        if forged == "start_time":
            identity["pid_started"] -= 30
        elif forged == "command_line":
            identity["pid_cmdline"] = [sys.executable, "-m", "ftwiz.core.engine", str(run.path)]
        else:  # recorded identity matches, but the run's lock is free: its owner is gone
            os.close(run.hold_lock())
        run.write_status(pid=stranger.pid, **identity)
        for _ in range(2):
            assert main(["--runs-dir", str(tmp_path), "stop", "owned"]) == 0
            assert "is not running" in capsys.readouterr().out
        time.sleep(0.2)
        assert stranger.poll() is None  # alive: never signalled
        assert not [e for e in run.iter_events() if e["type"] in ("killed", "stop_requested")]
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("last, shown", [
    ("stopped", "stopped"), ("finished", "finished"), ("error", "failed"), ("killed", "killed"), (None, "crashed"),
])
def test_a_run_that_ended_is_shown_as_it_said_it_ended(tmp_path, last, shown, capsys):
    """status.json still says "stopping" (a writer that lost a race, a kill before the last
    write), the owner is gone: the state comes from the events; crashed only without one."""
    run = _run(tmp_path, state="stopping")
    os.close(run.hold_lock())  # owned once, owner gone
    run.write_status(pid=dead_pid())
    events = [{"t": 1.0, "type": "started"}, {"t": 2.0, "type": "step", "step": 1, "max_steps": 40, "loss": 1.0}]
    if last:
        events.append({"t": 3.0, "type": last, "step": 1, "message": "x"})
    append_events(run, events)
    assert run.state() == shown
    assert main(["--runs-dir", str(tmp_path), "runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == shown
    # An ending from before the last resume does not count for the new process.
    append_events(run, [{"t": 4.0, "type": "resumed", "previous_state": shown}])
    assert run.state() == "crashed"


def test_a_kill_never_overwrites_the_final_state_the_run_wrote(tmp_path):
    """`stop` kills (second stop) while the run is writing its own final state: the run's
    final state stands; only a run that had not said how it ended becomes killed."""
    run = _run(tmp_path)
    owner = _owner(run, save_s=30)  # a long save: the second stop kills it
    try:
        assert run.stop() == "stopping"
        assert run.stop() == "killed"
        owner.wait(timeout=10)
        assert run.read_status()["state"] == "killed" and run.state() == "killed"
        kills = [e for e in run.iter_events() if e["type"] == "killed"]
        assert len(kills) == 1 and kills[0]["pid"] == owner.pid
    finally:
        _end(owner)
    finished = _run(tmp_path, name="done", state="finished")
    os.close(finished.hold_lock())
    finished._record_kill()  # what a kill that lost the race to the run's own last write does
    assert finished.read_status()["state"] == "finished"


def test_run_names_are_one_safe_line(tmp_path, capsys):
    from ftwiz.core.runs import check_run_name

    for bad in ["x\n", "x\ny", "\nx", "x\r", "x\t", "a/b", "..", "x" * 101, ""]:
        with pytest.raises(UserError):
            check_run_name(bad)
    with pytest.raises(UserError):
        create_run_dir(tmp_path, "trailing\n")
    assert not list(tmp_path.iterdir())
    runs = tmp_path / "runs"
    config = tmp_path / "c.yaml"
    config.write_text("model: {name_or_path: m}\ndata: {path: d.jsonl}\n")
    assert main(["--runs-dir", str(runs), "train", str(config), "--name", "bad\n"]) == 2
    assert "run name" in _one_line(capsys.readouterr().err)
    config.write_text('name: "bad\\n"\nmodel: {name_or_path: m}\ndata: {path: d.jsonl}\n')
    assert main(["--runs-dir", str(runs), "train", str(config)]) == 2
    assert "run name" in _one_line(capsys.readouterr().err)
    assert not runs.exists()
