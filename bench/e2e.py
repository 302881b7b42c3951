"""End to end through `ftwiz train`: LoRA and QLoRA on a random-weight model saved locally.

    python bench/e2e.py --out $OUT/e2e.json [--model llama-3.2-1b] [--steps 40] [--dry-run]

Writes a random bf16 model with a small local BPE tokenizer (ids fit the model's vocabulary,
no resize needed) and an alpaca-format dataset of instruction-like lengths, then runs the real
CLI (`python -m ftwiz.cli train CONFIG --foreground`) once per method. Collects the run's
status.json, events.jsonl and the tail of train.log (not the weights) into one JSON file.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, environment, write_json  # noqa: E402

WORDS = ("convert the date to iso format output january february march april may june july "
         "the quick brown fox jumps over lazy dog hello world user assistant system").split()


def write_dataset(path: Path, n: int, seed: int, median_words: int) -> dict:
    """Alpaca rows; answer lengths log-normal around the median, a tail to ~1500 words."""
    rng = random.Random(seed)
    lengths = []
    with path.open("w") as handle:
        for _ in range(n):
            words = max(4, min(1500, int(rng.lognormvariate(__import__("math").log(median_words), 0.9))))
            lengths.append(words)
            handle.write(json.dumps({
                "instruction": "Rewrite the text below in lower case.",
                "input": " ".join(rng.choice(WORDS) for _ in range(max(2, words // 4))),
                "output": " ".join(rng.choice(WORDS) for _ in range(words)),
            }) + "\n")
    lengths.sort()
    return {"rows": n, "median_words": lengths[n // 2], "max_words": lengths[-1]}


def run_config(method: str, model_dir: Path, data: Path, steps: int, cuda: bool) -> dict:
    training = {
        "max_steps": steps, "per_device_train_batch_size": 8 if cuda else 2, "gradient_accumulation_steps": 2,
        "learning_rate": 2e-4, "gradient_checkpointing": method == "qlora", "max_length": 1024 if cuda else 128,
        "logging_steps": 5, "save_steps": 1000, "bf16": cuda, "warmup_ratio": 0.05,
    }
    if method == "qlora":
        training["optim"] = "paged_adamw_8bit"
    return {
        "name": f"e2e-{method}", "method": method,
        "model": {"name_or_path": str(model_dir), "attn_implementation": "sdpa"},
        "data": {"path": str(data), "eval_fraction": 0.02, "completion_only_loss": True},
        "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "training": training,
        "output": {"samples": 2},
    }


def collect(run_dir: Path) -> dict:
    events = []
    if (run_dir / "events.jsonl").exists():
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
    log_tail = (run_dir / "train.log").read_text()[-3000:] if (run_dir / "train.log").exists() else ""
    steps = [e for e in events if e.get("type") == "step"]
    summary = {
        "state": status.get("state"), "final_step": status.get("step"),
        "tokens_per_s_last": next((e.get("tokens_per_s") for e in reversed(steps) if e.get("tokens_per_s")), None),
        "peak_gib": max((g.get("peak_gib", 0) for e in steps for g in e.get("gpus", [])), default=None),
        "reserved_gib_max": max((e.get("gpu_mem_reserved_gib") or 0 for e in steps), default=None),
        "losses": [e.get("loss") for e in steps if e.get("loss") is not None],
    }
    return {"summary": summary, "status": status, "events": events, "train_log_tail": log_tail}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="llama-3.2-1b")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--methods", default="lora,qlora")
    ap.add_argument("--work", default="/tmp/ftwiz-e2e")
    ap.add_argument("--timeout-s", type=float, default=200)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    from common import save_random_model

    cuda = not args.dry_run
    model = "tiny-llama" if args.dry_run else args.model
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / f"{model}-random"
    doc: dict = {"kind": "e2e", "environment": environment(), "model": model, "runs": {}}
    t0 = time.time()
    if not (model_dir / "tokenizer.json").exists():
        doc["weights"] = save_random_model(model, str(model_dir), "cuda" if cuda else "cpu", with_tokenizer=True)
    doc["data"] = write_dataset(work / "data.jsonl", 1000 if cuda else 60, 7, 150 if cuda else 20)
    doc["prepare_s"] = round(time.time() - t0, 1)
    write_json(args.out, doc)
    for method in args.methods.split(","):
        cfg = run_config(method, model_dir, work / "data.jsonl", args.steps, cuda)
        cfg_path = work / f"{method}.yaml"
        import yaml

        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        runs_dir = work / "runs"
        cmd = [sys.executable, "-m", "ftwiz.cli", "--runs-dir", str(runs_dir), "train", str(cfg_path), "--foreground"]
        t1 = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s, cwd=REPO)
            outcome = {"returncode": proc.returncode, "stdout_tail": proc.stdout[-1500:], "stderr_tail": proc.stderr[-2500:]}
        except subprocess.TimeoutExpired:
            outcome = {"returncode": None, "error": f"timed out after {args.timeout_s:.0f} s"}
        outcome["wall_s"] = round(time.time() - t1, 1)
        outcome["command"] = " ".join(cmd[1:])
        outcome["config"] = cfg
        run_dirs = sorted(runs_dir.glob(f"e2e-{method}*"), key=lambda p: p.stat().st_mtime)
        if run_dirs:
            outcome.update(collect(run_dirs[-1]))
        doc["runs"][method] = outcome
        write_json(args.out, doc)
        print(method, outcome.get("returncode"), outcome.get("wall_s"), json.dumps(outcome.get("summary")), outcome.get("stderr_tail", "")[-600:], flush=True)


if __name__ == "__main__":
    main()
