"""CPU checks of the benchmark harness's pure parts, and of the estimator against the H200 matrix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import report  # noqa: E402
import speed  # noqa: E402

RESULTS = BENCH / "results"


def test_parse_result_takes_the_last_result_line_and_ignores_noise():
    out = "loading...\nBENCH_RESULT {\"a\": 1}\nwarning\nBENCH_RESULT {\"a\": 2}\ntrailing\n"
    assert common.parse_result(out) == {"a": 2}
    assert common.parse_result("no result here\n") is None
    assert common.parse_result("BENCH_RESULT {broken\n") is None


def test_run_child_reports_crash_and_timeout_without_raising():
    crashed = common.run_child([sys.executable, "-c", "import sys; sys.exit(3)"], 30)
    assert crashed["status"] == "crashed" and crashed["returncode"] == 3
    slow = common.run_child([sys.executable, "-c", "import time; time.sleep(5)"], 0.5)
    assert slow["status"] == "timeout"
    ok = common.run_child([sys.executable, "-c", "print('BENCH_RESULT {\"x\": 1}')"], 30)
    assert ok["status"] == "ok" and ok["x"] == 1


def test_error_pct_is_signed_and_relative_to_the_measurement():
    assert report.error_pct(11.0, 10.0) == 10.0
    assert report.error_pct(9.0, 10.0) == -10.0
    assert report.error_pct(None, 10.0) is None
    assert report.error_pct(1.0, None) is None
    assert report.within([9.9, -10.0]) and not report.within([10.1]) and not report.within([None])


def test_merge_prefers_measurements_over_skipped_placeholders():
    first = {"results": [{"id": "x", "status": "ok", "peak_allocated_gib": 1.0}, {"id": "y", "status": "skipped"}]}
    second = {"results": [{"id": "x", "status": "skipped"}, {"id": "y", "status": "ok", "peak_allocated_gib": 2.0}]}
    merged = {r["id"]: r for r in report.merge_results([first, second])}
    assert merged["x"]["status"] == "ok" and merged["y"]["peak_allocated_gib"] == 2.0


def test_matrix_markdown_flags_configs_outside_the_tolerance():
    rows = [
        {"id": "m/lora/ckpt-on/mb4/s512", "status": "ok", "peak_allocated_gib": 10.0, "tokens_per_s": 100.0,
         "estimate": {"est_peak_allocated_gib": 10.5, "err_allocated_pct": 5.0}},
        {"id": "m/lora/ckpt-off/mb4/s512", "status": "ok", "peak_allocated_gib": 10.0, "tokens_per_s": 100.0,
         "estimate": {"est_peak_allocated_gib": 12.0, "err_allocated_pct": 20.0}},
        {"id": "m/qlora/ckpt-on/mb4/s512", "status": "skipped"},
    ]
    text = report.matrix_markdown(rows, {"gpu": "NVIDIA H200", "torch": "2.11.0"}, "abc123")
    assert "| m/lora/ckpt-on/mb4/s512 | ok | 10.00 | 10.50 | 5.0 |" in text
    assert "**no**" in text.splitlines()[text.splitlines().index(next(l for l in text.splitlines() if "ckpt-off" in l))]
    assert "1 of 2 measured" in text and "Not measured (device time ran out): m/qlora" in text
    assert "NVIDIA H200" in text and "abc123" in text


def test_speed_summary_ratios_and_loss_agreement():
    runs = [
        {"arm": "a", "status": "ok", "real_tokens_per_s": 1000.0, "mfu_pct": 5.0, "peak_allocated_gib": 20.0, "losses": [12.0, 11.9]},
        {"arm": "a", "status": "ok", "real_tokens_per_s": 1200.0, "mfu_pct": 6.0, "peak_allocated_gib": 20.0, "losses": [12.0, 11.91]},
        {"arm": "c", "status": "ok", "real_tokens_per_s": 3300.0, "mfu_pct": 15.0, "peak_allocated_gib": 30.0, "losses": [12.0, 11.95]},
        {"arm": "b", "status": "skipped"},
    ]
    s = speed.summarise(runs)
    assert s["real_tokens_per_s_median"]["a"] == 1100.0
    assert s["ratios_to_a"] == {"c": 3.0}
    assert s["loss_max_abs_diff_vs_a"]["c"] == 0.05
    assert "b" not in s["real_tokens_per_s_median"]


def test_realistic_lengths_and_batching_keep_every_real_token():
    pytest.importorskip("torch")
    import speed_worker as sw

    lengths = sorted(sw.lengths_for(2000, 7))
    assert 170 <= lengths[1000] <= 230 and lengths[-1] <= 2048 and lengths[0] >= 16
    seqs = [[5] * n for n in (3, 7, 2, 9, 4)]
    padded = list(sw.padded_batches(seqs, 2))
    assert sum(real for _, real in padded) == 25
    first, _ = padded[0]
    assert first["input_ids"].shape == (2, 7) and int((first["labels"] == -100).sum()) == 4  # row 0's padding
    packed = list(sw.packed_rows(seqs, 12))
    assert [b["input_ids"].shape[1] for b, _ in packed] == [12, 9, 4] and sum(r for _, r in packed) == 25
    row, _ = packed[0]
    assert row["position_ids"][0].tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 0, 1]
    # no prediction across a boundary: the first token of every packed sequence carries no label
    assert [i for i, v in enumerate(row["labels"][0].tolist()) if v == -100] == [0, 3, 10]


def _measured_matrix() -> list[dict]:
    docs = [json.loads((RESULTS / f).read_text()) for f in report.MATRIX_FILES if (RESULTS / f).exists()]
    return [r for r in report.merge_results(docs) if r.get("status") == "ok"]


@pytest.mark.parametrize("row", [pytest.param(r, id=r["id"]) for r in _measured_matrix()])
def test_estimator_within_10_percent_of_the_measured_peak(row):
    est = report.estimate_row(row)
    assert abs(est["err_allocated_pct"]) <= 10.0, est


def test_gpu_fixture_was_recorded_on_the_h200():
    data = json.loads((Path(__file__).parent / "fixtures" / "gpus" / "h200.json").read_text())
    assert data["nvml_state"] == "ok" and data["gpus"][0]["name"] == "NVIDIA H200"
    assert data["gpus"][0]["compute_capability"] == [9, 0] and data["gpus"][0]["bf16"] is True


def test_peer_summary_ratios_per_checkpointing_setting():
    import peer

    runs = [
        {"status": "ok", "name": n, "grad_ckpt": c, "tokens_per_s": t, "peak_allocated_gib": 1.0, "nvml_used_gib": 2.0, "mfu_pct": 1.0}
        for n, c, t in [("peft", True, 100), ("unsloth", True, 150), ("ftwiz-c", True, 165), ("ftwiz-c", True, 175),
                        ("peft", False, 200), ("unsloth", False, 210), ("ftwiz-c", False, 240)]
    ] + [{"status": "crashed", "name": "unsloth", "grad_ckpt": False}]
    s = peer.summarise(runs)
    assert s["checkpointing"]["tokens_per_s_median"]["ftwiz-c"] == 170
    assert s["checkpointing"]["ratio_to_unsloth"]["ftwiz-c"] == pytest.approx(170 / 150, abs=1e-3)
    assert s["no_checkpointing"]["ratio_to_peft"]["unsloth"] == pytest.approx(1.05)


def test_committed_peer_and_ddp_results_render_and_hold_the_claims():
    """The figures the README quotes, read back from the committed GPU results."""
    peer_doc = json.loads((RESULTS / "peer-h200-round2.json").read_text())
    s = peer_doc["summary"]
    assert peer_doc["environment"]["gpu"] == "NVIDIA H200"
    assert s["checkpointing"]["ratio_to_unsloth"]["ftwiz-c"] >= 1.0
    assert s["no_checkpointing"]["ratio_to_unsloth"]["ftwiz-c"] >= 1.0
    assert s["no_checkpointing"]["peak_allocated_gib_max"]["ftwiz-c"] <= s["no_checkpointing"]["peak_allocated_gib_max"]["unsloth"]
    ddp = json.loads((RESULTS / "ddp-h200x2-call3.json").read_text())
    assert ddp["environment"]["gpu_count"] == 2 and ddp["two_gpu_ratio"]["compiled"] >= 1.8
    assert json.loads((RESULTS / "ddp-h200x2-call2.json").read_text())["two_gpu_ratio"]["eager"] >= 1.8
    docs = [(f, json.loads((RESULTS / f).read_text())) for f in report.PEER_FILES]
    assert "| round2 | unsloth | on |" in report.peer_markdown(docs).replace(f"| {docs[1][0]} |", "| round2 |")
    assert "two GPUs / one GPU" in report.ddp_markdown([(f, json.loads((RESULTS / f).read_text())) for f in report.DDP_FILES])


def test_measured_package_data_is_what_report_writes_from_the_results():
    """core/measured.json (what the planner quotes, shipped in the wheel) matches bench/results."""
    written = json.loads(report.MEASURED.read_text())
    assert written == report.measured_summary(report._read("speed-h200.json"), report._read("peer-h200-round2.json"),
                                              report._read(report.REAL_DIAG), report._read(report.REAL))


def test_real_chat_results_hold_the_readmes_figures():
    """What the README says of `ftwiz train` on real chat data, read back from bench/results."""
    doc = json.loads((RESULTS / "real-chat-h200.json").read_text())
    arms, targets = doc["arms"], doc["targets"]
    assert doc["gpu"] == "NVIDIA H200" and doc["data"]["conversations"] == 400
    headline = ("guide", "unsloth_matched", "unsloth_notebook", "ftwiz_plan", "ftwiz_qlora")
    assert set(headline) <= set(arms) and all(arms[name]["status"] == "ok" for name in headline)
    assert all(a["status"] == "ok" or a.get("note") for a in arms.values())  # any other outcome is explained
    assert targets["plan_vs_guide_steady"] >= 2.0 and targets["qlora_vs_guide_steady"] >= 1.3
    assert targets["plan_vs_unsloth_matched_steady"] >= 1.0
    readme = (RESULTS.parent.parent / "README.md").read_text()
    plan, guide, matched = arms["ftwiz_plan"], arms["guide"], arms["unsloth_matched"]
    for figure in (f"{plan['steady_tokens_per_s']:,.0f}", f"{guide['steady_tokens_per_s']:,.0f}",
                   f"{matched['steady_tokens_per_s']:,.0f}",
                   f"{plan['steady_tokens_per_s'] / guide['steady_tokens_per_s']:.2f}x",
                   f"{plan['steady_tokens_per_s'] / matched['steady_tokens_per_s']:.2f}x"):
        assert figure in readme, figure
    assert doc == json.loads(json.dumps(report.real_summary()))  # the merged file is what report.py makes of the calls' files
