"""The disk a run takes (issue 12): checkpoints kept (the newest and the best), the result and a
merged model on request, against the free disk; fewer checkpoints when they do not fit."""

from __future__ import annotations

import json

from ftwiz.cli.main import main
from ftwiz.core.disk import checkpoint_bytes, plan_disk
from ftwiz.core.models import load_model_info
from ftwiz.core.parameters import trainable_lora_params
from ftwiz.core.plan import make_plan

GIB = 2**30


def test_checkpoint_holds_weights_and_optimizer_states():
    assert checkpoint_bytes("lora", 1_000, "adamw_torch") == 1_000 * (4 + 8)  # fp32 adapter + two fp32 moments
    assert checkpoint_bytes("full", 1_000, "adamw_8bit") == 1_000 * (4 + 2)


def test_newest_and_best_are_counted_and_a_merge_adds_the_model():
    plan = plan_disk("lora", 8_000_000_000, 40_000_000, "adamw_torch", save_total_limit=2, merge=True)
    one = checkpoint_bytes("lora", 40_000_000, "adamw_torch")
    assert plan.items[0] == ("3 checkpoints of " + f"{one / GIB:.1f} GiB", 3 * one)  # 2 newest + the best
    assert plan.total_bytes == 3 * one + 40_000_000 * 4 + 8_000_000_000 * 2
    assert plan.fits is None  # free disk unknown: stated, not judged
    assert plan_disk("lora", 1, 1, "adamw_torch", evaluates=False).items[0][1] == 2 * checkpoint_bytes("lora", 1, "adamw_torch")


def test_fewer_checkpoints_when_short_of_disk_and_a_refusal_when_even_that_does_not_fit():
    full = plan_disk("full", 1_000_000_000, 1_000_000_000, "adamw_torch", save_total_limit=3)
    roomy = plan_disk("full", 1_000_000_000, 1_000_000_000, "adamw_torch", save_total_limit=3,
                      free_bytes=full.total_bytes * 2)
    assert roomy.fits and roomy.save_total_limit == 3
    tight = plan_disk("full", 1_000_000_000, 1_000_000_000, "adamw_torch", save_total_limit=3,
                      free_bytes=int(full.total_bytes * 0.8))
    assert tight.fits and tight.save_total_limit == 1 and "save_total_limit 1" in tight.reasons[-1]
    hopeless = plan_disk("full", 1_000_000_000, 1_000_000_000, "adamw_torch", free_bytes=GIB)
    assert hopeless.fits is False and "free disk" in hopeless.reasons[-1]


def test_plan_states_the_disk_and_the_config_keeps_what_fits(monkeypatch):
    from ftwiz.core import hardware

    info = load_model_info("llama-3.1-8b")
    plan = make_plan(info, examples=2000, gpu="H200")
    trainable = trainable_lora_params(info, plan.rank, plan.targets)
    disk = plan.to_dict()["disk"]
    assert disk["free_gib"] is None and disk["fits"] is None
    assert disk["total_gib"] == round(plan_disk("lora", info.total_params, trainable, plan.fit.optim).total_bytes / GIB, 2)
    detected = hardware.Hardware(gpus=[hardware.known_gpu("H200")], cpu_count=2, cpu_name="x", ram_total_bytes=None,
                                 ram_available_bytes=None, disk_free_bytes=1 * GIB, nvml_state="ok", message="")
    short = make_plan(info, examples=2000, gpu=detected)
    assert short.disk.fits is False and any(n.startswith("disk: needs") for n in short.notes)
    assert short.to_config().training.save_total_limit == 2


def test_cli_plan_prints_the_disk_line(capsys):
    assert main(["plan", "--model", "llama-3.1-8b", "--gpu", "H200", "--examples", "2000"]) == 0
    out = capsys.readouterr().out
    assert "Disk     " in out and "3 checkpoints of" in out and "base model download" in out
    assert main(["plan", "--model", "llama-3.1-8b", "--gpu", "H200", "--examples", "2000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["disk"]["save_total_limit"] == 2


def test_a_run_that_cannot_fit_the_disk_is_refused_in_one_line_before_it_starts():
    import pytest

    from ftwiz.core.checks import preflight
    from ftwiz.core.config import config_from_dict
    from ftwiz.core.errors import UserError
    from ftwiz.core.hardware import GPU, Hardware

    info = load_model_info("llama-3.2-1b")

    def machine(free_gib: float) -> Hardware:
        gpu = GPU(0, "NVIDIA H200", "GPU-0", 141 * GIB, bf16=True, compute_capability=(9, 0))
        return Hardware([gpu], 2, "cpu", 24 * GIB, 20 * GIB, int(free_gib * GIB), "ok", "", disk_path="/runs")

    def config(**training):
        return config_from_dict({"method": "full", "model": {"name_or_path": "llama-3.2-1b"},
                                 "data": {"path": "d.jsonl"}, "training": {"bf16": True, **training}})

    one = checkpoint_bytes("full", info.total_params, "adamw_torch") / GIB
    result = info.total_params * 4 / GIB
    assert preflight(config(), machine((3 * one + result) / 0.9 + 1), info) == []
    with pytest.raises(UserError, match=r"^training.save_total_limit: 2: .* free at /runs; set training.save_total_limit: 1"):
        preflight(config(), machine((2 * one + result) / 0.9 + 1), info)
    assert preflight(config(save_total_limit=1), machine((2 * one + result) / 0.9 + 1), info) == []
    with pytest.raises(UserError, match="free disk space, or choose a smaller model or LoRA"):
        preflight(config(), machine(1), info)
