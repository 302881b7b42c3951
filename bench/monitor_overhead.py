"""Does watching a run slow it down? Training throughput with and without a dashboard-like
monitor (a separate process sampling NVML through ftwiz's GpuSampler once a second and reading
the run's events file), in rounds that alternate off/on, in one process on one GPU.

    python bench/monitor_overhead.py --out results.json            # on the GPU machine
    python bench/monitor_overhead.py --dry-run --out /tmp/m.json   # tiny model on the CPU

The monitor is a process of its own, as the wizard is: it competes for the CPU and the driver,
not for the training process's Python interpreter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, hf_config  # noqa: E402

MONITOR = """
import sys, time
from ftwiz.core.hardware import GpuSampler
events = sys.argv[1]
offset = 0
with GpuSampler() as sampler:
    sampler.sample()
    print("ready", flush=True)
    while True:
        sampler.sample()
        with open(events, "rb") as handle:
            handle.seek(offset)
            offset += len(handle.read())
        time.sleep(1.0)
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    device = "cpu" if args.dry_run else "cuda"
    name, batch, seq = ("tiny-llama", 2, 64) if args.dry_run else ("llama-3.2-1b", 8, 512)
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config(name), dtype=dtype)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    events = Path(args.out).with_suffix(".events.jsonl")
    events.write_text("")

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with events.open("a") as handle:  # the run's own event line, as the engine writes it
            handle.write(json.dumps({"type": "step", "loss": float(loss)}) + "\n")

    for _ in range(3):
        step()
    rounds = []
    for index in range(args.rounds * 2):
        monitored = index % 2 == 1
        monitor = (
            subprocess.Popen([sys.executable, "-c", MONITOR, str(events)], stdout=subprocess.PIPE, text=True)
            if monitored
            else None
        )
        if monitor:
            monitor.stdout.readline()  # started and sampling: its start-up is not what we time
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if monitor:
            monitor.terminate()
            monitor.wait()
        rounds.append({"monitored": monitored, "tokens_per_s": round(args.steps * batch * seq / elapsed, 1)})
        print(rounds[-1], flush=True)
    off = [r["tokens_per_s"] for r in rounds if not r["monitored"]]
    on = [r["tokens_per_s"] for r in rounds if r["monitored"]]
    result = {
        "kind": "monitor-overhead",
        "environment": environment(),
        "model": name, "micro_batch": batch, "seq_len": seq, "steps_per_round": args.steps,
        "rounds": rounds,
        "median_off": statistics.median(off), "median_on": statistics.median(on),
        "slowdown_pct": round(100 * (1 - statistics.median(on) / statistics.median(off)), 2),
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("median_off", "median_on", "slowdown_pct")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
