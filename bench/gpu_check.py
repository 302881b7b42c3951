"""GPU check of the engine: LoRA and QLoRA end to end on a real architecture with random weights.

    python bench/gpu_check.py WORK_DIR [--shape llama-1b|llama-8b] [--steps N]

Builds a Llama model of a real shape (random weights, bf16, safetensors) and a synthetic
prompt/completion dataset of ~512-token rows (the demo's character tokenizer), then runs
`ftwiz train CONFIG --foreground` for method lora and method qlora through the same path a
user takes, and prints one JSON line per run with peak GPU memory and tokens/s from the
run's own events. Needs a CUDA GPU; nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

SHAPES = {
    # Llama-3.2-1B and Llama-3.1-8B layer shapes; vocab kept at the real size (it dominates memory).
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}


def build_model(target: Path, shape: str) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftwiz.core import demo

    if (target / "config.json").exists():
        return target
    tokenizer = demo.build_tokenizer()
    config = LlamaConfig(max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def build_data(path: Path, rows: int = 2000) -> Path:
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz "
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(rows):
            prompt = "".join(rng.choice(letters) for _ in range(200))
            handle.write(json.dumps({"prompt": prompt, "completion": " " + prompt[::-1][:300]}) + "\n")
    return path


def run_config(model: Path, data: Path, method: str, steps: int) -> dict:
    return {
        "name": f"gpu-{method}",
        "method": method,
        "model": {"name_or_path": str(model)},
        "data": {"path": str(data), "eval_fraction": 0.02},
        "lora": {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"},
        "training": {"learning_rate": 2e-4, "max_steps": steps, "per_device_train_batch_size": 16,
                     "gradient_accumulation_steps": 1, "bf16": True, "gradient_checkpointing": True,
                     "max_length": 512, "logging_steps": 5, "save_steps": steps // 2, "save_total_limit": 1},
        "output": {"samples": 4},
    }


def events_of(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def summarize(run_dir: Path, skip: int = 0) -> dict:
    """A run's outcome and figures from its own events; tokens/s from the steps after `skip`."""
    events = events_of(run_dir)
    steps = [e for e in events if e["type"] == "step"]
    rates = [e["tokens_per_s"] for e in steps if e.get("tokens_per_s") and e["step"] > skip]
    last = [e for e in events if e["type"] in ("finished", "error", "stopped")]
    started = next((e for e in events if e["type"] == "started"), {})
    checkpoints = run_dir / "checkpoints"
    return {
        "run": run_dir.name,
        "outcome": last[-1]["type"] if last else "none",
        "message": last[-1].get("message") if last else None,
        "world_size": started.get("world_size"),
        "steps": steps[-1]["step"] if steps else 0,
        "final_loss": steps[-1]["loss"] if steps else None,
        "peak_gib_per_gpu": max((g["peak_gib"] for e in steps for g in e.get("gpus", [])), default=None),
        "reserved_gib": max((e.get("gpu_mem_reserved_gib") or 0 for e in steps), default=None),
        "tokens_per_s_median": statistics.median(rates) if rates else None,
        "tokens_per_s_samples": rates,
        "probe": next((e for e in events if e["type"] == "probe"), None),
        "warnings": [e["message"] for e in events if e["type"] == "warning"],
        "duration_s": last[-1].get("duration_s") if last else None,
        "checkpoints": sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) if checkpoints.is_dir() else [],
    }


def main() -> int:
    import yaml

    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--shape", default="llama-1b", choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--methods", default="lora,qlora")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = build_model(args.work / f"model-{args.shape}", args.shape)
    data = build_data(args.work / "data.jsonl")
    for method in args.methods.split(","):
        config = args.work / f"{method}.yaml"
        config.write_text(yaml.safe_dump(run_config(model, data, method, args.steps)))
        subprocess.run([sys.executable, "-m", "ftwiz.cli.main", "--runs-dir", str(args.work / "runs"),
                        "train", str(config), "--foreground"], check=False)
        runs = sorted((args.work / "runs").glob(f"gpu-{method}*"), key=lambda p: p.stat().st_mtime)
        print(json.dumps({"shape": args.shape, "method": method, **summarize(runs[-1])}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
