"""Two processes (torchrun, gloo on the CPU) train one run as two GPUs would under accelerate's DDP.

What is checked is what a second GPU must not change: the effective batch the plan chose (each
process takes half the accumulation), and that the pre-flight probe says it is skipped (it
measures one GPU). The GPU figures of DDP are in bench/results/ddp-h200x2*.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from helpers_engine import config_dict, events, tiny_model_dir, write_data

from ftwiz.cli.main import main
from ftwiz.core.runs import RunDir

pytestmark = pytest.mark.slow


def test_two_processes_keep_the_planned_effective_batch(tmp_path, tmp_path_factory, capsys):
    model = tiny_model_dir(tmp_path_factory)
    data = write_data(tmp_path / "d.jsonl")
    cfg = config_dict(model, data, name="ddp", max_steps=4, gradient_accumulation_steps=4,
                      per_device_train_batch_size=2, save_steps=100)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    runs = tmp_path / "runs"
    assert main(["--runs-dir", str(runs), "train", str(tmp_path / "c.yaml"), "--prepare-only"]) == 0
    capsys.readouterr()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "-m", "ftwiz.core.engine", str(runs / "ddp")],
                          capture_output=True, text=True, timeout=600, env=env)
    run_dir = runs / "ddp"
    assert proc.returncode == 0, (run_dir / "train.log").read_text()[-3000:]

    run = RunDir(run_dir)
    started = events(run, "started")[0]
    assert started["world_size"] == 2 and started["grad_accum"] == 2
    infos = [e["message"] for e in events(run, "info")]
    assert any("accumulation 4 shared by 2 GPUs: 2 each" in m for m in infos)
    assert any("probe skipped" in m for m in infos)
    steps = events(run, "step")
    assert [e["step"] for e in steps] == [1, 2, 3, 4] and {e["grad_accum"] for e in steps} == {2}
    # 4 steps x (micro-batch 2 x accumulation 2 x 2 processes) = the 32 examples one GPU's 4 x 8 would see.
    assert steps[-1]["epoch"] == pytest.approx(4 * 2 * 4 / started["train_examples"], rel=0.05)
