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


GATED_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "GemmaMLP", "Gemma2MLP", "Gemma3MLP"})
"""transformers' MLPs whose forward is down_proj(act_fn(gate_proj(x)) * up_proj(x)), as written in
their modeling files; Liger's SwiGLU and GEGLU MLPs (bound over them) compute the same product."""


def _product_of(mlp: Any) -> Any:
    """The function the MLP's own forward applies to (gate, up): Liger's fused kernel where Liger
    bound its MLP forward (it renames the module too), else transformers' act_fn(gate) * up; None
    for an MLP of another shape (Phi-3's fused gate_up_proj, GPT-2's fc), which is left as it is."""
    name = mlp._get_name()
    if name == "LigerSwiGLUMLP":
        from liger_kernel.transformers import swiglu

        return getattr(swiglu, "_swiglu_dispatch", None) or swiglu.LigerSiLUMulFunction.apply
    if name == "LigerGEGLUMLP":
        from liger_kernel.ops import LigerGELUMulFunction

        return LigerGELUMulFunction.apply
    if name in GATED_MLPS and callable(getattr(mlp, "act_fn", None)):
        return lambda gate, up: mlp.act_fn(gate) * up
    return None


class _Recomputed:
    """torch.autograd.graph.saved_tensors_hooks that save a recipe instead of `product`.

    Whatever down_proj's forward saves of its input (lora_A keeps it for its weight gradient;
    reshapes make that a view) is packed as (shape, stride, offset) plus the recipe; backward
    recomputes the product from gate and up, which the activation's own backward keeps anyway,
    with the same kernel, so the numbers are the same bits. Every other saved tensor passes through.
    """

    def __init__(self, product: Any, recompute: Any):
        self.storage = product.untyped_storage().data_ptr()
        self.offset = product.storage_offset()
        self.recompute = recompute
        self.cache: Any = None  # a weak reference to the last recomputed product

    def pack(self, tensor: Any) -> Any:
        if tensor.untyped_storage().data_ptr() != self.storage:
            return tensor
        return (self, tuple(tensor.shape), tensor.stride(), tensor.storage_offset() - self.offset)

    @staticmethod
    def unpack(packed: Any) -> Any:
        if not isinstance(packed, tuple):
            return packed
        import weakref

        import torch

        self, shape, stride, offset = packed
        full = self.cache() if self.cache is not None else None
        if full is None:
            with torch.no_grad():
                full = self.recompute()
            self.cache = weakref.ref(full)
        return full.as_strided(shape, stride, full.storage_offset() + offset)


def recompute_mlp_input(model: Any) -> int:
    """Recompute each gated MLP's product act(gate) x up in backward instead of keeping it for
    down_proj's LoRA adapter; returns how many MLPs do so.

    With LoRA on down_proj, lora_A keeps its input, the product (intermediate_size wide, the widest
    activation of the layer) for its weight gradient, beside the gate and up that the activation
    keeps: three intermediates per layer where two can give back the third with one elementwise
    kernel. That is what Unsloth's hand-written LoRA MLP saves; here torch's own saved-tensor hooks
    do it around the stock modules. Module hooks, not a new MLP forward: the Trainer binds Liger's
    MLP forward again when train() starts, and hooks on gate_proj, up_proj and down_proj outlive
    that. gate_proj's and up_proj's outputs are held from their call to down_proj's; down_proj's
    forward runs inside the recipe's hooks. Only where the layer is not checkpointed at the moment
    of the call (its `gradient_checkpointing` flag, which the probe may turn on later): a
    checkpointed layer keeps nothing anyway, and the hooks must not sit inside checkpointing's own.
    Call it after peft wrapped the model, and not on compiled layers (core/memory.
    recomputes_mlp_input says when the engine does).
    """
    import torch

    count = 0
    for layer in repeated_layers(model):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
            continue
        if _product_of(mlp) is None or not hasattr(layer, "gradient_checkpointing"):
            continue
        if getattr(mlp, "_ftwiz_recomputes_input", False):
            count += 1
            continue
        state: dict[str, Any] = {}

        def keep(name: str, state: dict = state) -> Any:
            return lambda module, args, output: state.__setitem__(name, output)

        def enter(module: Any, args: Any, state: dict = state, mlp: Any = mlp, layer: Any = layer) -> None:
            gate, up = state.pop("gate", None), state.pop("up", None)
            product = _product_of(mlp)  # the forward bound now (Liger's or transformers')
            inner = args[0] if args else None
            if (gate is None or up is None or product is None or inner is None or not torch.is_grad_enabled()
                    or not module.training or layer.gradient_checkpointing or inner.shape != gate.shape):
                return
            recipe = _Recomputed(inner, lambda: product(gate, up))
            hooks = torch.autograd.graph.saved_tensors_hooks(recipe.pack, recipe.unpack)
            hooks.__enter__()
            state["hooks"] = hooks

        def leave(module: Any, args: Any, output: Any, state: dict = state) -> None:
            hooks = state.pop("hooks", None)
            if hooks is not None:
                hooks.__exit__(None, None, None)

        mlp.gate_proj.register_forward_hook(keep("gate"))
        mlp.up_proj.register_forward_hook(keep("up"))
        mlp.down_proj.register_forward_pre_hook(enter)
        mlp.down_proj.register_forward_hook(leave, always_call=True)
        mlp._ftwiz_recomputes_input = True
        count += 1
    return count
