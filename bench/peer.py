"""ftwiz against its peers on the issue's reference set-up, in one run, alternating, one process per arm.

    python bench/peer.py --out $OUT/peer.json [--arms peft,unsloth,ftwiz,ftwiz-c] [--rounds 1] [--dry-run]

Set-up (issue 5's reference): Llama-3.1-8B shapes with random weights, LoRA r=16 (alpha 32,
dropout 0) on q,k,v,o, AdamW, bf16 autocast, SDPA, micro-batch 4 x 512 tokens, every
sequence full length, with and without gradient checkpointing. Systems (peer_worker.py):

  peft      transformers + peft, the reference
  unsloth   Unsloth's FastLanguageModel (its own checkpointing when checkpointing is on)
  ftwiz-l   ftwiz's engine with every Liger kernel
  ftwiz-c   ftwiz's engine with regional torch.compile and Liger's fused linear cross-entropy

Within a round the systems alternate and the checkpointing setting is the outer loop, so each
comparison is made minutes apart on the same warm GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import environment, run_child, write_json  # noqa: E402

SYSTEMS = {
    "peft": {"system": "peft", "liger": False, "compile": False},
    "unsloth": {"system": "unsloth", "liger": False, "compile": False},
    "ftwiz-l": {"system": "ftwiz", "liger": True, "compile": False},
    "ftwiz-c": {"system": "ftwiz", "liger": True, "compile": True},
}
CHILD_ENV = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "HF_HUB_OFFLINE": "1",
             "UNSLOTH_DISABLE_STATISTICS": "1", "TOKENIZERS_PARALLELISM": "false"}


def ensure_weights(model: str, target: Path, device: str, timeout_s: float) -> dict:
    """A random bf16 model with a small tokenizer beside it (Unsloth loads through from_pretrained)."""
    if (target / "tokenizer.json").exists():
        return {"model": model, "dir": str(target), "reused": True}
    code = ("import sys, json; sys.path.insert(0, %r); from common import save_random_model; "
            "print('BENCH_RESULT ' + json.dumps(save_random_model(%r, %r, %r, with_tokenizer=True)))"
            % (str(HERE), model, str(target), device))
    return run_child([sys.executable, "-c", code], timeout_s)


def summarise(runs: list[dict]) -> dict:
    """Per checkpointing setting: median tokens/s and worst peak memory per system, ratios to peft and unsloth."""
    out: dict = {}
    for ckpt in (True, False):
        rows: dict[str, list[dict]] = {}
        for r in runs:
            if r.get("status") == "ok" and r["grad_ckpt"] == ckpt:
                rows.setdefault(r["name"], []).append(r)
        if not rows:
            continue
        tok = {k: statistics.median(x["tokens_per_s"] for x in v) for k, v in rows.items()}
        part = {
            "tokens_per_s_median": tok,
            "peak_allocated_gib_max": {k: max(x["peak_allocated_gib"] or 0 for x in v) for k, v in rows.items()},
            "nvml_used_gib_max": {k: max(x["nvml_used_gib"] or 0 for x in v) for k, v in rows.items()},
            "mfu_pct_median": {k: statistics.median(x["mfu_pct"] for x in v) for k, v in rows.items()},
        }
        for ref in ("peft", "unsloth"):
            if ref in tok:
                part[f"ratio_to_{ref}"] = {k: round(v / tok[ref], 3) for k, v in tok.items() if k != ref}
        out["checkpointing" if ckpt else "no_checkpointing"] = part
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--arms", default="peft,unsloth,ftwiz-l,ftwiz-c")
    ap.add_argument("--ckpt", default="on,off", help="checkpointing settings, outer loop")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=540)
    ap.add_argument("--timeout-s", type=float, default=240)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--weights-dir", default="/tmp/ftwiz-bench-weights")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()

    model = "tiny-llama" if args.dry_run else args.model
    device = "cpu" if args.dry_run else "cuda"
    try:
        from ftwiz.core.models import load_model_info

        flops_params = load_model_info(model).total_params
    except Exception:  # the dry run's tiny shape is not in the catalog
        flops_params = 0
    started = time.time()
    target = Path(args.weights_dir) / f"{model}-tok"
    doc = {"kind": "peer", "environment": environment(), "device": device, "model": model,
           "setup": {"rank": 16, "lora_alpha": 32, "lora_dropout": 0.0, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
                     "micro_batch": 4, "seq_len": 512, "optimizer": "torch AdamW", "precision": "bf16 autocast",
                     "tokens": "random ids, every sequence full length, labels = inputs"},
           "flops_per_token": "4 x total params; MFU against the measured 790 TFLOP/s", "runs": []}
    doc["weights"] = ensure_weights(model, target, device, 300)
    write_json(args.out, doc)
    for _ in range(args.rounds):
        for ckpt in args.ckpt.split(","):
            for name in args.arms.split(","):
                if args.dry_run and name == "unsloth":
                    continue  # Unsloth needs a GPU
                arm = dict(SYSTEMS[name], name=name, grad_ckpt=ckpt == "on", weights_dir=str(target), device=device,
                           rank=16, targets=doc["setup"]["targets"], micro_batch=4, seq_len=512 if not args.dry_run else 64,
                           warmup_steps=args.warmup, timed_steps=args.steps, seed=42, data_seed=7, flops_params=flops_params)
                if args.dry_run:
                    arm["liger"] = False  # Triton kernels need a GPU
                left = args.budget_s - (time.time() - started)
                if left < 45:
                    doc["runs"].append({**arm, "status": "skipped", "error": "this call's time budget is spent"})
                    continue
                res = {**arm, **run_child([sys.executable, str(HERE / "peer_worker.py"), json.dumps(arm)],
                                          min(args.timeout_s, left), env=CHILD_ENV)}
                doc["runs"].append(res)
                doc["summary"] = summarise(doc["runs"])
                write_json(args.out, doc)
                print(f"[{time.time() - started:4.0f}s] {name:8s} ckpt={ckpt:3s} {res.get('status'):7s} "
                      f"tok/s={res.get('tokens_per_s')} alloc={res.get('peak_allocated_gib')} "
                      f"nvml={res.get('nvml_used_gib')} mfu={res.get('mfu_pct')} build={res.get('build_s')} "
                      f"warm={res.get('warmup_s')} {res.get('stderr_tail', '')[-600:]}", flush=True)
    doc["wall_s"] = round(time.time() - started, 1)
    write_json(args.out, doc)
    print(json.dumps(doc.get("summary"), indent=1))


if __name__ == "__main__":
    main()
