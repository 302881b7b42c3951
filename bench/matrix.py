"""Memory and throughput matrix: each configuration in its own process, results to one JSON.

    python bench/matrix.py --out $OUT/matrix.json [--budget-s 480] [--only ID,ID] [--dry-run]

--dry-run runs the same code paths on the CPU with a tiny Llama (seconds per config).
QLoRA needs weights on disk (from_pretrained quantizes them): one random bf16 copy per
architecture is written once under --weights-dir and reused. Configurations that the budget
leaves no time for are recorded as "skipped" rather than dropped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, run_child, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKER = HERE / "matrix_worker.py"


def spec(model, method, ckpt, mb, seq, *, upcast=False, liger=False, optim=None):
    return {
        "id": f"{model}/{method}{'+upcast' if upcast else ''}{'+liger' if liger else ''}/"
        f"ckpt-{'on' if ckpt else 'off'}/mb{mb}/s{seq}",
        "model": model, "method": method, "grad_ckpt": ckpt, "micro_batch": mb, "seq_len": seq,
        "rank": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "lora_dropout": 0.05,
        "optim": optim or "adamw_torch", "qlora_upcast": upcast, "liger": liger,
    }


def gpu_matrix() -> list[dict]:
    """~26 configurations in priority order: the issues' reference points first, then the spread."""
    l8, l1, q7 = "llama-3.1-8b", "llama-3.2-1b", "qwen2.5-7b"
    return [
        # Llama-3.1-8B: the reference set-up (mb 4 x 512) and its measured neighbours
        spec(l8, "lora", True, 4, 512), spec(l8, "lora", False, 4, 512),
        spec(l8, "lora", True, 8, 512), spec(l8, "lora", False, 2, 512),
        spec(l8, "lora", True, 1, 2048), spec(l8, "lora", False, 4, 2048),
        spec(l8, "qlora", True, 4, 512, upcast=True), spec(l8, "qlora", True, 4, 512),
        spec(l8, "qlora", True, 8, 512, upcast=True), spec(l8, "qlora", False, 4, 512),
        # Llama-3.2-1B: full, LoRA, QLoRA
        spec(l1, "full", False, 4, 512), spec(l1, "full", True, 8, 2048),
        spec(l1, "lora", False, 4, 512), spec(l1, "lora", True, 4, 512), spec(l1, "lora", False, 16, 512),
        spec(l1, "lora", True, 16, 2048), spec(l1, "lora", False, 2, 2048),
        spec(l1, "qlora", True, 4, 512), spec(l1, "qlora", False, 8, 2048),
        # Qwen2.5-7B: another architecture (larger vocabulary, biases on q,k,v)
        spec(q7, "lora", True, 4, 512), spec(q7, "lora", False, 4, 2048),
        spec(q7, "qlora", True, 4, 512), spec(q7, "qlora", False, 8, 512),
        # 8B extras: long sequences at large micro-batch, paged 8-bit Adam, Liger
        spec(l8, "lora", True, 16, 2048), spec(l8, "qlora", True, 2, 2048, optim="paged_adamw_8bit"),
        spec(l8, "lora", False, 4, 512, liger=True),
    ]


def dry_matrix() -> list[dict]:
    t = "tiny-llama"
    return [
        spec(t, "full", False, 2, 64), spec(t, "lora", True, 2, 64), spec(t, "lora", False, 4, 128),
        spec(t, "qlora", True, 2, 64, upcast=True), spec(t, "qlora", False, 2, 64, optim="paged_adamw_8bit"),
    ]


def ensure_weights(model: str, weights_dir: Path, device: str, timeout_s: float) -> dict:
    target = weights_dir / model
    if (target / "config.json").exists():
        return {"model": model, "dir": str(target), "reused": True}
    code = (
        "import sys, json; sys.path.insert(0, %r); from common import save_random_model; "
        "print('BENCH_RESULT ' + json.dumps(save_random_model(%r, %r, %r)))" % (str(HERE), model, str(target), device)
    )
    return run_child([sys.executable, "-c", code], timeout_s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--timeout-s", type=float, default=150, help="per configuration")
    ap.add_argument("--only", default="", help="comma-separated ids or substrings")
    ap.add_argument("--skip", default="", help="comma-separated substrings to leave out")
    ap.add_argument("--weights-dir", default="/tmp/ftwiz-bench-weights")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()

    device = "cpu" if args.dry_run else "cuda"
    configs = dry_matrix() if args.dry_run else gpu_matrix()
    if args.only:
        keys = args.only.split(",")
        configs = [c for c in configs if any(k in c["id"] for k in keys)]
    if args.skip:
        configs = [c for c in configs if not any(k in c["id"] for k in args.skip.split(","))]
    started = time.time()
    doc = {"kind": "matrix", "environment": environment(), "device": device, "weights": [], "results": []}
    write_json(args.out, doc)
    weights_dir = Path(args.weights_dir)
    for cfg in configs:
        cfg.update(device=device, warmup_steps=args.warmup, timed_steps=args.steps)
        left = args.budget_s - (time.time() - started)
        if left < 20:
            doc["results"].append({**cfg, "status": "skipped", "error": "device-time budget of this call spent"})
            continue
        if cfg["method"] == "qlora":
            cfg["weights_dir"] = str(weights_dir / cfg["model"])
            if not any(w.get("model") == cfg["model"] for w in doc["weights"]):
                doc["weights"].append(ensure_weights(cfg["model"], weights_dir, device, min(left, 240)))
                write_json(args.out, doc)
                left = args.budget_s - (time.time() - started)
        res = run_child([sys.executable, str(WORKER), json_arg(cfg)], min(args.timeout_s, max(left, 20)),
                        env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "TOKENIZERS_PARALLELISM": "false"})
        res = {**cfg, **res}
        doc["results"].append(res)
        write_json(args.out, doc)
        print(f"[{time.time() - started:6.0f}s] {cfg['id']:52s} {res.get('status'):8s} "
              f"alloc={res.get('peak_allocated_gib')} reserved={res.get('peak_reserved_gib')} "
              f"nvml={res.get('nvml_used_gib')} tok/s={res.get('tokens_per_s')} wall={res.get('wall_s')}", flush=True)
    doc["wall_s"] = round(time.time() - started, 1)
    write_json(args.out, doc)


def json_arg(cfg: dict) -> str:
    import json

    return json.dumps(cfg)


if __name__ == "__main__":
    main()
