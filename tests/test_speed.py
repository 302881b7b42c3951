"""The engine's speed options: regional compile, Liger's kernel choice, DDP arguments, the planner's reason."""

from __future__ import annotations

import pytest

from ftwiz.core.config import config_from_dict
from ftwiz.core.engine import speed


def _tiny_lora(ckpt: bool):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128))
    model.config.use_cache = False
    torch.manual_seed(1)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                             task_type="CAUSAL_LM"))
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def _losses(model, steps: int = 3) -> list[float]:
    import torch

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = []
    for step in range(steps):
        ids = torch.randint(3, 128, (2, 16 + 4 * step), generator=torch.Generator().manual_seed(step))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        out.append(loss.item())
    return out


def test_repeated_layers_are_the_decoder_layers():
    model = _tiny_lora(ckpt=False)
    layers = speed.repeated_layers(model)
    assert len(layers) == 3
    assert {type(layer).__name__ for layer in layers} == {"LlamaDecoderLayer"}


@pytest.mark.parametrize("ckpt", [False, True])
def test_compiled_layers_train_like_eager_and_keep_parameter_names(ckpt):
    """Compiled in place: same losses (lengths change between steps), same state_dict keys for saving."""
    eager = _tiny_lora(ckpt)
    names = list(eager.state_dict())
    reference = _losses(eager)
    compiled = _tiny_lora(ckpt)
    assert speed.compile_layers(compiled, backend="aot_eager") == 3
    assert list(compiled.state_dict()) == names
    assert all(getattr(layer, "_compiled_call_impl", None) is not None for layer in speed.repeated_layers(compiled))
    assert _losses(compiled) == pytest.approx(reference, rel=1e-4)


def test_liger_keeps_only_its_loss_with_compiled_layers(monkeypatch):
    monkeypatch.setattr(speed, "trl_fuses_lm_head", lambda: False)
    assert speed.liger_kernel_config(False) is None  # every kernel
    assert speed.liger_kernel_config(True) == {"rope": False, "rms_norm": False, "swiglu": False,
                                               "fused_linear_cross_entropy": True}


def test_liger_loss_stays_off_where_trl_fuses_the_head(monkeypatch):
    """TRL 1.16 refuses Liger's fused cross-entropy (seen on the H200): it has its own fused LM head."""
    monkeypatch.setattr(speed, "trl_fuses_lm_head", lambda: True)
    assert speed.liger_kernel_config(False) == {"fused_linear_cross_entropy": False}
    assert speed.liger_kernel_config(True)["fused_linear_cross_entropy"] is False


def test_trainer_arguments_skip_the_unused_parameter_search_and_carry_liger_choice(tmp_path):
    from ftwiz.core.engine.process import training_arguments
    from ftwiz.core.runs import create_run_dir

    config = config_from_dict({
        "model": {"name_or_path": "gpt2"}, "data": {"path": "d.jsonl"},
        "training": {"use_liger_kernel": True, "regional_compile": True, "max_steps": 2},
    })
    args = training_arguments(config, create_run_dir(tmp_path, "r"), "fp32", 2, 1, False)
    assert args.ddp_find_unused_parameters is False
    assert args.liger_kernel_config == speed.liger_kernel_config(True)
    assert "regional_compile" not in config.training_kwargs()  # ftwiz's own field, not the Trainer's


def test_planner_compiles_lora_only_for_runs_that_repay_the_compile():
    from ftwiz.core import recommend
    from ftwiz.core.plan import make_plan

    c = recommend.measured_compile()  # from bench/results via measured.json
    assert c["steady_gain"] > 0 and c["cost_s"] > 0
    long = make_plan("llama-3.1-8b", examples=50000, gpu="H200", method="lora")
    item = long.to_dict()["hyperparameters"]["regional_compile"]
    assert long.time_cost.hours * 3600 > recommend.COMPILE_PAYBACK_S
    assert item["value"] is True and f"{c['steady_gain']:.0%}" in item["reason"] and c["source"] in item["reason"]
    assert long.to_config("d.jsonl").training.regional_compile is True
    short = make_plan("llama-3.1-8b", examples=200, gpu="H200", method="lora")
    assert short.time_cost.hours * 3600 < recommend.COMPILE_PAYBACK_S
    item = short.to_dict()["hyperparameters"]["regional_compile"]
    assert item["value"] is False and "too short" in item["reason"]
    assert short.to_config("d.jsonl").training.regional_compile is False


def test_no_compiled_layers_where_unmeasured_or_on_cpu():
    from ftwiz.core.recommend import recommend_hyperparams

    assert recommend_hyperparams(5000, "qlora", bf16_ok=True)["regional_compile"] is False
    assert recommend_hyperparams(5000, "full", bf16_ok=True)["regional_compile"] is False
    assert recommend_hyperparams(5000, "lora", bf16_ok=False, cpu_only=True)["regional_compile"] is False
