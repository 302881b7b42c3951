"""Speed against the guide's baseline recipe, measured in one run, alternating, one process per arm.

    python bench/speed.py --out $OUT/speed.json [--rounds 2] [--dry-run]

Arms (same data, same seed, same effective batch of 16 sequences per optimizer step):
  a   baseline: the guide's QLoRA recipe as a user copies it (NF4 + double quant, peft's
      prepare_model_for_kbit_training, r=16 alpha 32 dropout 0.05 on q,k,v,o, micro-batch 4 x
      accumulation 4, paged_adamw_8bit, bf16, cosine 2e-4, padded to the longest, checkpointing on)
  b   ftwiz's plan as make_plan picks it for this GPU (method, rank, targets, micro-batch,
      checkpointing, optimizer, packing and Liger as planned)
  b2  the same plan with the engine's speed options on: padding-free packed rows, Liger kernels
  c   QLoRA held fixed (r=16 q,k,v,o, paged 8-bit AdamW) with ftwiz's choices: base only frozen,
      no checkpointing, padding-free rows, Liger kernels
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, run_child, write_json  # noqa: E402
from matrix import ensure_weights  # noqa: E402

HERE = Path(__file__).resolve().parent
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]


def plan_arm(model: str, examples: int, stats: dict) -> tuple[dict, dict]:
    """What ftwiz's planner picks on an H200 for this model and data."""
    from ftwiz.core.hardware import known_gpu
    from ftwiz.core.plan import make_plan

    plan = make_plan(model, examples=examples, data_stats=stats, gpu=known_gpu("H200"))
    cfg = plan.to_config()
    t = cfg.training
    arm = {
        "method": cfg.method, "rank": cfg.lora.r, "targets": cfg.lora.target_modules,
        "lora_dropout": cfg.lora.lora_dropout, "grad_ckpt": t.gradient_checkpointing,
        "micro_batch": t.per_device_train_batch_size, "optim": t.optim, "liger": t.use_liger_kernel,
        "batching": "padding_free" if t.packing else "padded", "qlora_upcast": cfg.quantization.upcast,
        "plan_effective_batch": t.per_device_train_batch_size * t.gradient_accumulation_steps,
    }
    return arm, {"method": cfg.method, "training": t.model_dump(), "lora": cfg.lora.model_dump()}


def arms(model: str, stats: dict, examples: int, budget: int) -> tuple[dict, dict]:
    base = {"rank": 16, "targets": ATTN, "lora_dropout": 0.05}
    planned, plan_doc = plan_arm(model, examples, stats)
    a = {**base, "method": "qlora", "qlora_upcast": True, "grad_ckpt": True, "micro_batch": 4,
         "optim": "paged_adamw_8bit", "liger": False, "batching": "padded"}
    b2 = {**planned, "batching": "padding_free", "liger": True, "token_budget": budget}
    c = {**base, "method": "qlora", "qlora_upcast": False, "grad_ckpt": False, "micro_batch": 4,
         "optim": "paged_adamw_8bit", "liger": True, "batching": "padding_free", "token_budget": budget}
    return {"a": a, "b": planned, "b2": b2, "c": c}, plan_doc


def summarise(runs: list[dict]) -> dict:
    """Median real tokens/s per arm, ratios to the baseline, and loss agreement."""
    by_arm: dict[str, list[dict]] = {}
    for r in runs:
        if r.get("status") == "ok":
            by_arm.setdefault(r["arm"], []).append(r)
    med = {k: statistics.median(x["real_tokens_per_s"] for x in v) for k, v in by_arm.items()}
    out: dict = {"real_tokens_per_s_median": med, "ratios_to_a": {}, "mfu_pct_median": {},
                 "peak_allocated_gib_max": {}, "loss_max_abs_diff_vs_a": {}}
    for k, v in by_arm.items():
        out["mfu_pct_median"][k] = statistics.median(x["mfu_pct"] for x in v)
        out["peak_allocated_gib_max"][k] = max((x["peak_allocated_gib"] or 0) for x in v)
        if "a" in med and k != "a":
            out["ratios_to_a"][k] = round(med[k] / med["a"], 3)
        if "a" in by_arm:
            ref = by_arm["a"][0]["losses"]
            diffs = [abs(x - y) for run in v for x, y in zip(run["losses"], ref)]
            out["loss_max_abs_diff_vs_a"][k] = round(max(diffs), 4) if diffs else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--order", default="a,b2,c,b", help="arms of one round, in order")
    ap.add_argument("--second-round", default="a,b2,c", help="arms repeated in the later rounds")
    ap.add_argument("--budget-s", type=float, default=330)
    ap.add_argument("--timeout-s", type=float, default=120)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--weights-dir", default="/tmp/ftwiz-bench-weights")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    from common import model_config_dict
    from speed_worker import lengths_for

    model = "tiny-llama" if args.dry_run else args.model
    device = "cpu" if args.dry_run else "cuda"
    eff, max_len = (4, 256) if args.dry_run else (16, 2048)
    budget = 512 if args.dry_run else 8192
    n = eff * (args.warmup + args.steps)
    lens = sorted(lengths_for(n, 7, cap=max_len))
    stats = {"rows": 5000, "max": lens[-1], "p95": lens[int(0.95 * (n - 1))], "p50": lens[n // 2],
             "mean": sum(lens) / n}
    arm_defs, plan_doc = arms("llama-3.1-8b", stats, 5000, budget)
    cfg = model_config_dict(model)
    try:
        from ftwiz.core.models import load_model_info

        flops_params = load_model_info(model).total_params
    except Exception:  # tiny dry-run shape: not in the catalog
        flops_params = 0
    started = time.time()
    doc = {"kind": "speed", "environment": environment(), "device": device, "model": model,
           "data": {"sequences_per_step": eff, "lengths": stats, "length_model": "log-normal, median 200, sigma 0.9, clipped to [16, max_length]"},
           "plan": plan_doc, "arms": arm_defs, "loop": "hand loop (Trainer-equivalent step), model from ftwiz.core.engine.process.load_model + wrap_model",
           "flops_per_token": "4 x total params (frozen base: no weight gradients); attention term ignored", "runs": []}
    weights_dir = Path(args.weights_dir)
    doc["weights"] = ensure_weights(model, weights_dir, device, 240)
    write_json(args.out, doc)
    order = args.order.split(",") + args.second_round.split(",") * (args.rounds - 1)
    for name in order:
        arm = dict(arm_defs[name], arm=name, device=device, weights_dir=str(weights_dir / model),
                   effective_batch=eff, max_length=max_len, data_seed=7, seed=42, warmup_steps=args.warmup,
                   timed_steps=args.steps, flops_params=flops_params, token_budget=arm_defs[name].get("token_budget", budget))
        if args.dry_run and arm["method"] == "qlora":
            arm["method"] = "lora"  # the engine loads 4-bit weights onto a GPU only (device_map); matrix dry run covers QLoRA
        if args.dry_run:
            arm["liger"] = False  # Liger's Triton kernels need a GPU
        left = args.budget_s - (time.time() - started)
        if left < 30:
            doc["runs"].append({"arm": name, "status": "skipped", "error": "device-time budget of this call spent"})
            continue
        res = {**arm, **run_child([sys.executable, str(HERE / "speed_worker.py"), json.dumps(arm)],
                                  min(args.timeout_s, left), env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})}
        doc["runs"].append(res)
        doc["summary"] = summarise(doc["runs"])
        write_json(args.out, doc)
        print(f"[{time.time() - started:5.0f}s] {name:3s} {res.get('status'):8s} real tok/s={res.get('real_tokens_per_s')} "
              f"pad={res.get('padding_share')} alloc={res.get('peak_allocated_gib')} mfu={res.get('mfu_pct')} "
              f"build={res.get('build_s')} wall={res.get('wall_s')} {res.get('stderr_tail', '')[-400:]}", flush=True)
    doc["wall_s"] = round(time.time() - started, 1)
    write_json(args.out, doc)
    print(json.dumps(doc.get("summary"), indent=1))


if __name__ == "__main__":
    main()
