"""The run directory contract: atomic status, whole event lines, never-reused directories."""

from __future__ import annotations

import json

from ftwiz.core.runs import EVENT_SCHEMA_VERSION, RunDir, create_run_dir, list_runs, open_run


def test_events_are_read_whole_lines_only(tmp_path):
    run = create_run_dir(tmp_path, "r")
    run.emit("eval", step=1, eval_loss=2.0, epoch=0.5)
    with open(run.events_path, "a") as handle:
        handle.write('{"v": 1, "type": "st')  # a writer caught mid-line
    events, offset = run.read_events(0)
    assert [e["type"] for e in events] == ["eval"] and events[0]["v"] == EVENT_SCHEMA_VERSION
    with open(run.events_path, "a") as handle:
        handle.write('ep", "step": 2}\n')
    more, _ = run.read_events(offset)
    assert more == [{"v": 1, "type": "step", "step": 2}]


def test_status_merges_updates_and_stamps_heartbeat(tmp_path):
    run = create_run_dir(tmp_path, "r")
    run.write_status(state="running", step=1)
    first = run.read_status()["heartbeat"]
    run.write_status(step=2)
    status = run.read_status()
    assert status["state"] == "running" and status["step"] == 2 and status["heartbeat"] >= first
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]


def test_create_never_reuses_and_list_and_open_find_runs(tmp_path):
    a = create_run_dir(tmp_path, "x")
    b = create_run_dir(tmp_path, "x")
    assert (a.name, b.name) == ("x", "x-2")
    for run in (a, b):
        run.config_path.write_text("name: x\n")
    assert {r.name for r in list_runs(tmp_path)} == {"x", "x-2"}
    assert open_run("x-2", tmp_path) == RunDir(tmp_path / "x-2")
    assert json.loads(json.dumps(a.read_status())) == {}


def test_graceful_stop_targets_accelerate_workers_not_the_launcher(tmp_path):
    """Under `accelerate launch` SIGTERM goes to the training workers; a plain run gets it itself."""
    import subprocess
    import sys
    import time

    from ftwiz.core.runs import _training_pids

    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', 'ftwiz.core.engine', 'RUN']); "
        "time.sleep(30)"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code, "accelerate.commands.launch", "ftwiz.core.engine"])
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "ftwiz.core.engine"])
    try:
        deadline = time.time() + 10
        while _training_pids(launcher.pid) == [launcher.pid] and time.time() < deadline:
            time.sleep(0.05)
        workers = _training_pids(launcher.pid)
        assert launcher.pid not in workers and len(workers) == 1
        assert _training_pids(plain.pid) == [plain.pid]
    finally:
        import psutil

        for child in psutil.Process(launcher.pid).children(recursive=True):
            child.kill()
        launcher.kill()
        plain.kill()
        launcher.wait()
        plain.wait()
