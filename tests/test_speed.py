"""The engine's speed options: regional compile, Liger's kernel choice, DDP arguments, the planner's reason."""

from __future__ import annotations

from typing import Any

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


def _bf16_lora(dropout: float):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128))
    model.config.use_cache = False
    model.to(torch.bfloat16)
    torch.manual_seed(1)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, lora_dropout=dropout, task_type="CAUSAL_LM",
                                             init_lora_weights=False))
    assert next(p for n, p in model.named_parameters() if "lora_A" in n).dtype == torch.float32  # peft's fp32 adapters
    return model


def _step_under_autocast(model, shared: bool):
    """Loss, LoRA gradients and the bytes autograd keeps for backward (distinct storages)."""
    import contextlib

    import torch

    ids = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(0))
    kept: dict[int, int] = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    context = speed.lora_inputs_shared(model, "bf16") if shared else contextlib.nullcontext()
    with context, torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads, sum(kept.values())


def test_lora_inputs_shared_changes_no_number_and_keeps_one_input_per_stream():
    """peft's fp32 cast of LoRA inputs is a round trip under autocast: turning it off gives the
    same loss and gradients, and q/k/v (gate/up) then keep one input between them. The bytes
    saved are what the estimator's _lora_saved_per_layer says they are."""
    import torch

    from ftwiz.core.memory import _lora_saved_per_layer
    from ftwiz.core.models import _info_from_manifest, compute_manifest

    model = _bf16_lora(dropout=0.0)
    loss_cast, grads_cast, kept_cast = _step_under_autocast(model, shared=False)
    loss_shared, grads_shared, kept_shared = _step_under_autocast(model, shared=True)
    assert loss_shared == loss_cast
    assert grads_shared.keys() == grads_cast.keys() and grads_cast
    for name in grads_cast:
        assert torch.equal(grads_shared[name], grads_cast[name]), name
    # After the context, peft casts again (the samples after training run without autocast).
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))

    info = _info_from_manifest(compute_manifest(model.config.to_dict()), "tiny", "local")
    layers, tokens = info.num_layers, 2 * 24
    groups = info.linear_groups
    predicted = tokens * layers * (_lora_saved_per_layer(groups, layers, 2, 0.0, 1.0, input_cast=True)
                                   - _lora_saved_per_layer(groups, layers, 2, 0.0, 1.0, input_cast=False))
    assert kept_cast - kept_shared == predicted


def test_lora_inputs_shared_only_under_autocast():
    """fp32 training (the CPU) needs peft's cast: the context leaves it on."""
    model = _bf16_lora(dropout=0.0)
    with speed.lora_inputs_shared(model, "fp32"):
        assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
    with speed.lora_inputs_shared(model, "bf16"):
        assert not any(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))


def _recompute_step(model, recompute: bool, monkeypatch):
    """Loss, LoRA gradients, bytes kept for backward (distinct storages, whichever hooks packed
    them) and whether each down_proj input outlived the forward."""
    import gc
    import types
    import weakref

    import torch

    ids = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(0))
    kept: dict[int, int] = {}
    inputs: list[Any] = []

    def keep(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()

    def pack(t):
        keep(t)
        return t

    passed_through = speed._Recomputed.pack

    def inner_pack(self, t):  # the recipe's own packing: what it passes through is kept as well
        packed = passed_through(self, t)
        if not isinstance(packed, tuple):
            keep(packed)
        return packed

    monkeypatch.setattr(speed._Recomputed, "pack", inner_pack)
    handles = [layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: inputs.append(weakref.ref(a[0])))
               for layer in speed.repeated_layers(model)]
    if recompute:
        assert speed.recompute_mlp_input(model) == len(handles)
        assert speed.recompute_mlp_input(model) == len(handles)  # twice: still one recipe per MLP
        for layer in speed.repeated_layers(model):
            # As the Trainer's train() does with Liger: the MLP's forward bound anew (liger_kernel's
            # _bind_method_to_module); the recipe lives in module hooks and survives it.
            layer.mlp.forward = types.MethodType(type(layer.mlp).forward, layer.mlp)
    with speed.lora_inputs_shared(model, "bf16"), torch.autocast("cpu", dtype=torch.bfloat16), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    gc.collect()
    alive = [ref() is not None for ref in inputs]
    loss.backward()
    for h in handles:
        h.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads, sum(kept.values()), alive


def test_recomputed_mlp_input_changes_no_number_and_keeps_what_the_estimator_says(monkeypatch):
    """down_proj's LoRA input, act(gate) x up, is recomputed in backward from gate and up: the
    loss and every gradient are the same bits, the product no longer outlives the forward, and
    the bytes kept drop by what the estimator's _lora_saved_per_layer says (intermediate_size
    x 2 bytes per token per layer)."""
    import torch

    from ftwiz.core.memory import _lora_saved_per_layer
    from ftwiz.core.models import _info_from_manifest, compute_manifest

    loss_kept, grads_kept, bytes_kept, alive_kept = _recompute_step(_bf16_lora(dropout=0.0), False, monkeypatch)
    loss_re, grads_re, bytes_re, alive_re = _recompute_step(_bf16_lora(dropout=0.0), True, monkeypatch)
    assert loss_re == loss_kept
    assert grads_re.keys() == grads_kept.keys() and any("down_proj" in n for n in grads_kept)
    for name in grads_kept:
        assert torch.equal(grads_re[name], grads_kept[name]), name
    assert alive_kept == [True, True] and alive_re == [False, False]

    model = _bf16_lora(dropout=0.0)
    info = _info_from_manifest(compute_manifest(model.config.to_dict()), "tiny", "local")
    layers, tokens, groups = info.num_layers, 2 * 24, info.linear_groups
    predicted = tokens * layers * (_lora_saved_per_layer(groups, layers, 2, 0.0, 1.0, False)
                                   - _lora_saved_per_layer(groups, layers, 2, 0.0, 1.0, False, mlp_recomputed=True))
    assert predicted == tokens * layers * 2 * model.config.intermediate_size
    assert bytes_kept - bytes_re == predicted


def test_recomputed_mlp_input_stays_out_of_checkpointed_layers(monkeypatch):
    """A checkpointed layer keeps nothing of its MLP anyway, and the recipe's hooks must not sit
    inside checkpointing's own: once checkpointing is on (the probe may turn it on after the
    patch), the patched forward is the stock one and the gradients are checkpointing's."""
    import torch

    def grads(recompute: bool):
        model = _bf16_lora(dropout=0.0)
        if recompute:
            speed.recompute_mlp_input(model)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model.train()
        ids = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(0))
        with speed.lora_inputs_shared(model, "bf16"), torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    def refused(*args, **kwargs):
        raise AssertionError("recipe hooks inside a checkpointed layer")

    plain = grads(False)
    monkeypatch.setattr(speed._Recomputed, "__init__", refused)
    patched = grads(True)
    assert all(torch.equal(patched[n], plain[n]) for n in plain)


def test_recomputed_mlp_input_only_for_known_gated_mlps():
    """An MLP whose forward is not down(act(gate) x up) is left as it is (GPT-2's fc/proj)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64))
    assert speed.recompute_mlp_input(model) == 0
    assert speed.recompute_mlp_input(_bf16_lora(dropout=0.0)) == 2


def test_engine_recomputes_the_mlp_input_where_the_estimate_assumes_it():
    """One rule (memory.recomputes_mlp_input) for the engine and the estimate: LoRA and QLoRA
    whose layers are neither checkpointed, compiled nor sharded, unless turned off; the estimate
    then keeps intermediate_size x 2 bytes per token per layer less."""
    from ftwiz.core.memory import config_assumptions_of, estimate_for, recomputes_mlp_input
    from ftwiz.core.models import load_model_info

    def config(method: str = "lora", **training):
        return config_from_dict({"method": method, "model": {"name_or_path": "llama-3.1-8b"},
                                 "data": {"path": "d.jsonl"}, "lora": {"target_modules": "all-linear"},
                                 "training": {"gradient_checkpointing": False, "bf16": True, "max_length": 2048,
                                              "per_device_train_batch_size": 1, **training}})

    assert recomputes_mlp_input(config())
    assert recomputes_mlp_input(config("qlora"))
    assert not recomputes_mlp_input(config("full"))
    assert not recomputes_mlp_input(config(gradient_checkpointing=True))
    assert not recomputes_mlp_input(config(regional_compile=True))
    assert not recomputes_mlp_input(config(recompute_mlp_input=False))
    info = load_model_info("llama-3.1-8b")
    on, off = estimate_for(config(), info), estimate_for(config(recompute_mlp_input=False), info)
    assert config_assumptions_of(config(), info).recompute_mlp
    saved = off.breakdown["activations"] - on.breakdown["activations"]
    assert saved == 2048 * info.num_layers * 2 * 14336
