"""Process faults: kill -9 mid-step and mid-save, SIGHUP, stop twice, same name twice, silent death."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from helpers_engine import (
    complete_steps,
    config_dict,
    events,
    kill9,
    start,
    step_events_after,
    tiny_model_dir,
    wait_for,
    wait_state,
    write_data,
)

from ftwiz.cli.main import main
from ftwiz.core.engine.checkpoints import COMPLETE_MARKER, latest_checkpoint
from ftwiz.core.runs import HEARTBEAT_STALE_S, RunDir, create_run_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def _ftwiz(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ftwiz.cli.main", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.slow
def test_sighup_then_kill9_mid_step_then_resume_continues_the_curve(model, tmp_path, monkeypatch):
    data = write_data(tmp_path / "d.jsonl")
    runs = tmp_path / "runs"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(config_dict(model, data, "hup", max_steps=12)), encoding="utf-8")
    env = {**os.environ, "FTWIZ_FAULT_SLOW_STEP_S": "0.4"}
    # A "shell" in its own session starts the run and stays; then its whole group gets SIGHUP,
    # as when an SSH connection drops.
    shell = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from ftwiz.cli.main import main; "
         f"main(['--runs-dir', {str(runs)!r}, 'train', {str(config)!r}]); time.sleep(120)"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        run = RunDir(runs / "hup")
        wait_for(lambda: run.read_status().get("step", 0) >= 1, 90, "first step", run)
        os.killpg(shell.pid, signal.SIGHUP)
        os.kill(run.read_status()["pid"], signal.SIGHUP)  # and the run itself: ignored
        shell.wait(10)
        step_at_hup = run.read_status()["step"]
        wait_for(lambda: run.read_status()["step"] >= step_at_hup + 2, 60, "training goes on after SIGHUP", run)
        listed = json.loads(_ftwiz("--runs-dir", str(runs), "runs", "--json").stdout)
        assert listed[0]["name"] == "hup" and listed[0]["state"] == "running"
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)

    wait_for(lambda: 4 in complete_steps(run) and run.read_status()["step"] >= 6, 60, "checkpoint-4 and step 6", run)
    before = {e["step"]: e["loss"] for e in events(run, "step")}
    kill9(run)
    assert run.state() == "crashed"

    assert main(["--runs-dir", str(runs), "resume", "hup"]) == 0  # no slow steps this time (env of this process)
    wait_state(run, {"finished", "failed"})
    assert run.state() == "finished", run.log_path.read_text()[-3000:]
    after = step_events_after(run, "resumed")
    assert [e["step"] for e in after] == list(range(5, 13))  # from checkpoint-4: no reset, no gap
    assert run.read_status()["step"] == 12
    model_event = events(run, "model")[-1]
    assert model_event["step"] == 4 and model_event["lora_modules"] == 14 and model_event["peft_wrappers"] == 1
    # Weights, optimizer, scheduler, RNG and data order restored: step 5 is recomputed alike.
    assert after[0]["loss"] == pytest.approx(before[5], rel=0.02)
    assert after[0]["learning_rate"] == pytest.approx(events(run, "step")[4]["learning_rate"])


@pytest.mark.slow
def test_kill9_while_a_checkpoint_is_written_keeps_and_uses_the_previous_one(model, tmp_path, monkeypatch):
    data = write_data(tmp_path / "d.jsonl")
    monkeypatch.setenv("FTWIZ_FAULT_SLOW_SAVE_S", "2.5")
    run = start(model, data, tmp_path / "runs", "midsave", max_steps=8)
    wait_for(lambda: 4 in complete_steps(run), 90, "checkpoint-4", run)
    staging = run.checkpoints_dir / ".staging-8"
    wait_for(lambda: (staging / "checkpoint-8" / "adapter_model.safetensors").exists(), 60, "save of 8 under way", run)
    kill9(run)
    assert not (run.checkpoints_dir / "checkpoint-8").exists()
    assert latest_checkpoint(run.checkpoints_dir).name == "checkpoint-4"
    from safetensors.torch import load_file

    assert load_file(run.checkpoints_dir / "checkpoint-4" / "adapter_model.safetensors")  # intact

    monkeypatch.delenv("FTWIZ_FAULT_SLOW_SAVE_S")
    assert main(["--runs-dir", str(tmp_path / "runs"), "resume", "midsave"]) == 0
    wait_state(run, {"finished", "failed"})
    assert run.state() == "finished", run.log_path.read_text()[-3000:]
    started = events(run, "started")[-1]
    assert started["resumed_from"] == "checkpoints/checkpoint-4"
    assert any(".staging-8" in e["message"] for e in events(run, "warning"))
    assert [e["step"] for e in step_events_after(run, "resumed")] == [5, 6, 7, 8]
    assert not staging.exists()


def test_partial_checkpoints_are_skipped(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        if complete:
            (path / COMPLETE_MARKER).write_text("ok\n")
    (tmp_path / ".staging-8" / "checkpoint-8").mkdir(parents=True)
    assert latest_checkpoint(tmp_path).name == "checkpoint-4"


@pytest.mark.slow
def test_stop_saves_then_second_stop_kills(model, tmp_path, monkeypatch):
    data = write_data(tmp_path / "d.jsonl")
    runs = tmp_path / "runs"
    monkeypatch.setenv("FTWIZ_FAULT_SLOW_STEP_S", "0.3")
    graceful = start(model, data, runs, "graceful", max_steps=200, save_steps=100)
    monkeypatch.setenv("FTWIZ_FAULT_SLOW_SAVE_S", "30")
    forced = start(model, data, runs, "forced", max_steps=200, save_steps=100)

    wait_for(lambda: graceful.read_status().get("step", 0) >= 2, 90, "graceful run stepping", graceful)
    assert main(["--runs-dir", str(runs), "stop", "graceful"]) == 0
    # More SIGTERMs land at many points while the run writes status (every step, and the
    # heartbeat): the handler must never block on the status lock (it only sets a flag).
    worker = graceful.read_status()["worker_pid"]
    for _ in range(40):
        try:
            os.kill(worker, signal.SIGTERM)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    wait_state(graceful, {"stopped", "failed", "crashed"}, timeout=60)
    assert graceful.state() == "stopped"
    step = graceful.read_status()["step"]
    assert complete_steps(graceful) == [step] and events(graceful, "stopped")[0]["step"] == step

    wait_for(lambda: forced.read_status().get("step", 0) >= 2, 90, "forced run stepping", forced)
    assert main(["--runs-dir", str(runs), "stop", "forced"]) == 0
    wait_for(lambda: any(p.name.startswith(".staging") for p in forced.checkpoints_dir.iterdir())
             if forced.checkpoints_dir.exists() else False, 60, "the stop's save under way", forced)
    assert forced.state() == "stopping"
    beat = forced.read_status()["heartbeat"]  # the heartbeat thread beats on inside a long save
    wait_for(lambda: forced.read_status()["heartbeat"] > beat + 1, 10, "heartbeat during the save", forced)
    assert main(["--runs-dir", str(runs), "stop", "forced"]) == 0
    assert forced.state() == "killed"
    assert events(forced, "killed")
    wait_for(lambda: not _alive(forced.read_status()["pid"]), 10, "process gone")
    assert complete_steps(forced) == []


def _alive(pid: int) -> bool:
    from ftwiz.core.runs import pid_alive

    return pid_alive(pid)


def test_two_runs_with_one_name_get_their_own_directories(tmp_path):
    made: list[RunDir] = []
    threads = [threading.Thread(target=lambda: made.append(create_run_dir(tmp_path, "same"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = sorted(r.name for r in made)
    assert len(set(names)) == 6 and "same" in names and "same-2" in names


SIGNAL_STORM = """
import os, signal, sys, threading, time
from pathlib import Path
from ftwiz.core.engine.process import Flags, Status, install_signal_handlers
from ftwiz.core.runs import create_run_dir

status = Status(create_run_dir(Path(sys.argv[1]), "storm"), enabled=True)
flags = Flags()
install_signal_handlers(flags)
done = threading.Event()

def storm():
    while not done.is_set():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.0005)

threading.Thread(target=storm, daemon=True).start()
status.start_heartbeat()
for step in range(400):
    status.update(step=step)
done.set()
print("survived", flags.stop_requested)
"""


def test_sigterm_during_status_writes_never_deadlocks(tmp_path):
    """SIGTERM every 0.5 ms while the main thread writes status.json under its lock: a handler
    that wrote status itself would wait forever on the lock its own thread holds."""
    out = subprocess.run([sys.executable, "-c", SIGNAL_STORM, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "survived True", out.stderr[-2000:]


def test_live_run_with_stale_heartbeat_shows_as_stalled(tmp_path, capsys):
    """The process is still an ftwiz run but silent (hung): stalled, not running forever."""
    hung = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ftwiz.core.engine"])
    try:
        run = create_run_dir(tmp_path, "hung")
        run.config_path.write_text("name: hung\n")
        run.write_status(state="running", pid=hung.pid, step=3)
        assert run.state() == "running"
        assert run.state(now=time.time() + HEARTBEAT_STALE_S + 5) == "stalled"
        status = json.loads(run.status_path.read_text())
        status["heartbeat"] -= HEARTBEAT_STALE_S + 5
        run.status_path.write_text(json.dumps(status))
        assert main(["--runs-dir", str(tmp_path), "runs", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["state"] == "stalled"
        assert main(["--runs-dir", str(tmp_path), "runs"]) == 0
        assert "hung: stalled" in capsys.readouterr().out
        assert main(["--runs-dir", str(tmp_path), "resume", "hung"]) == 2  # alive: stop it first
    finally:
        hung.kill()
        hung.wait()


def test_silent_death_shows_as_crashed(tmp_path, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    run = create_run_dir(tmp_path, "ghost")
    run.config_path.write_text("name: ghost\n")
    run.write_status(state="running", pid=dead.pid, step=3)
    assert run.state() == "crashed"
    # A live pid that is no longer an ftwiz run (recycled) with a stale heartbeat: crashed too.
    run.write_status(state="running", pid=os.getpid())
    assert run.state() == "running"
    assert run.state(now=time.time() + HEARTBEAT_STALE_S + 5) == "crashed"
    run.write_status(state="running", pid=dead.pid)
    assert main(["--runs-dir", str(tmp_path), "runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "crashed"
