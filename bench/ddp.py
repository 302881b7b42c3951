"""One GPU against two through `ftwiz train` itself, plus a QLoRA run watched by the dashboard.

    python bench/ddp.py --out $OUT/ddp-h200x2.json [--steps 80] [--screenshot-dir $OUT]

Needs a machine with two GPUs (the device kind nvidia-h200-x2). Every run is the real engine as
a user starts it: `ftwiz train CONFIG --foreground`, which launches through accelerate (DDP)
when it sees two GPUs; CUDA_VISIBLE_DEVICES picks one or two. The model is Llama-3.2-1B's shape
with random weights and the data synthetic ~450-token rows (bench/gpu_check.py). The
config is what the planner picks on an H200 for LoRA: packing, Liger, compiled layers, the
pre-flight probe; runs alternate 1 GPU / 2 GPUs, with compiled layers and without.
tokens/s are the run's own step events (TRL counts the tokens of every rank), the median over
the steps after the first `--skip` (compilation happens there).

The last run is QLoRA on one GPU, started detached; while it trains, the wizard's dashboard
(TrainScreen) is opened on it with the real NVML backend and saved as an SVG: the README's
picture of a live GPU run. Its peak memory is also the engine's own QLoRA reading to check.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import environment, write_json  # noqa: E402


def config_for(model: Path, data: Path, method: str, steps: int, compiled: bool, name: str) -> dict:
    """gpu_check's run config with what the planner picks for LoRA on an H200, no saves or samples."""
    from gpu_check import run_config

    config = {**run_config(model, data, method, steps), "name": name, "output": {"samples": 0}}
    config["training"].update(gradient_checkpointing=False, save_steps=10 * steps, packing=True,
                              use_liger_kernel=True, regional_compile=compiled, probe=True)
    return config


def ftwiz(*args: str) -> list[str]:
    return [sys.executable, "-m", "ftwiz.cli.main", *args]


async def shoot_dashboard(runs_dir: Path, name: str, out_dir: Path, size=(120, 40)) -> str:
    """The wizard's dashboard on a live run, real NVML; saved as an SVG."""
    from ftwiz.core.runs import open_run
    from ftwiz.screens.train import TrainScreen
    from ftwiz.tui.app import make_app

    app = make_app(runs_dir=str(runs_dir))
    async with app.run_test(size=size) as pilot:
        await pilot.pause(1.0)
        app.push_screen(TrainScreen(open_run(name, str(runs_dir))))
        await pilot.pause(8.0)  # a few GPU samples and step events for the panes
        app.save_screenshot("8-train-h200.svg", str(out_dir))
    return str(out_dir / "8-train-h200.svg")


def main() -> None:
    import yaml

    from gpu_check import build_data, build_model, events_of, summarize

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/ftwiz-ddp")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--skip", type=int, default=20)
    ap.add_argument("--order", default="c1,c2,e1,e2", help="c: compiled layers, e: eager; 1 or 2 GPUs")
    ap.add_argument("--screenshot-dir", default=None)
    ap.add_argument("--timeout-s", type=float, default=240)
    ap.add_argument("--no-qlora", action="store_true", help="skip the QLoRA run with the dashboard")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = work / "runs"
    t0 = time.time()
    model = build_model(work / "model-llama-1b", "llama-1b")
    data = build_data(work / "data.jsonl")
    doc = {"kind": "ddp", "environment": environment(), "model": "Llama-3.2-1B shapes, random weights",
           "build_s": round(time.time() - t0, 1), "runs": []}
    for number, item in enumerate(args.order.split(",")):
        compiled, gpus = item[0] == "c", int(item[1])
        kind = f"{'compiled' if compiled else 'eager'}-{gpus}gpu"
        name = f"{kind}-{number}"
        cfg = work / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(config_for(model, data, "lora", args.steps, compiled, name)))
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus))}
        t = time.time()
        try:
            subprocess.run(ftwiz("--runs-dir", str(runs), "train", str(cfg), "--foreground"), env=env,
                           timeout=args.timeout_s, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        except subprocess.TimeoutExpired:
            pass
        row = {"name": name, "kind": kind, "gpus": gpus, "compiled": compiled, "wall_s": round(time.time() - t, 1),
               **summarize(runs / name, args.skip)}
        if row["outcome"] != "finished":
            log = runs / name / "train.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            row["log_tail"] = text[-2000:]
            first = text.find("Traceback")
            row["first_traceback"] = text[first:first + 6000] if first >= 0 else None
            if args.screenshot_dir:
                (Path(args.screenshot_dir) / f"{name}-train.log").write_text(text[-200_000:])
        doc["runs"].append(row)
        write_json(args.out, doc)
        print(f"[{time.time() - t0:4.0f}s] {name}: {row['outcome']} world={row['world_size']} "
              f"tok/s={row['tokens_per_s_median']} peak/gpu={row['peak_gib_per_gpu']} wall={row['wall_s']} "
              f"{(row.get('log_tail') or '')[-800:]}", flush=True)
    pairs = {}
    for kind in ("compiled", "eager"):
        one = [r["tokens_per_s_median"] for r in doc["runs"] if r["kind"] == f"{kind}-1gpu" and r["tokens_per_s_median"]]
        two = [r["tokens_per_s_median"] for r in doc["runs"] if r["kind"] == f"{kind}-2gpu" and r["tokens_per_s_median"]]
        if one and two:
            pairs[kind] = round(statistics.median(two) / statistics.median(one), 3)
    doc["two_gpu_ratio"] = pairs
    write_json(args.out, doc)
    print("two_gpu_ratio", pairs, flush=True)

    if args.screenshot_dir and not args.no_qlora:  # QLoRA on one GPU, detached, with the dashboard open on it
        name = "qlora-dashboard"
        cfg = work / f"{name}.yaml"
        conf = config_for(model, data, "qlora", args.steps, False, name)
        cfg.write_text(yaml.safe_dump(conf))
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
        subprocess.run(ftwiz("--runs-dir", str(runs), "train", str(cfg)), env=env, check=False,
                       stdout=subprocess.DEVNULL)
        deadline = time.time() + 150
        while time.time() < deadline and not any(e["type"] == "step" and e["step"] >= 10 for e in events_of(runs / name)):
            time.sleep(1)
        try:
            doc["screenshot"] = asyncio.run(shoot_dashboard(runs, name, Path(args.screenshot_dir)))
        except Exception as exc:  # noqa: BLE001 - the picture is a bonus; keep the measurements
            doc["screenshot_error"] = f"{type(exc).__name__}: {exc}"
        while time.time() < deadline + 120 and not any(e["type"] in ("finished", "error") for e in events_of(runs / name)):
            time.sleep(1)
        row = {"name": name, "gpus": 1, **summarize(runs / name, args.skip)}
        if row["outcome"] != "finished":
            log = runs / name / "train.log"
            row["log_tail"] = log.read_text(errors="replace")[-2000:] if log.exists() else None
        doc["qlora"] = row
        print(f"qlora: {row['outcome']} tok/s={row['tokens_per_s_median']} peak={row['peak_gib_per_gpu']} "
              f"screenshot={doc.get('screenshot') or doc.get('screenshot_error')}", flush=True)
    doc["wall_s"] = round(time.time() - t0, 1)
    write_json(args.out, doc)


if __name__ == "__main__":
    main()
