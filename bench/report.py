"""Turn the GPU's raw results into tables, with the estimator's prediction and error per config.

    python bench/report.py            # reads bench/results/*.json, writes bench/results/*.md + estimator-errors.json
                                      # and core/measured.json (the ratios the planner's reasons quote)

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
MEASURED = Path(__file__).resolve().parent.parent / "core" / "measured.json"
"""Package data: the measured ratios core.recommend quotes (nothing in core reads bench/)."""


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


def estimate_row(r: dict, liger: bool = False) -> dict[str, Any]:
    """The estimator's prediction for one measured configuration, and the errors.

    `liger`: estimate with Liger's memory model (the matrix's own tables leave it off and say so).
    """
    from ftwiz.core.memory import estimate_memory
    from ftwiz.core.models import load_model_info

    est = estimate_memory(
        load_model_info(r["model"]), method=r["method"], micro_batch=r["micro_batch"], seq_len=r["seq_len"],
        rank=r["rank"], targets=r["targets"], grad_ckpt=r["grad_ckpt"], optim=r["optim"],
        qlora_upcast=r.get("qlora_upcast", False), lora_dropout=r.get("lora_dropout", 0.05), liger=liger,
        input_cast=True,  # hand loops: peft's own input cast (the engine turns it off under autocast)
    )
    out = {
        "est_peak_allocated_gib": round(est.peak_gib, 3),
        "est_reserved_gib": round(est.reserved_gib, 3),
        "est_nvidia_smi_gib": round(est.nvidia_smi_gib, 3),
        "err_allocated_pct": error_pct(est.peak_gib, r.get("peak_allocated_gib")),
        "err_reserved_pct": error_pct(est.reserved_gib, r.get("peak_reserved_gib")),
        "err_nvidia_smi_pct": error_pct(est.nvidia_smi_gib, r.get("nvml_used_gib")),
    }
    if r.get("liger") and not liger:
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


PEER_FILES = ("peer-h200-round1.json", "peer-h200-round2.json")
DDP_FILES = ("ddp-h200x2-call1.json", "ddp-h200x2-call2.json", "ddp-h200x2-call3.json")


def peer_estimate(r: dict) -> dict[str, Any]:
    """estimate_row on a peer run (the reference set-up's LoRA; Liger's loss when ftwiz ran it)."""
    row = {**r, "model": "llama-3.1-8b", "method": "lora", "optim": "adamw_torch", "lora_dropout": 0.0}
    return estimate_row(row, liger=r["system"] == "ftwiz" and r.get("liger", False))


def peer_markdown(docs: list[tuple[str, dict]]) -> str:
    """Both peer rounds: every run, then each round's ratios (each round is one alternating run)."""
    env = docs[-1][1].get("environment", {})
    setup = docs[-1][1].get("setup", {})
    lines = [
        "# ftwiz against Unsloth and transformers + peft (H200, Llama-3.1-8B shapes, random weights)", "",
        "`bench/peer.py`: systems alternating within a round, each run in its own process; checkpointing on, then off. "
        f"Set-up: {setup}. tokens/s are real tokens (every sequence full length). "
        "Systems: `peft` = transformers + peft (the reference); `unsloth` = Unsloth 2026.10.9 FastLanguageModel "
        "(its own checkpointing, `use_gradient_checkpointing=\"unsloth\"`); `ftwiz-l` = ftwiz's engine with every Liger kernel; "
        "`ftwiz-c` = ftwiz's engine with compiled decoder layers (regional torch.compile) and Liger's fused linear "
        "cross-entropy. Unsloth crashed in round 1 (it needs bitsandbytes even for 16-bit LoRA, and round 1 carried none); "
        "round 2 installed it.", "",
        *env_lines(env), "",
        "| round | system | checkpointing | tokens/s | MFU % | peak alloc GiB | nvidia-smi GiB | estimator GiB (err %) | warm-up s | loss first -> last |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, doc in docs:
        for r in doc.get("runs", []):
            if r.get("status") != "ok":
                lines.append(f"| {label} | {r.get('name')} | {'on' if r.get('grad_ckpt') else 'off'} | {r.get('status')} |||||||")
                continue
            est = peer_estimate(r) if r["system"] != "unsloth" else {}
            losses = r.get("losses") or []
            lines.append("| " + " | ".join([
                label, r["name"], "on" if r["grad_ckpt"] else "off", fmt(r["tokens_per_s"], 0), fmt(r["mfu_pct"]),
                fmt(r["peak_allocated_gib"], 2), fmt(r["nvml_used_gib"], 2),
                f"{fmt(est.get('est_peak_allocated_gib'), 2)} ({fmt(est.get('err_allocated_pct'))})" if est else "-",
                fmt(r.get("warmup_s")), f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-",
            ]) + " |")
    lines.append("")
    for label, doc in docs:
        for setting, part in doc.get("summary", {}).items():
            for ref in ("peft", "unsloth"):
                ratios = part.get(f"ratio_to_{ref}")
                if ratios:
                    lines.append(f"- {label}, {setting.replace('_', ' ')}: tokens/s relative to {ref}: "
                                 + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    return "\n".join(lines) + "\n"


def ddp_markdown(docs: list[tuple[str, dict]]) -> str:
    """One GPU against two through `ftwiz train`, every call's runs and its ratio."""
    env = docs[-1][1].get("environment", {})
    lines = [
        "# One H200 against two through `ftwiz train` (accelerate DDP; Llama-3.2-1B shapes, random weights)", "",
        "`bench/ddp.py`: the real engine as a user starts it (`ftwiz train CONFIG --foreground`; two visible GPUs make it "
        "launch through `accelerate launch --multi_gpu`), LoRA r=16 on all linear layers, micro-batch 16 x 512 per GPU, "
        "packing, Liger, the pre-flight probe; `compiled` adds regional torch.compile. tokens/s are the run's own step "
        "events (TRL counts every rank's tokens), median after step 20. Peak is per GPU and includes the probe's batch.", "",
        *env_lines(env), "",
        "| call | run | GPUs | outcome | tokens/s | peak GiB per GPU | probe tokens/s | probe s | probe peak (predicted) GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, doc in docs:
        seen: set[str] = set()
        for r in doc.get("runs", []):
            if r["name"] in seen:  # an early bench/ddp.py reused the name, so it re-read the first run's events
                lines.append(f"| {label} | {r['name']} (again) | {r.get('gpus')} | not recorded: the summary re-read "
                             "the first run's events (fixed: one name per run) |||||| ")
                continue
            seen.add(r["name"])
            p = r.get("probe") or {}
            lines.append("| " + " | ".join([
                label, r["name"], str(r.get("gpus")), r["outcome"] + (f": {r.get('message')}" if r.get("message") else ""),
                fmt(r.get("tokens_per_s_median"), 0), fmt(r.get("peak_gib_per_gpu"), 2), fmt(p.get("tokens_per_s"), 0),
                fmt(p.get("duration_s")), f"{fmt(p.get('peak_gib'), 2)} ({fmt(p.get('predicted_peak_gib'), 2)})" if p else "-",
            ]) + " |")
        q = doc.get("qlora")
        if q:
            p = q.get("probe") or {}
            lines.append("| " + " | ".join([
                label, "qlora (dashboard open)", "1", q["outcome"], fmt(q.get("tokens_per_s_median"), 0),
                fmt(q.get("peak_gib_per_gpu"), 2), fmt(p.get("tokens_per_s"), 0), fmt(p.get("duration_s")),
                f"{fmt(p.get('peak_gib'), 2)} ({fmt(p.get('predicted_peak_gib'), 2)})" if p else "-"]) + " |")
    lines.append("")
    for label, doc in docs:
        if doc.get("two_gpu_ratio"):
            lines.append(f"- {label}: two GPUs / one GPU = " + ", ".join(f"{k} {v:.2f}x" for k, v in doc["two_gpu_ratio"].items()))
    return "\n".join(lines) + "\n"


REAL_DIAG = "real-chat-h200-diag-gpu0.json"
REAL = "real-chat-h200.json"


def measured_summary(speed: dict | None, peer: dict | None, diag: dict | None = None,
                     real: dict | None = None) -> dict[str, Any]:
    """What core/measured.json holds: the real-data figures of `ftwiz train` (bench/real.py: the
    attention and compile diagnosis, and ftwiz's plan against the guide's recipe and Unsloth),
    and the older hand-loop ratios (speed-h200, peer-h200), labelled as such."""
    out: dict[str, Any] = {}
    if diag:
        arms = diag["arms"]
        sdpa, varlen, eager = arms["ftwiz_plan"], arms["ftwiz_plan_varlen"], arms["ftwiz_plan_varlen_nocompile"]
        out["attention"] = {"sdpa_tokens_per_s": sdpa["steady_tokens_per_s"],
                            "varlen_tokens_per_s": varlen["steady_tokens_per_s"],
                            "ratio": round(varlen["steady_tokens_per_s"] / sdpa["steady_tokens_per_s"], 2),
                            "source": f"bench/results/{REAL_DIAG}"}
        out["compile"] = {"steady_gain": round(varlen["steady_tokens_per_s"] / eager["steady_tokens_per_s"] - 1, 3),
                          "cost_s": round(varlen["train_runtime_s"] - eager["train_runtime_s"], 1),
                          "source": f"bench/results/{REAL_DIAG}"}
    if real:
        arms = real["arms"]
        plan, guide = arms.get("ftwiz_plan") or {}, arms.get("guide") or {}
        matched = arms.get("unsloth_matched") or {}
        rate = plan.get("steady_tokens_per_s")
        out["real_chat"] = {
            "ftwiz_tokens_per_s": rate,
            "vs_guide": round(rate / guide["steady_tokens_per_s"], 2) if rate and guide.get("steady_tokens_per_s") else None,
            "vs_unsloth_matched": (round(rate / matched["steady_tokens_per_s"], 2)
                                   if rate and matched.get("steady_tokens_per_s") else None),
            "source": f"bench/results/{REAL}"}
        qlora = arms.get("ftwiz_qlora") or {}
        if rate and qlora.get("steady_tokens_per_s"):
            # core/cost.py's time model: model FLOPs utilisation of ftwiz's plan (LoRA 4N, no
            # checkpointing) against the H200's datasheet 989 TFLOP/s, and QLoRA's speed relative to it.
            params = 8.03e9  # Llama-3.1-8B, the arms' shapes
            out["time_calibration"] = {
                "efficiency": round(rate * 4 * params / 989e12, 3),
                "qlora_slowdown": round(max(1.0, rate / qlora["steady_tokens_per_s"]), 3),
                "lora_tokens_per_s": rate, "qlora_tokens_per_s": qlora["steady_tokens_per_s"],
                "source": f"bench/results/{REAL}"}
    if speed:
        ratios = dict(speed["summary"]["ratios_to_a"])
        padded = [r["padding_share"] for r in speed["runs"] if r.get("arm") == "a" and "padding_share" in r]
        out["speedups"] = {**ratios, **({"padding_share": padded[0]} if padded else {})}
        out["speedups_source"] = "bench/results/speed-h200.json"
    if peer:
        part = peer["summary"]["checkpointing"]
        out["compile_gain"] = {"peft": part["ratio_to_peft"]["ftwiz-c"], "unsloth": part["ratio_to_unsloth"]["ftwiz-c"]}
        out["compile_gain_source"] = "bench/results/peer-h200-round2.json"
    return out


REAL_CALLS = {
    # Round 2 of the real-data run, with the final defaults (all-linear, dropout 0, batches in
    # examples), one H200 (bench/README.md has the device commands). Unsloth needs its own wheels,
    # so each Unsloth command ran right after an ftwiz command on the same warm machine:
    # call 1 + call 2, then call 3 + call 4 (after ftwiz plan began counting tokens with the
    # model's tokenizer, which changed the plan's rows from 10,816 to 11,200 tokens).
    # Round 1 (q,k,v,o targets, dropout 0.05, two GPUs) stays in real-chat-h200-call{1,2,3}-gpu{0,1}.json.
    "call1": ("real-chat-h200-r2-call1.json",),
    "call2": ("real-chat-h200-r2-call2.json",),
    "call3": ("real-chat-h200-r2-call3.json",),
    "call4": ("real-chat-h200-r2-call4.json",),
    # Round 3: the MLP product recomputed in backward (training.recompute_mlp_input, on by default).
    # Call 5 ran at 5da6ade, whose recompute the Trainer's train() undid (it binds Liger's MLP
    # forward again): its ftwiz_plan_r4 trained without it (probe 53.5 GiB, training 62.8), so
    # it is no memory row; its simulated cards checkpoint, where nothing is recomputed. Calls 6-8
    # ran at 44579b9 (module hooks); call 7 (Unsloth) right after call 6 on the same machine.
    "call5": ("real-chat-h200-r3-call5.json",),
    "call6": ("real-chat-h200-r3-call6.json",),
    "call7": ("real-chat-h200-r3-call7.json",),
    "call8": ("real-chat-h200-r3-call8.json",),
}
REAL_COMMANDS = {
    "call1": "REAL_PLAN='0|--arms ftwiz_plan,guide,ftwiz_qlora --timeout-s 200\n0|--arms ftwiz_plan --plan-args "
             "\"--packing off\" --suffix _unpacked --timeout-s 170' bash bench/gpu/real.sh",
    "call2": "AFTER_PLAN='us|--arms unsloth_matched --timeout-s 200\nus|--arms unsloth_notebook --timeout-s 170\n"
             "ftwiz|--arms ftwiz_qlora@16,ftwiz_plan@24 --timeout-s 100' bash bench/gpu/real_after.sh",
    "call3": "REAL_PLAN='0|--arms ftwiz_plan --suffix _r3 --timeout-s 130' bash bench/gpu/real.sh",
    "call4": "AFTER_PLAN='us|--arms unsloth_matched --suffix _r3 --timeout-s 160\nftwiz|--arms ftwiz_plan --plan-args "
             "\"--packing off\" --suffix _unpacked_r3 --timeout-s 175\nftwiz|--arms ftwiz_qlora@16 --suffix _r3 "
             "--timeout-s 115' bash bench/gpu/real_after.sh",
    "call5": "REAL_PLAN='0|--arms ftwiz_plan,guide --suffix _r4 --timeout-s 150\n0|--arms ftwiz_qlora@16,ftwiz_plan@48 "
             "--suffix _r4 --timeout-s 130' bash bench/gpu/real.sh",
    "call6": "REAL_PLAN='0|--arms ftwiz_plan,guide --suffix _r5 --timeout-s 150\n0|--arms ftwiz_plan --override "
             "training.recompute_mlp_input=false --suffix _keep_r5 --timeout-s 130' bash bench/gpu/real.sh",
    "call7": "AFTER_PLAN='us|--arms unsloth_matched --suffix _r5 --timeout-s 170' bash bench/gpu/real_after.sh",
    "call8": "REAL_PLAN='0|--arms ftwiz_qlora --suffix _r5 --timeout-s 140' bash bench/gpu/real.sh",
}
HEADLINE_ARMS = {
    # name in real-chat-h200.json: (call, arm name in that call's file)
    "ftwiz_plan": ("call6", "ftwiz_plan_r5"),
    "unsloth_matched": ("call7", "unsloth_matched_r5"),
    "guide": ("call6", "guide_r5"),
    "ftwiz_qlora": ("call8", "ftwiz_qlora_r5"),
    "unsloth_notebook": ("call2", "unsloth_notebook"),  # Unsloth's own defaults: nothing of ftwiz's changed it
}
NOT_MEMORY_ROWS = {
    # arms whose recorded config is not what trained (see REAL_CALLS)
    "call5/ftwiz_plan_r4": "trained without the MLP recompute its config records (the Trainer undid it at 5da6ade)",
}
ARM_NOTES = {
    "call1/ftwiz_plan": "plan made from word counts x1.3 (rows of 10,816 tokens; the 11,137-token chat left out)",
    "call1/ftwiz_qlora": "plan made from word counts x1.3 (rows of 10,816 tokens; the 11,137-token chat left out)",
    "call2/unsloth_matched": "given ftwiz's unpacked plan (the last plan call 1 wrote): not the matched comparison",
    "call4/ftwiz_plan_unpacked_r3": "stopped by its time limit at step 43 of ~50 (memory only)",
    "call2/ftwiz_qlora@16": "trained to the end; stopped by its time limit while saving",
    "call3/ftwiz_plan_r3": "round 2: before the MLP recompute",
    "call4/unsloth_matched_r3": "round 2, given call 3's plan",
    **NOT_MEMORY_ROWS,
    "call6/ftwiz_plan_keep_r5": "diagnosis: call 6's plan with training.recompute_mlp_input=false (what the recompute costs)",
}
ARM_KEYS = ("system", "config", "status", "train_runtime_s", "steady_tokens_per_s", "peak_alloc_gib",
            "nvidia_smi_peak_gib", "mfu_vs_790", "steps", "losses", "plan_estimate", "probe", "overrides",
            "simulated_card_gib", "micro_batch_used", "step_times_s")


def _pct(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(100 * (a - b) / b, 1)


def real_summary() -> dict | None:
    """bench/results/real-chat-h200.json from the calls' files: the five arms of the comparison
    (HEADLINE_ARMS), every other arm as measured, the memory configurations (estimate and probe
    against the measured peak) and the targets of the real-data issue."""
    calls = {c: [d for d in (_read(f) for f in files) if d] for c, files in REAL_CALLS.items()}
    if not calls["call1"]:
        return None
    first = calls["call1"][0]
    every = {f"{call}/{name}": arm for call, docs in calls.items() for doc in docs for name, arm in doc["arms"].items()}
    arms: dict[str, Any] = {}
    for name, (call, source) in HEADLINE_ARMS.items():
        if f"{call}/{source}" in every:
            arms[name] = {**{k: every[f"{call}/{source}"].get(k) for k in ARM_KEYS}, "call": f"{call}/{source}"}
    headline = {a["call"] for a in arms.values()}
    for key, arm in every.items():
        if key not in headline:
            arms[key] = {**{k: arm.get(k) for k in ARM_KEYS}, "call": key, "note": ARM_NOTES.get(key)}
    memory = []
    for key, arm in every.items():
        if (arm.get("system") != "ftwiz" or arm.get("overrides") or not arm.get("peak_alloc_gib")
                or key in NOT_MEMORY_ROWS):
            continue
        est = (arm.get("plan_estimate") or {}).get("peak_gib")
        probe = arm.get("probe") or {}
        ok = [a for a in probe.get("attempts") or [] if a.get("outcome") == "ok"]
        measured = arm["peak_alloc_gib"]
        cfg = arm["config"]
        memory.append({
            "run": key, "status": arm.get("status"), "card_gib": arm.get("simulated_card_gib") or 140.4,
            "method": cfg["method"], "packing": cfg["packing"], "gradient_checkpointing": cfg["gradient_checkpointing"],
            "planned_micro_batch": cfg["per_device_train_batch_size"], "trained_micro_batch": arm.get("micro_batch_used"),
            "max_length": cfg["max_length"], "r": cfg.get("r"), "target_modules": cfg.get("target_modules"),
            "lora_dropout": cfg.get("lora_dropout", 0.05), "optim": cfg.get("optim"),
            "grad_accum": cfg.get("gradient_accumulation_steps"), "use_liger_kernel": cfg.get("use_liger_kernel"),
            "regional_compile": cfg.get("regional_compile"), "recompute_mlp_input": cfg.get("recompute_mlp_input", False),
            "measured_peak_gib": measured, "plan_estimate_gib": est,
            "plan_error_pct": _pct(est, measured),
            "probe_predicted_gib": probe.get("predicted_peak_gib"),
            "probe_error_pct": _pct(probe.get("predicted_peak_gib"), measured),
            "probe_attempts": [(a["micro_batch"], a["outcome"], a.get("predicted_peak_gib")) for a in probe.get("attempts") or []],
            "probe_time_s": probe.get("estimated_time_s"), "train_runtime_s": arm.get("train_runtime_s"),
            "probe_time_error_pct": _pct(probe.get("estimated_time_s"), arm.get("train_runtime_s")),
            "probe_ok_micro_batch": ok[0]["micro_batch"] if ok else None,
            "probe_longest_tokens": ok[0].get("longest_tokens") if ok else None,
        })
    plan, guide, matched = arms.get("ftwiz_plan", {}), arms.get("guide", {}), arms.get("unsloth_matched", {})
    qlora = arms.get("ftwiz_qlora", {})
    tps = lambda a: a.get("steady_tokens_per_s")  # noqa: E731
    targets = {
        "plan_vs_unsloth_matched_steady": round(tps(plan) / tps(matched), 3) if tps(plan) and tps(matched) else None,
        "plan_vs_unsloth_matched_peak_gib": [plan.get("peak_alloc_gib"), matched.get("peak_alloc_gib")],
        "plan_vs_unsloth_matched_train_runtime_s": [plan.get("train_runtime_s"), matched.get("train_runtime_s")],
        "plan_vs_guide_steady": round(tps(plan) / tps(guide), 3) if tps(plan) and tps(guide) else None,
        "qlora_vs_guide_steady": round(tps(qlora) / tps(guide), 3) if tps(qlora) and tps(guide) else None,
    }
    keep = every.get("call6/ftwiz_plan_keep_r5", {})
    if tps(keep) and tps(plan):
        # what recomputing the MLP product costs in speed and saves in memory, one command
        targets["recompute_mlp_speed_ratio"] = round(tps(plan) / tps(keep), 3)
        targets["recompute_mlp_peak_gib"] = [plan.get("peak_alloc_gib"), keep.get("peak_alloc_gib")]
    guides = [a for k, a in every.items() if k.split("/")[1].startswith("guide") and tps(a)]
    if guides:
        # the guide's recipe ran in calls 1, 5 and 6: its speed varied between machines
        targets["guide_steady_range"] = [min(tps(a) for a in guides), max(tps(a) for a in guides)]
    meta = first["data"]
    return {
        "gpu": first["gpu"], "versions": first["versions"], "data": meta, "model": first["model"],
        "epochs": first["epochs"], "command": REAL_COMMANDS, "arms": arms, "targets": targets, "memory": memory,
        "packing_check": _read("packing-check-h200.json"),
        "definitions": "steady tokens/s: real tokens from the end of the first optimizer step to the end of the "
                       "last, over that time; train_runtime: the Trainer's; peak_alloc_gib: torch max_memory_allocated "
                       "of the training process (ftwiz: its step events, the probe included); nvidia_smi_peak_gib: "
                       "NVML used memory of the GPU sampled every 50 ms (on simulated cards it includes the holder)",
    }


def real_markdown(doc: dict) -> str:
    v = doc["versions"]
    lines = [f"# ftwiz train on real chat data ({doc['gpu']})", "",
             f"{doc['data']['conversations']} ShareGPT conversations (median {doc['data']['p50_tokens']} tokens, p90 "
             f"{doc['data']['p90_tokens']}, longest {doc['data']['max_tokens']}), {doc['model']} shapes with random "
             f"weights, {doc['epochs']:g} epoch; torch {v['torch']}, transformers {v['transformers']}, peft {v['peft']}, "
             f"TRL {v['trl']}, bitsandbytes {v['bitsandbytes']}. One H200; each arm in its own process, one after "
             "another; each Unsloth command right after an ftwiz command on the same machine (call 1 + 2, call 3 + 4, "
             "call 6 + 7). "
             "Commands: see `command` in real-chat-h200.json. The first five rows are the comparison; the others as "
             "measured, with notes.", "",
             "| arm | set-up | train_runtime s | steady tokens/s | MFU (790 TFLOP/s) | peak allocated GiB | nvidia-smi GiB |",
             "|---|---|---|---|---|---|---|"]
    for name, a in doc["arms"].items():
        c = a.get("config") or {}
        setup = ", ".join(f"{k}={c[k]}" for k in ("method", "micro_batch", "per_device_train_batch_size", "grad_accum",
                                                   "gradient_accumulation_steps", "max_length", "packing",
                                                   "gradient_checkpointing", "attn_implementation", "regional_compile")
                          if c.get(k) is not None)
        note = f" ({a['note']})" if a.get("note") else ""
        lines.append(f"| {name}{note} | {setup} | {a.get('train_runtime_s')} | {a.get('steady_tokens_per_s')} | "
                     f"{a.get('mfu_vs_790')} | {a.get('peak_alloc_gib')} | {a.get('nvidia_smi_peak_gib')} |")
    t = doc["targets"]
    lines += ["", "Targets: ftwiz's plan / Unsloth matched steady tokens/s "
              f"{t['plan_vs_unsloth_matched_steady']}x (peak GiB {t['plan_vs_unsloth_matched_peak_gib']}, train_runtime s "
              f"{t['plan_vs_unsloth_matched_train_runtime_s']}); ftwiz's plan / guide {t['plan_vs_guide_steady']}x; "
              f"ftwiz QLoRA / guide (method held fixed) {t['qlora_vs_guide_steady']}x."
              + (f" The MLP product recomputed (the default) against kept, call 6: {t['recompute_mlp_speed_ratio']}x "
                 f"the tokens/s, peak GiB {t['recompute_mlp_peak_gib']}." if t.get("recompute_mlp_speed_ratio") else "")
              + (f" The guide's recipe across calls: {t['guide_steady_range'][0]:,.0f} to "
                 f"{t['guide_steady_range'][1]:,.0f} tokens/s." if t.get("guide_steady_range") else ""), "",
              "## Memory: the plan's estimate and the probe against the measured peak", "",
              "| run | card GiB | method | checkpointing | micro-batch planned / trained | measured GiB | plan GiB (err %) | probe GiB (err %) | probe time s / train_runtime s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in doc["memory"]:
        lines.append(f"| {m['run']}{'' if m['status'] == 'ok' else ' (' + str(m['status']) + ')'} | {m['card_gib']} | {m['method']} | {m['gradient_checkpointing']} | "
                     f"{m['planned_micro_batch']} / {m['trained_micro_batch']} | {m['measured_peak_gib']} | "
                     f"{m['plan_estimate_gib']} ({m['plan_error_pct']}) | {m['probe_predicted_gib']} ({m['probe_error_pct']}) | "
                     f"{m['probe_time_s']} / {m['train_runtime_s']} |")
    pc = doc.get("packing_check")
    if pc:
        lines += ["", "Packing on the GPU (bench/packing_check.py): max |logit difference| packed vs alone per example: "
                  + "; ".join(f"{k}: {v['max_abs_logit_diff_per_example']}" for k, v in pc["results"].items())]
    return "\n".join(lines) + "\n"


def _read(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


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
    for name, files, render in (("peer-h200", PEER_FILES, peer_markdown), ("ddp-h200x2", DDP_FILES, ddp_markdown)):
        found = [(f.split("-")[-1].removesuffix(".json"), json.loads((RESULTS / f).read_text()))
                 for f in files if (RESULTS / f).exists()]
        if found:
            (RESULTS / f"{name}.md").write_text(render(found))
    for name, render in (("speed-h200", speed_markdown), ("e2e-h200", e2e_markdown)):
        path = RESULTS / f"{name}.json"
        if path.exists():
            (RESULTS / f"{name}.md").write_text(render(json.loads(path.read_text())))
    real = real_summary()
    if real:
        (RESULTS / REAL).write_text(json.dumps(real, indent=1) + "\n")
        (RESULTS / "real-chat-h200.md").write_text(real_markdown(real))
    MEASURED.write_text(json.dumps(measured_summary(_read("speed-h200.json"), _read("peer-h200-round2.json"),
                                                    _read(REAL_DIAG), _read(REAL)), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
