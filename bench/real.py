"""ftwiz itself against what a user would run instead, on real chat data, in one run.

    python bench/real.py --out $OUT/real-chat-h200.json --data .bench_data/real-chat \
        --arms guide,ftwiz_plan,ftwiz_qlora [--model llama-3.1-8b] [--epochs 1] [--dry-run]

The data and tokenizer come from bench/real_data.py (ShareGPT V3, complete conversations, a
32k byte-level BPE trained on other conversations of the file). The model is a random-weight
copy of a catalog architecture saved once with that tokenizer (cached under --work).

Arms (each in its own process, in the order given, results written after every arm):
- ftwiz_plan: `ftwiz plan --model M --data D --write cfg.yaml` then `ftwiz train cfg.yaml
  --foreground`, as a user runs them; the only edits to the plan: one epoch, evaluation and
  samples off, no checkpoint saves (the speed comparison times training alone).
- ftwiz_qlora: the same with `ftwiz plan --method qlora`.
- guide, unsloth_matched, unsloth_notebook: bench/real_worker.py (see there).
- any arm name with `@GiB` after it (`ftwiz_plan@24`) runs on a simulated card: a process that
  holds all but that many GiB of the GPU is started first and ftwiz plans from what NVML says
  is free, as it would on that card.

Definitions: steady tokens/s = real (non-padding) tokens from the end of the first optimizer
step to the end of the last, over that time (ftwiz: its step events, logged every step);
train_runtime = the Trainer's own train_runtime; peak_alloc_gib = torch's max_memory_allocated
in the training process; nvidia_smi_peak_gib = NVML's used memory on the GPU, sampled every
50 ms by this process while the arm runs (the CUDA context included).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import NvmlPeak, environment, parse_result, write_json  # noqa: E402

FTWIZ = [sys.executable, "-m", "ftwiz.cli.main"]
MFU_PEAK_TFLOPS = 790.0  # the H200's measured bf16 matmul rate (docs/benchmarks.md)


def build_model(name: str, data_dir: Path, work: Path, dry_run: bool) -> Path:
    """Random weights of a catalog architecture, saved with the benchmark's tokenizer (once)."""
    out = work / f"model-{name}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    import common

    if dry_run:  # the tiny shape, with room for the real tokenizer's ids
        common.TINY_LLAMA["vocab_size"] = 32000
    common.save_random_model(name, str(out), "cpu" if dry_run else "cuda")
    for f in (data_dir / "tokenizer").iterdir():
        shutil.copy(f, out / f.name)
    return out


def hold_gpu_leaving(gib: float) -> subprocess.Popen:
    """A process that holds all of GPU 0 but `gib` GiB (a smaller card, simulated)."""
    code = (
        "import torch,sys,time;free,_=torch.cuda.mem_get_info();"
        f"keep=int({gib}*2**30);x=torch.empty(max(free-keep,0),dtype=torch.uint8,device='cuda');"
        "print('held',round(x.numel()/2**30,2),flush=True);time.sleep(3600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    return proc


def events(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    path = run_dir / "events.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def set_path(config: dict, dotted: str, raw: str) -> None:
    """`training.regional_compile=false` -> config["training"]["regional_compile"] = False (YAML scalars)."""
    import yaml

    *parents, leaf = dotted.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = yaml.safe_load(raw)


def _recomputes_mlp_input(config: dict) -> bool:
    from ftwiz.core.config import config_from_dict
    from ftwiz.core.memory import recomputes_mlp_input

    return recomputes_mlp_input(config_from_dict(config))


def ftwiz_arm(arm: str, method: str | None, model: Path, data: Path, work: Path, epochs: float,
              timeout_s: float, plan_extra: list[str], overrides: list[str]) -> dict[str, Any]:
    import yaml

    runs = work / "runs"
    cfg_path = work / f"{arm}.yaml"
    base = [*FTWIZ, "plan", "--model", str(model), "--data", str(data / "train.jsonl"), *plan_extra]
    if method:
        base += ["--method", method]
    plan_cmd = [*base, "--write", str(cfg_path), "--force"]
    t0 = time.time()
    planned = subprocess.run(plan_cmd, capture_output=True, text=True, timeout=300)
    plan_s = time.time() - t0
    if planned.returncode:
        return {"status": "plan failed", "stderr_tail": (planned.stdout + planned.stderr)[-2000:]}
    plan_json = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=300)
    try:
        estimate = json.loads(plan_json.stdout)
    except ValueError:
        estimate = {}
    config = yaml.safe_load(cfg_path.read_text())
    planned_config = json.loads(json.dumps(config))
    config["training"].update(num_train_epochs=epochs, save_steps=10**6)
    config["data"]["eval_fraction"] = 0.0
    config["output"].update(samples=0)
    for item in overrides:  # diagnosis only: figures quoted for ftwiz come from arms without overrides
        key, _, raw = item.partition("=")
        set_path(config, key, raw)
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    name = f"{arm.replace('@', '-')}-{int(time.time())}"
    t1 = time.time()
    try:
        proc = subprocess.run([*FTWIZ, "--runs-dir", str(runs), "train", str(cfg_path), "--foreground", "--name", name],
                              capture_output=True, text=True, timeout=timeout_s)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    wall = time.time() - t1
    run_dir = runs / name
    evs = events(run_dir)
    log = (run_dir / "train.log").read_text(errors="replace") if (run_dir / "train.log").exists() else ""
    steps = [e for e in evs if e.get("type") == "step"]
    probe = next((e for e in evs if e.get("type") == "probe"), None)
    m = re.findall(r"'train_runtime': '?([0-9.]+)", log)
    steady_tokens = sum(e["tokens_per_s"] * (b["t"] - a["t"]) for a, b, e in zip(steps, steps[1:], steps[1:])
                        if e.get("tokens_per_s")) if len(steps) > 1 else 0
    steady_s = steps[-1]["t"] - steps[0]["t"] if len(steps) > 1 else None
    return {
        "status": "ok" if rc == 0 else f"exit {rc}",
        "config": {k: planned_config["training"].get(k) for k in (
            "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "packing",
            "use_liger_kernel", "regional_compile", "gradient_checkpointing", "optim", "learning_rate")}
        | {"method": planned_config["method"], "r": planned_config["lora"]["r"],
           "lora_dropout": planned_config["lora"]["lora_dropout"],
           "lora_alpha": planned_config["lora"]["lora_alpha"], "target_modules": planned_config["lora"]["target_modules"],
           "attn_implementation": planned_config["model"].get("attn_implementation"),
           # the engine's rule on the config as trained (defaults included, overrides applied)
           "recompute_mlp_input": _recomputes_mlp_input(config)},
        "overrides": overrides or None, "plan_s": round(plan_s, 1), "wall_s": round(wall, 1),
        "train_runtime_s": float(m[-1]) if m else None,
        "steps": len(steps),
        "steady_tokens_per_s": round(steady_tokens / steady_s, 1) if steady_s else None,
        "step_times_s": [round(b["t"] - a["t"], 3) for a, b in zip(steps, steps[1:])],
        "peak_alloc_gib": max((e.get("gpu_mem_peak_gib") or 0 for e in steps), default=None),
        "plan_estimate": {k: estimate.get(k) for k in ("peak_gib", "reserved_gib", "nvidia_smi_gib", "peak_phase")}
        if isinstance(estimate, dict) else None,
        "probe": {k: probe.get(k) for k in ("tokens_per_s", "peak_gib", "predicted_peak_gib", "estimated_time_s",
                                            "changes", "attempts")} if probe else None,
        "losses": [e.get("loss") for e in steps],
        "micro_batch_used": steps[-1].get("micro_batch") if steps else None,
        "plan_for_peers": {"method": planned_config["method"], "r": planned_config["lora"]["r"],
                           "lora_alpha": planned_config["lora"]["lora_alpha"],
                           "lora_dropout": planned_config["lora"]["lora_dropout"],
                           "target_modules": planned_config["lora"]["target_modules"],
                           "micro_batch": planned_config["training"]["per_device_train_batch_size"],
                           "grad_accum": planned_config["training"]["gradient_accumulation_steps"],
                           "max_length": planned_config["training"]["max_length"],
                           "packing": planned_config["training"]["packing"],
                           "gradient_checkpointing": planned_config["training"]["gradient_checkpointing"],
                           "optim": planned_config["training"]["optim"],
                           "learning_rate": planned_config["training"]["learning_rate"]},
        "log_tail": log[-1500:] if rc != 0 else None,
    }


def worker_arm(arm: str, model: Path, data: Path, work: Path, epochs: float, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "real_worker.py"), "--arm", arm, "--model", str(model),
           "--data", str(data / "train.jsonl"), "--epochs", str(epochs)]
    if arm == "unsloth_matched":
        cmd += ["--plan", str(work / "plan_for_peers.json")]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        return {"status": "timeout", "stderr_tail": str(exc.stderr or "")[-1500:]}
    result = parse_result(proc.stdout) or {"status": f"exit {proc.returncode}",
                                             "stderr_tail": proc.stderr[-2500:]}
    result.setdefault("status", "ok")
    result["wall_s"] = round(time.time() - t0, 1)
    return result


def flops_per_token(model_dir: Path, method: str) -> float | None:
    """4N for LoRA/QLoRA (no weight gradients), 6N for full: the planner's own convention."""
    try:
        from ftwiz.core.models import load_model_info

        n = load_model_info(str(model_dir)).total_params
    except Exception:
        return None
    return (6 if method == "full" else 4) * n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=".bench_data/real-chat")
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--arms", default="guide,unsloth_matched,ftwiz_plan,ftwiz_qlora,unsloth_notebook")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--work", default="/tmp/ftwiz-real")
    ap.add_argument("--timeout-s", type=float, default=400)
    ap.add_argument("--plan-args", default="", help="extra `ftwiz plan` arguments for the ftwiz arms")
    ap.add_argument("--override", action="append", default=[],
                    help="KEY=VALUE set in the ftwiz arms' config after planning (diagnosis; named in the result)")
    ap.add_argument("--suffix", default="", help="appended to the arm names in the results (e.g. _varlen)")
    ap.add_argument("--nvml-index", type=int,
                    default=int((os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]),
                    help="the physical GPU NVML samples (default: the first of CUDA_VISIBLE_DEVICES)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny Llama, ftwiz arms only")
    args = ap.parse_args()
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}  # several calls, one file
    meta = json.loads((data / "meta.json").read_text())
    results.update({
        "gpu": None, "versions": environment(), "command": "python bench/real.py " + " ".join(sys.argv[1:]),
        "data": {k: meta.get(k) for k in ("source", "conversations", "p50_tokens", "p90_tokens", "max_tokens",
                                          "total_tokens", "vocab")},
        "model": args.model, "epochs": args.epochs,
    })
    results["gpu"] = results["versions"].get("gpu")
    arms = results.setdefault("arms", {})
    t0 = time.time()
    model = build_model("tiny-llama" if args.dry_run else args.model, data, work, args.dry_run)
    results["model_build_s"] = round(time.time() - t0, 1)
    for arm in [a for a in args.arms.split(",") if a]:
        base, _, card = arm.partition("@")
        arm = arm + args.suffix
        holder = hold_gpu_leaving(float(card)) if card else None
        print(f"== {arm}", flush=True)
        try:
            with NvmlPeak(args.nvml_index) as nvml:
                if base.startswith("ftwiz"):
                    method = {"ftwiz_qlora": "qlora", "ftwiz_lora": "lora"}.get(base)
                    result = ftwiz_arm(arm, method, model, data, work, args.epochs, args.timeout_s,
                                       args.plan_args.split(), args.override)
                    if base == "ftwiz_plan" and not card and not args.override and result.get("plan_for_peers"):
                        write_json(work / "plan_for_peers.json", result["plan_for_peers"])
                    result["system"] = "ftwiz"
                else:
                    result = worker_arm(base, model, data, work, args.epochs, args.timeout_s)
        finally:
            if holder is not None:
                holder.kill()
        result["nvidia_smi_peak_gib"] = round(nvml.peak / 2**30, 2) if nvml.peak else None
        if card:
            result["simulated_card_gib"] = float(card)
        method = (result.get("config") or {}).get("method")
        fpt = flops_per_token(model, method or "lora")
        if fpt and result.get("steady_tokens_per_s"):
            result["mfu_vs_790"] = round(result["steady_tokens_per_s"] * fpt / (MFU_PEAK_TFLOPS * 1e12), 3)
        arms[arm] = result
        print(json.dumps({k: result.get(k) for k in ("status", "train_runtime_s", "steady_tokens_per_s",
                                                     "peak_alloc_gib", "nvidia_smi_peak_gib", "mfu_vs_790")}),
              flush=True)
        if result.get("status") != "ok":
            print((result.get("log_tail") or result.get("stderr_tail") or "")[-1500:], flush=True)
        write_json(out, results)


if __name__ == "__main__":
    main()
