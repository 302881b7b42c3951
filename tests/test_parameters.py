"""LoRA counts from shapes equal what peft itself reports, for many architectures."""

from __future__ import annotations

import pytest

from ftwiz.core.errors import UserError
from ftwiz.core.models import TARGET_PRESETS, ModelInfo, _info_from_manifest, compute_manifest, load_model_info
from ftwiz.core.parameters import count_summary, explore_table, trainable_lora_params

from helpers_models import MOE_CONFIGS, TINY_CONFIGS, peft_trainable, tiny_config

RANKS = (4, 16)
pytestmark = pytest.mark.filterwarnings("ignore:fan_in_fan_out:UserWarning")


@pytest.fixture(scope="session")
def tiny_infos() -> dict[str, ModelInfo]:
    return {mt: _info_from_manifest(compute_manifest(tiny_config(mt)), mt, "local") for mt in TINY_CONFIGS}


def _peft_targets(info: ModelInfo, preset: str):
    """peft gets its own "all-linear" shorthand, so that selection is peft's, not ours."""
    return "all-linear" if preset == "all-linear" else count_summary(info, 1, preset)["targets"]


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("preset", list(TARGET_PRESETS))
@pytest.mark.parametrize("model_type", list(TINY_CONFIGS))
def test_count_equals_peft_print_trainable_parameters(tiny_infos, model_type, preset, rank):
    info = tiny_infos[model_type]
    ours = count_summary(info, rank, preset)
    trainable, total = peft_trainable(tiny_config(model_type), rank, _peft_targets(info, preset))
    assert (ours["trainable"], ours["total"]) == (trainable, total)
    assert ours["percent"] == pytest.approx(100 * trainable / total, rel=1e-12)


@pytest.mark.parametrize("preset", ["attention", "all-linear"])
def test_llama_31_8b_catalog_equals_peft_on_the_meta_device(preset):
    info = load_model_info("llama-3.1-8b")
    ours = count_summary(info, 16, preset)
    assert (ours["trainable"], ours["total"]) == peft_trainable(info.config, 16, _peft_targets(info, preset))


def test_gpt2_explicit_module_list_equals_peft(tiny_infos):
    info = tiny_infos["gpt2"]
    ours = count_summary(info, 8, "c_attn,attn.c_proj,c_fc")
    assert (ours["trainable"], ours["total"]) == peft_trainable(tiny_config("gpt2"), 8, ["c_attn", "attn.c_proj", "c_fc"])


def test_well_known_llama_3_1_8b_figures():
    info = load_model_info("llama-3.1-8b")
    assert trainable_lora_params(info, 8, "q_proj,v_proj") == 3_407_872
    assert count_summary(info, 16, "attention") == {
        "trainable": 13_631_488, "total": 8_043_892_736, "percent": pytest.approx(0.16946, abs=1e-5),
        "rank": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "base_params": 8_030_261_248,
        "adapter_bytes": 4 * 13_631_488,
    }


def test_explore_table_rows():
    info = load_model_info("qwen2.5-7b")
    rows = explore_table(info)
    assert [(r["rank"], r["preset"]) for r in rows] == [(r, p) for r in (8, 16, 32, 64) for p in TARGET_PRESETS]
    for row in rows:
        assert row["trainable"] == trainable_lora_params(info, row["rank"], row["preset"])
        assert row["adapter_bytes"] == count_summary(info, row["rank"], row["preset"])["adapter_bytes"]
        assert row["adapter_mb_fp32"] == pytest.approx(row["trainable"] * 4 / 1e6)
        assert "adapter_mb_bf16" not in row  # the file is fp32: one size, the one `ftwiz params` says
    by = {(r["rank"], r["preset"]): r["trainable"] for r in rows}
    assert by[(16, "minimal")] == 2 * by[(8, "minimal")]
    assert by[(8, "minimal")] < by[(8, "attention")] < by[(8, "all-linear")]


def test_saved_adapter_is_fp32_even_on_a_bf16_base(tmp_path):
    """What explore's 'adapter MB (fp32)' column assumes about peft's save_pretrained."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = tiny_config("llama")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.bfloat16)
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    info = _info_from_manifest(compute_manifest(config), "tiny", "local")
    assert sum(t.numel() for t in tensors.values()) == trainable_lora_params(info, 8, "minimal")


@pytest.mark.parametrize("rank", [0, -4, 2.5, True])
def test_rank_must_be_positive_whole_number(rank):
    with pytest.raises(UserError, match="--rank"):
        trainable_lora_params(load_model_info("gpt2"), rank, "minimal")


def _smallest_catalog_model_per_architecture() -> list[str]:
    from ftwiz.core.models import catalog_names

    smallest: dict[str, ModelInfo] = {}
    for name in catalog_names():
        info = load_model_info(name)
        kind = info.config.get("model_type")
        if kind not in smallest or info.total_params < smallest[kind].total_params:
            smallest[kind] = info
    return sorted(info.name for info in smallest.values())


@pytest.mark.parametrize("name", _smallest_catalog_model_per_architecture())
def test_plans_target_every_linear_projection_and_count_as_peft(name):
    """The default targets reach the MLP as well as attention, and their count is peft's own
    'all-linear' on the real configuration (built on the meta device)."""
    from ftwiz.core.models import targeted_groups
    from ftwiz.core.plan import make_plan

    info = load_model_info(name)
    plan = make_plan(info, examples=5000, gpu="H200", method="lora")
    groups = targeted_groups(info, plan.targets)
    assert any(g.is_attention for g in groups) and any(not g.is_attention for g in groups)
    assert plan.hyperparams.items["target_modules"].value == "all-linear"
    ours = count_summary(info, plan.rank, plan.targets)
    assert (ours["trainable"], ours["total"]) == peft_trainable(info.config, plan.rank, "all-linear")


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("preset", list(TARGET_PRESETS))
@pytest.mark.parametrize("model_type", list(MOE_CONFIGS))
def test_moe_counts_equal_the_installed_pefts(model_type, preset, rank):
    """Mixtral-style layers: peft's all-linear also adapts the fused experts and the router
    (transformers 5 + peft 0.21); Qwen-MoE-style: the shared expert. Dropout 0: peft's LoRA on
    fused parameters takes none."""
    info = _info_from_manifest(compute_manifest(tiny_config(model_type)), model_type, "local")
    ours = count_summary(info, rank, preset)
    trainable, total = peft_trainable(tiny_config(model_type), rank, _peft_targets(info, preset), dropout=0.0)
    assert (ours["trainable"], ours["total"]) == (trainable, total)
    if model_type == "mixtral" and preset == "all-linear":
        assert info.parameter_groups and count_summary(info, rank, "attention")["trainable"] < trainable


def test_a_mixtral_plan_runs_through_peft_as_planned():
    """The plan hands peft its own 'all-linear' with dropout 0 (the only way to reach the fused
    experts), preflight refuses dropout there, and peft's count is the plan's."""
    from ftwiz.core.checks import check_expert_dropout
    from ftwiz.core.models import resolve_targets
    from ftwiz.core.plan import make_plan

    info = _info_from_manifest(compute_manifest(tiny_config("mixtral")), "tiny-mixtral", "local")
    plan = make_plan(info, examples=500, gpu="H200", method="lora")
    lora = plan.to_config().lora
    assert lora.target_modules == "all-linear" and lora.lora_dropout == 0
    assert "fused expert" in plan.to_dict()["hyperparameters"]["lora_dropout"]["reason"]
    assert peft_trainable(info.config, lora.r, lora.target_modules, dropout=lora.lora_dropout)[0] == \
        count_summary(info, lora.r, plan.targets)["trainable"]
    wet = plan.to_config()
    wet.lora.lora_dropout = 0.05
    with pytest.raises(UserError, match="lora.lora_dropout"):
        check_expert_dropout(wet, info, resolve_targets(info, wet.lora.target_modules))
