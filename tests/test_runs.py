"""The run directory contract: atomic status, whole event lines, never-reused directories."""

from __future__ import annotations

import json

from ftwiz.core.runs import EVENT_SCHEMA_VERSION, RunDir, create_run_dir, list_runs, open_run


def test_events_are_read_whole_lines_only(tmp_path):
    run = create_run_dir(tmp_path, "r")
    run.emit("step", step=1, loss=2.0)
    with open(run.events_path, "a") as handle:
        handle.write('{"v": 1, "type": "st')  # a writer caught mid-line
    events, offset = run.read_events(0)
    assert [e["type"] for e in events] == ["step"] and events[0]["v"] == EVENT_SCHEMA_VERSION
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
