"""Turn the GPU's raw results into tables, with the estimator's prediction and error per config.

    python bench/report.py            # reads bench/results/*.json, writes bench/results/*.md + estimator-errors.json

The estimator (ftwiz.core.memory.estimate_memory) runs here, on the CPU, on the very
configuration each GPU process measured, so the error table always reflects the estimator at
the current commit (re-run after a calibration change). The measurements are never edited.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MATRIX_FILES = ("matrix-h200-call1.json", "matrix-h200-call2.json")
TOLERANCE_PCT = 10.0


def error_pct(predicted: float | None, measured: float | None) -> float | None:
    """Signed error of a prediction in percent of the measurement (positive = over-estimate)."""
    if predicted is None or not measured:
        return None
    return round(100.0 * (predicted - measured) / measured, 1)


def merge_results(docs: list[dict]) -> list[dict]:
    """One row per configuration id: a measured result beats a 'skipped' placeholder, later beats earlier."""
    rows: dict[str, dict] = {}
    for doc in docs:
        for r in doc.get("results", []):
            if r.get("status") == "skipped" and r["id"] in rows:
                continue
            rows[r["id"]] = r
    return list(rows.values())


def estimate_row(r: dict) -> dict[str, Any]:
    """The estimator's prediction for one measured configuration, and the errors."""
    from ftwiz.core.memory import estimate_memory
    from ftwiz.core.models import load_model_info

    est = estimate_memory(
        load_model_info(r["model"]), method=r["method"], micro_batch=r["micro_batch"], seq_len=r["seq_len"],
        rank=r["rank"], targets=r["targets"], grad_ckpt=r["grad_ckpt"], optim=r["optim"],
        qlora_upcast=r.get("qlora_upcast", False), lora_dropout=r.get("lora_dropout", 0.05),
    )
    out = {
        "est_peak_allocated_gib": round(est.peak_gib, 3),
        "est_reserved_gib": round(est.reserved_gib, 3),
        "est_nvidia_smi_gib": round(est.nvidia_smi_gib, 3),
        "err_allocated_pct": error_pct(est.peak_gib, r.get("peak_allocated_gib")),
        "err_reserved_pct": error_pct(est.reserved_gib, r.get("peak_reserved_gib")),
        "err_nvidia_smi_pct": error_pct(est.nvidia_smi_gib, r.get("nvml_used_gib")),
    }
    if r.get("liger"):
        out["note"] = "Liger kernels on; the estimator does not model them"
    return out


def within(errors: list[float | None], tol: float = TOLERANCE_PCT) -> bool:
    vals = [e for e in errors if e is not None]
    return bool(vals) and all(abs(e) <= tol for e in vals)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def env_lines(env: dict) -> list[str]:
    keys = ("gpu", "driver", "torch", "transformers", "peft", "bitsandbytes", "trl", "liger-kernel", "accelerate", "python", "date")
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys), "| " + " | ".join(fmt(env.get(k)) for k in keys) + " |"]


def matrix_markdown(rows: list[dict], env: dict, commit: str | None) -> str:
    head = [
        "# Memory and throughput matrix (H200)", "",
        "Measured on the GPU by `bench/matrix.py` (one fresh process per configuration; random weights; "
        "full-length random-token sequences; bf16 autocast; SDPA; `model.train()`; "
        "`PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`; 2 warm-up + 4 timed steps). "
        f"Estimates from `ftwiz.core.memory.estimate_memory` at commit {commit or '?'}; error = (estimate - measured) / measured.", "",
        *env_lines(env), "",
        "| config | status | alloc GiB | est GiB | err % | reserved GiB | est | err % | nvidia-smi GiB | est | err % | tokens/s | within 10% |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    body = []
    for r in rows:
        e = r.get("estimate", {})
        ok = r.get("status") == "ok"
        body.append("| " + " | ".join([
            r["id"], r.get("status", "?"), fmt(r.get("peak_allocated_gib"), 2), fmt(e.get("est_peak_allocated_gib"), 2),
            fmt(e.get("err_allocated_pct")), fmt(r.get("peak_reserved_gib"), 2), fmt(e.get("est_reserved_gib"), 2),
            fmt(e.get("err_reserved_pct")), fmt(r.get("nvml_used_gib"), 2), fmt(e.get("est_nvidia_smi_gib"), 2),
            fmt(e.get("err_nvidia_smi_pct")), fmt(r.get("tokens_per_s"), 0),
            ("yes" if within([e.get("err_allocated_pct")]) else "**no**") if ok and e else "-",
        ]) + " |")
    measured = [r for r in rows if r.get("status") == "ok" and r.get("estimate")]
    n_ok = sum(within([r["estimate"].get("err_allocated_pct")]) for r in measured)
    tail = ["", f"Peak allocated within {TOLERANCE_PCT:.0f}%: {n_ok} of {len(measured)} measured configurations."]
    skipped = [r["id"] for r in rows if r.get("status") == "skipped"]
    if skipped:
        tail.append(f"Not measured (device time ran out): {', '.join(skipped)}.")
    return "\n".join(head + body + tail) + "\n"


def speed_markdown(doc: dict) -> str:
    s = doc.get("summary", {})
    lines = [
        "# Speed against the guide's baseline recipe (H200, Llama-3.1-8B shapes, random weights)", "",
        f"Measured by `bench/speed.py` in one run, arms alternating, each in its own process. Loop: {doc.get('loop')}. "
        f"Data: {doc['data']['sequences_per_step']} sequences per optimizer step (same effective batch in every arm), "
        f"{doc['data']['length_model']}; length stats {doc['data']['lengths']}. Same data and seeds in every arm. "
        f"MFU = real tokens/s x {doc.get('flops_per_token')} / 790 TFLOP/s (measured bf16 matmul rate).", "",
        *env_lines(doc.get("environment", {})), "",
        "| arm | method | r | ckpt | micro-batch | batching | Liger | optimizer | real tokens/s | padding share | MFU % | alloc GiB | nvidia-smi GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc.get("runs", []):
        if r.get("status") != "ok":
            lines.append(f"| {r.get('arm')} | {r.get('status')}: {r.get('error', '')} |||||||||||| ")
            continue
        lines.append("| " + " | ".join([
            r["arm"], r["method"] + ("+upcast" if r.get("qlora_upcast") else ""), str(r["rank"]), "on" if r["grad_ckpt"] else "off",
            str(r["micro_batch"]) if r["batching"] == "padded" else f"rows <= {r['token_budget']} tokens",
            r["batching"], "yes" if r["liger"] else "no", r["optim"], fmt(r["real_tokens_per_s"], 0),
            fmt(r["padding_share"], 3), fmt(r["mfu_pct"]), fmt(r["peak_allocated_gib"], 2), fmt(r["nvml_used_gib"], 2),
        ]) + " |")
    lines += ["", "Median real tokens/s per arm: " + ", ".join(f"{k} {v:.0f}" for k, v in s.get("real_tokens_per_s_median", {}).items()),
              "", "Ratios to the baseline (a): " + ", ".join(f"{k}/a = {v:.2f}" for k, v in s.get("ratios_to_a", {}).items()),
              "", "Largest per-step loss difference from the first baseline run (same data, same seed): "
              + ", ".join(f"{k} {v}" for k, v in s.get("loss_max_abs_diff_vs_a", {}).items()) + "."]
    return "\n".join(lines) + "\n"


def e2e_markdown(doc: dict) -> str:
    lines = [
        "# End to end through `ftwiz train` (H200, Llama-3.2-1B shapes, random weights)", "",
        f"`bench/e2e.py`: random bf16 weights and a local BPE tokenizer saved to disk, alpaca data {doc.get('data')}, "
        "then `python -m ftwiz.cli --runs-dir DIR train CONFIG --foreground` per method. Figures are the run's own events.", "",
        *env_lines(doc.get("environment", {})), "",
        "| method | state | steps | micro-batch x accum | ckpt | last tokens/s (events) | peak alloc GiB (events) | reserved GiB | first -> last loss | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in doc.get("runs", {}).items():
        s, t = r.get("summary", {}), r.get("config", {}).get("training", {})
        losses = s.get("losses") or []
        lines.append("| " + " | ".join([
            method, fmt(s.get("state")), fmt(s.get("final_step")),
            f"{t.get('per_device_train_batch_size')} x {t.get('gradient_accumulation_steps')}",
            "on" if t.get("gradient_checkpointing") else "off", fmt(s.get("tokens_per_s_last"), 0), fmt(s.get("peak_gib"), 2),
            fmt(s.get("reserved_gib_max"), 2), f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-", fmt(r.get("wall_s")),
        ]) + " |")
    return "\n".join(lines) + "\n"


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=RESULTS.parent.parent, timeout=10).stdout.strip() or None
    except OSError:
        return None


def main() -> None:
    commit = _commit()
    docs = [json.loads((RESULTS / f).read_text()) for f in MATRIX_FILES if (RESULTS / f).exists()]
    if docs:
        rows = merge_results(docs)
        for r in rows:
            if r.get("status") in ("ok", "oom"):
                r["estimate"] = estimate_row(r)
        (RESULTS / "matrix-h200.md").write_text(matrix_markdown(rows, docs[0]["environment"], commit))
        errors = [{"id": r["id"], "status": r["status"], "peak_allocated_gib": r.get("peak_allocated_gib"),
                   "peak_reserved_gib": r.get("peak_reserved_gib"), "nvml_used_gib": r.get("nvml_used_gib"),
                   "tokens_per_s": r.get("tokens_per_s"), **r.get("estimate", {})} for r in rows]
        (RESULTS / "estimator-errors.json").write_text(json.dumps({"estimator_commit": commit, "rows": errors}, indent=1) + "\n")
    for name, render in (("speed-h200", speed_markdown), ("e2e-h200", e2e_markdown)):
        path = RESULTS / f"{name}.json"
        if path.exists():
            (RESULTS / f"{name}.md").write_text(render(json.loads(path.read_text())))


if __name__ == "__main__":
    sys.exit(main())
