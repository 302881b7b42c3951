"""make_plan: method choice with reasons, overrides, GPU forms, the run config it writes."""

from __future__ import annotations

import pytest

from ftwiz.core.config import RunConfig
from ftwiz.core.errors import UserError
from ftwiz.core.hardware import RecordedBackend, detect_hardware
from ftwiz.core.plan import make_plan, resolve_gpu

GIB = 2**30


def test_auto_picks_lora_for_8b_when_it_fits():
    plan = make_plan("llama-3.1-8b", examples=5000, gpu="H200")
    assert plan.method == "lora" and plan.fits
    assert "over 3B" in plan.method_reason


def test_auto_picks_qlora_when_lora_does_not_fit():
    plan = make_plan("llama-3.1-8b", examples=5000, gpu=16)
    assert plan.method == "qlora" and plan.fits
    assert "LoRA" in plan.method_reason and "GiB" in plan.method_reason


def test_auto_picks_full_for_a_small_model_with_room_and_data():
    assert make_plan("llama-3.2-1b", examples=5000, gpu="H200").method == "full"
    few = make_plan("llama-3.2-1b", examples=300, gpu="H200")
    assert few.method == "lora" and "overfit" in few.method_reason


def test_nothing_fits_is_said_with_what_would():
    plan = make_plan("llama-3.1-70b", examples=5000, gpu="RTX 4090")
    assert not plan.fits and any("does not fit" in n for n in plan.notes)


def test_overrides_are_kept():
    plan = make_plan("llama-3.1-8b", gpu="H200", method="qlora", batch=8, seq=512, rank=16,
                     targets="q_proj,v_proj", grad_ckpt=True, qlora_upcast=True)
    d = plan.to_dict()
    assert (d["method"], d["qlora_upcast"], d["rank"], d["targets"]) == ("qlora", True, 16, ["q_proj", "v_proj"])
    assert d["hyperparameters"]["per_device_train_batch_size"]["value"] == 8
    assert d["hyperparameters"]["max_length"]["value"] == 512
    assert d["hyperparameters"]["r"] == {"value": 16, "reason": "as asked (--rank)"}
    assert d["fit"]["gradient_checkpointing"] is True


def test_sequence_length_from_data_stats():
    stats = {"rows": 2000, "p50": 150, "p95": 700, "max": 30000, "mean": 220.0, "estimate": False}
    plan = make_plan("llama-3.1-8b", data_stats=stats, gpu="H200")
    assert plan.fit.max_length == 30016 and plan.n_examples == 2000
    squeezed = make_plan("llama-3.1-8b", data_stats=stats, gpu="RTX 4090", method="lora")
    assert squeezed.fit.max_length == 704  # p95 when the longest does not fit


def test_gpu_forms():
    assert resolve_gpu(24).total_bytes == 24 * GIB
    assert resolve_gpu("h200").name == "H200"
    with pytest.raises(UserError, match="--gpu"):
        resolve_gpu("no-such-gpu")
    with pytest.raises(UserError, match="--vram"):
        resolve_gpu(-1)


def test_cpu_only_machine_is_said():
    cpu = detect_hardware(backend=RecordedBackend({"nvml_state": "no-driver", "gpus": []}))
    plan = make_plan("smollm2-135m", examples=100, gpu=cpu)
    assert not plan.fits and plan.gpu.cpu_only
    assert any("CPU only" in n for n in plan.notes)
    assert plan.to_dict()["hyperparameters"]["precision"]["value"] == "fp32"


def test_time_and_cost_come_from_core_cost():
    d = make_plan("llama-3.1-8b", examples=5000, gpu="H200").to_dict()
    assert d["time"]["hours"] > 0 and d["cost"]["usd"] > 0


def test_to_config_round_trips():
    plan = make_plan("llama-3.1-8b", examples=5000, gpu="RTX 4090", method="qlora", qlora_upcast=True)
    config = plan.to_config("train.jsonl")
    assert isinstance(config, RunConfig)
    assert config.method == "qlora" and config.quantization.upcast is True
    assert config.training.optim == "paged_adamw_8bit" and config.training.bf16
    assert config.training.per_device_train_batch_size == plan.fit.micro_batch
    assert config.lora.r == plan.rank and config.lora.lora_alpha == 2 * plan.rank
    assert config.data.path == "train.jsonl"


@pytest.mark.parametrize("kw,field", [({"rank": 0}, "--rank"), ({"batch": 0}, "--batch"), ({"seq": -2}, "--seq"),
                                      ({"examples": -1}, "--examples"), ({"method": "dora"}, "--method"),
                                      ({"targets": "nope"}, "--targets")])
def test_bad_input(kw, field):
    with pytest.raises(UserError, match=field):
        make_plan("llama-3.1-8b", gpu="H200", **kw)


@pytest.mark.parametrize("vram", [float("nan"), float("inf")])
def test_vram_must_be_a_finite_number(vram):
    with pytest.raises(UserError, match="--vram"):
        resolve_gpu(vram)


def test_seq_longer_than_the_model_context_is_refused():
    with pytest.raises(UserError, match=r"--seq: 5000 is longer than gpt2's context \(1024 tokens"):
        make_plan("gpt2", gpu="H200", seq=5000)


def test_max_length_from_data_is_capped_at_the_context():
    stats = {"rows": 2000, "p50": 150, "p95": 1500, "max": 3000, "mean": 220.0, "estimate": False}
    plan = make_plan("gpt2", data_stats=stats, gpu="H200")
    assert plan.fit.max_length == 1024 and "context" in plan.to_dict()["hyperparameters"]["max_length"]["reason"]


def test_config_names_what_from_pretrained_can_load(tmp_path, monkeypatch):
    """A catalog name is not loadable by transformers: the config holds its Hub id; files are absolute."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text("{}\n")
    config = make_plan("llama-3.1-8b", examples=5000, gpu="H200").to_config("train.jsonl")
    assert config.model.name_or_path == "meta-llama/Llama-3.1-8B"
    assert config.data.path == str(tmp_path / "train.jsonl")
    assert make_plan("llama-3.1-8b", gpu="H200").to_config("org/hub-dataset").data.path == "org/hub-dataset"


def test_forced_batch_that_does_not_fit_says_so_and_what_would():
    d = make_plan("llama-3.1-8b", gpu="RTX 4090", method="lora", batch=64).to_dict()
    assert not d["fits"]
    assert d["hyperparameters"]["per_device_train_batch_size"]["reason"] == "as asked (--batch); does not fit"
    assert d["fit"]["suggestion"].startswith("fits with micro-batch")
    assert d["hyperparameters"]["effective_batch_size"]["value"] == 64  # the batch asked for, not the band's 16


def test_rank_above_the_layer_size_is_noted():
    plan = make_plan("llama-3.1-8b", gpu="H200", rank=5000)
    assert any("above the smallest targeted layer's size (1024)" in n for n in plan.notes)
    assert not any("above the smallest" in n for n in make_plan("llama-3.1-8b", gpu="H200", rank=64).notes)


def test_cpu_only_suggests_a_gpu_not_qlora():
    cpu = detect_hardware(backend=RecordedBackend({"nvml_state": "no-driver", "gpus": []}))
    plan = make_plan("llama-3.1-8b", gpu=cpu)
    assert "--gpu" in plan.fit.suggestion and "QLoRA" not in plan.fit.suggestion


def test_full_is_judged_by_a_layout_with_room_not_the_fastest_one():
    """The fastest layout fills the GPU by design; full is comfortable when some layout fits in 70%."""
    plan = make_plan("gpt2", examples=2000, gpu="T4")
    assert plan.method == "full" and plan.fits and "room to spare" in plan.method_reason


def test_lora_reason_names_the_precision_used():
    plan = make_plan("qwen2.5-1.5b", examples=500, gpu="T4")  # no bf16 before Ampere
    assert plan.method == "lora" and "fits in fp16" in plan.method_reason


def test_rank_and_targets_with_full_are_said_to_not_apply():
    plan = make_plan("gpt2", examples=2000, gpu="H200", method="full", rank=16)
    assert any("do not apply" in n for n in plan.notes)


def test_h200_plan_packs_uses_liger_and_the_config_carries_both(monkeypatch):
    from ftwiz.core import recommend

    monkeypatch.setattr(recommend, "liger_available", lambda: True)
    plan = make_plan("llama-3.1-8b", examples=5000, gpu="H200")
    hp = plan.to_dict()["hyperparameters"]
    assert hp["packing"]["value"] is True and hp["use_liger_kernel"]["value"] is True
    assert any("fused LM head" in a for a in plan.to_dict()["memory_assumptions"])
    config = plan.to_config("train.jsonl")
    assert config.training.packing is True and config.training.use_liger_kernel is True
    assert config.model.attn_implementation == hp["attn_implementation"]["value"]


def test_cpu_plan_has_no_liger_and_no_packing(monkeypatch):
    from ftwiz.core import recommend

    monkeypatch.setattr(recommend, "liger_available", lambda: True)
    cpu = detect_hardware(backend=RecordedBackend({"nvml_state": "no-driver", "gpus": []}))
    config = make_plan("smollm2-135m", examples=100, gpu=cpu).to_config("train.jsonl")
    assert config.training.use_liger_kernel is False and config.training.packing is False


def _edited_config(**training):
    plan = make_plan("llama-3.1-8b", examples=5000, gpu="H200", method="lora")
    config = plan.to_config(data_path="d.jsonl")
    return config.model_copy(update={"training": config.training.model_copy(update=training)})


def test_config_time_cost_follows_the_edited_config():
    """The Settings step's line: epochs, max_length and max_steps as the user edits them."""
    from ftwiz.core.cost import estimate_time_cost
    from ftwiz.core.plan import config_time_cost

    stats = {"mean": 300, "estimate": False}
    one = config_time_cost(_edited_config(num_train_epochs=1.0), 8e9, 5000, stats, "H200")
    two = config_time_cost(_edited_config(num_train_epochs=2.0), 8e9, 5000, stats, "H200")
    assert one.tokens_per_example == 300 and "~300 tokens on average" in one.basis
    assert two.estimate.hours == pytest.approx(2 * one.estimate.hours)
    assert one.estimate.cost_usd > 0
    direct = estimate_time_cost(params=8e9, tokens=5000 * 300, gpu="H200", method="lora",
                                grad_ckpt=_edited_config().training.gradient_checkpointing)
    assert one.estimate.seconds == pytest.approx(direct.seconds)
    # no statistics: every example at max_length, said as an upper bound
    bound = config_time_cost(_edited_config(num_train_epochs=1.0, max_length=512), 8e9, 5000, None, "H200")
    assert bound.tokens_per_example == 512 and "upper bound" in bound.basis
    # max_steps wins over epochs, as in the Trainer
    steps = config_time_cost(_edited_config(max_steps=10, per_device_train_batch_size=2,
                                            gradient_accumulation_steps=4), 8e9, 5000, stats, "H200")
    assert steps.estimate.tokens == 10 * 2 * 4 * 300 and "max_steps 10" in steps.basis


def test_config_time_cost_unknown_gpu_is_a_user_error():
    from ftwiz.core.plan import config_time_cost

    with pytest.raises(UserError):
        config_time_cost(_edited_config(), 8e9, 5000, None, "Voodoo 3")


# -- several GPUs: DDP, or FSDP for full fine-tuning that does not fit one ----------------------------
def _recorded_h200s(count: int):
    """The recorded H200 (tests/fixtures/gpus/h200.json) as a machine with `count` of them."""
    import copy
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "fixtures" / "gpus" / "h200.json").read_text())
    first = data["gpus"][0]
    data["gpus"] = [{**copy.deepcopy(first), "index": i, "nvml_index": i, "uuid": f"{first['uuid']}-{i}"}
                    for i in range(count)]
    return detect_hardware(backend=RecordedBackend(data))


def test_full_8b_on_two_h200s_is_sharded_with_fsdp():
    """A full copy with AdamW is ~16 bytes per weight (~120 GiB for 8B) + activations: over one H200's
    usable memory; sharded 2 ways it fits with standard AdamW."""
    machine = _recorded_h200s(2)
    plan = make_plan("llama-3.1-8b", examples=5000, gpu=machine, method="full")
    assert plan.gpu.count == 2 and plan.fits
    assert plan.distribution == "fsdp" and plan.distribution_label == "FSDP over 2 GPUs"
    assert plan.fit.optim == "adamw_torch"  # standard AdamW, where a copy per GPU needs 8-bit states
    assert "sharded 2 ways" in plan.distribution_reason and "8-bit AdamW" in plan.distribution_reason
    assert plan.fit.estimate.required_bytes <= plan.fit.usable_bytes
    assert any("FSDP FULL_SHARD over 2 GPUs" in a for a in plan.fit.estimate.assumptions)
    d = plan.to_dict()
    assert d["distribution"] == {"strategy": "fsdp", "gpus": 2, "label": "FSDP over 2 GPUs",
                                 "reason": plan.distribution_reason}
    config = plan.to_config()
    assert config.training.fsdp is True and config.training.fsdp_config.reshard_after_forward is True
    assert config.training.regional_compile is False  # never compiled layers under FSDP (not run)
    # One H200: unchanged (a copy with 8-bit AdamW), no FSDP.
    single = make_plan("llama-3.1-8b", examples=5000, gpu="H200", method="full")
    assert single.distribution == "single" and single.fit.optim == "adamw_8bit"
    assert single.to_config().training.fsdp is False


def test_lora_and_qlora_on_two_h200s_keep_ddp():
    machine = _recorded_h200s(2)
    for method in ("lora", "qlora", "auto"):
        plan = make_plan("llama-3.1-8b", examples=5000, gpu=machine, method=method)
        assert plan.distribution == "ddp" and plan.distribution_label == "DDP over 2 GPUs", method
        assert plan.to_config().training.fsdp is False
    # Full fine-tuning of a model whose copy fits one GPU with standard AdamW stays DDP too.
    small = make_plan("llama-3.2-1b", examples=5000, gpu=machine, method="full")
    assert small.distribution == "ddp" and small.fit.optim == "adamw_torch"


def test_full_70b_does_not_fit_even_sharded_over_two_h200s():
    plan = make_plan("llama-3.1-70b", examples=5000, gpu=_recorded_h200s(2), method="full")
    assert not plan.fits and plan.distribution == "ddp"
    assert any(n.startswith("not even sharded over 2 GPUs (FSDP)") for n in plan.notes)
    assert any(n.startswith("does not fit") for n in plan.notes)


def test_gpus_count_for_a_named_gpu():
    plan = make_plan("llama-3.1-8b", examples=5000, gpu="H200", gpus=2, method="full")
    assert plan.distribution == "fsdp" and plan.gpu.count == 2
    assert "2 GPUs data-parallel" in " ".join(plan.time_cost.assumptions)
    one = make_plan("llama-3.1-8b", examples=5000, gpu="H200", method="full")
    assert plan.time_cost.hours < one.time_cost.hours
    with pytest.raises(UserError, match="--gpus"):
        make_plan("llama-3.1-8b", gpu="H200", gpus=0)
    with pytest.raises(UserError, match="--gpus: 3: this machine has 2"):
        resolve_gpu(_recorded_h200s(2), 3)
