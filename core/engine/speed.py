"""Speed options the engine applies to a model: regional torch.compile and Liger's kernel choice.

Regional compilation (PyTorch's recipe, the one accelerate's `compile_regions` follows) compiles
the repeated decoder layer once and reuses the code for every layer, so the cold start is one
layer's compile rather than the whole model's. Each layer is compiled in place
(`nn.Module.compile`), so parameter names, peft's adapter saving and checkpoints stay as
they are, and gradient checkpointing wraps the compiled call.

Liger: with compiled layers, inductor fuses the layers' RMSNorm, RoPE and SwiGLU itself, and
Liger's own kernels for them would only break its graphs; Liger's fused linear cross-entropy
lives outside the layers and still saves the logits' memory, so it alone stays on, except
where TRL computes the loss through its own chunked LM head (TRL 1.16+), which refuses it.
"""

from __future__ import annotations

from typing import Any

COMPILED_LIGER = {"rope": False, "rms_norm": False, "swiglu": False, "fused_linear_cross_entropy": True}
"""Liger kernels kept when the layers are compiled (the keyword arguments Liger's patchers take)."""


def trl_fuses_lm_head() -> bool:
    """TRL 1.16+ computes the loss through its own chunked LM head and refuses Liger's fused one."""
    try:
        from trl.trainer import sft_trainer
    except ImportError:
        return False
    return hasattr(sft_trainer, "add_fused_lm_head")


def liger_kernel_config(regional_compile: bool) -> dict[str, bool] | None:
    """transformers' TrainingArguments.liger_kernel_config: None means every kernel."""
    config = dict(COMPILED_LIGER) if regional_compile else None
    if trl_fuses_lm_head():
        config = {**(config or {}), "fused_linear_cross_entropy": False}
    return config


def repeated_layers(model: Any) -> list[Any]:
    """The decoder layers: the longest ModuleList whose members are all of one class."""
    import torch

    best: list[Any] = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            kinds = {type(child) for child in module}
            if len(kinds) == 1:
                best = list(module)
    return best


def compile_layers(model: Any, dynamic: bool | None = None, **compile_kwargs: Any) -> int:
    """torch.compile every decoder layer in place; returns how many were compiled.

    Lazy: nothing is traced until the first forward, so kernels patched in later (Liger's loss)
    are seen. Sequence lengths that change from batch to batch cost one more compile with
    dynamic shapes, then none. `compile_kwargs` go to torch.compile (tests pick a CPU backend).
    """
    import torch._dynamo

    layers = repeated_layers(model)
    # Layers share one code object; each distinct guard set (shapes, autocast) takes a slot.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for layer in layers:
        layer.compile(dynamic=dynamic, **compile_kwargs)
    return len(layers)


def lora_inputs_shared(model: Any, precision: str):
    """peft's cast of each LoRA module's input to the adapters' fp32, turned off under autocast.

    peft keeps LoRA adapters in fp32 (autocast_adapter_dtype) and casts every module's
    half-precision input up to fp32 before lora_A, which autocast then casts back down: the
    same numbers, but each module keeps its own copy for backward. Without the cast, lora_A
    reads the very tensor the base layer read, so q, k and v (and gate and up) keep one input
    between them: with all-linear targets and no dropout that is about half of what LoRA keeps
    (core/memory.py's _lora_saved_per_layer). peft's own switch (peft.helpers.
    disable_input_dtype_casting) does it; only with autocast on (bf16/fp16 training), where the
    cast is a round trip: without autocast the fp32 adapters need it. A context manager: the
    samples and chat after training run without autocast and get the cast back.
    """
    import contextlib

    if precision not in ("bf16", "fp16"):
        return contextlib.nullcontext()
    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model)
