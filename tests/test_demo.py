"""`ftwiz train --demo`: offline, on the CPU, under 2 minutes, with a measured before/after gain."""

from __future__ import annotations

import json
import time

import pytest

from ftwiz.cli.main import main
from ftwiz.core import demo
from ftwiz.core.runs import list_runs


def test_demo_rows_and_score():
    rows = demo.demo_rows(5, seed=3)
    assert rows == demo.demo_rows(5, seed=3)
    assert all(demo.format_ok(r["completion"]) for r in rows)
    assert demo.score(["2020-01-02", "Jan 2"], ["2020-01-02", "2020-01-02"]) == {"format_match": 0.5, "exact_match": 0.5}


def test_demo_tokenizer_round_trips():
    tokenizer = demo.build_tokenizer()
    text = "Date: March 5, 2021\nISO: 2021-03-05"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tokenizer.decode(ids) == text


@pytest.mark.slow
def test_train_demo_shows_a_measured_gain_in_under_two_minutes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FTWIZ_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    began = time.time()
    assert main(["--runs-dir", str(runs), "train", "--demo", "--foreground"]) == 0
    took = time.time() - began
    out = capsys.readouterr().out
    assert "before" in out and "after" in out
    (run,) = list_runs(runs)
    assert run.state() == "finished"
    assert took < 120, f"demo took {took:.0f}s"
    samples = json.loads(run.samples_path.read_text())
    finished = [e for e in run.iter_events() if e["type"] == "finished"][0]
    assert finished["demo_score"]["before"] == samples["before"]
    assert samples["count"] == 50
    from ftwiz.core.engine.checkpoints import complete_checkpoints

    # save_steps 50, save_total_limit 2: only the newest two complete checkpoints stay.
    assert [p.name for p in complete_checkpoints(run.checkpoints_dir)] == ["checkpoint-150", "checkpoint-200"]
    assert samples["before"]["format_match"] <= 0.1
    assert samples["after"]["format_match"] >= 0.8
    print(f"demo: {took:.0f}s, format match {samples['before']['format_match']:.0%} -> {samples['after']['format_match']:.0%}")
