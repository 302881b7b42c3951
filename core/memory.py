"""Peak GPU memory of one fine-tuning step, term by term, from the model's shapes alone.

The estimate follows what PyTorch actually keeps alive, so that each term can be checked and
calibrated on its own (issue 5):

* weights: bf16 for LoRA; NF4 codes + double-quantised constants for QLoRA's linear layers with
  embeddings/head/norms in bf16 (fp32 after peft's prepare_model_for_kbit_training); fp32 master
  weights for full fine-tuning as the transformers Trainer runs it with bf16=True (autocast).
* trainable parameters, gradients and optimizer states (LoRA adapters are fp32: peft's
  autocast_adapter_dtype).
* activations autograd saves for backward, per layer and per token: RMSNorm keeps its fp32 input,
  SDPA keeps q, k, v, its output (GQA runs natively, no repeated k/v), the gated MLP keeps gate,
  act(gate) and up (Liger's SwiGLU: gate and up); frozen linear layers keep no input; a LoRA
  module keeps its input: its own copy plus a dropout mask with dropout, the base layer's very
  tensor without (shared by q, k, v and by gate, up). With gradient checkpointing only each
  layer's input is kept, plus one layer recomputed at a time during backward.
* logits and loss: transformers upcasts the logits to fp32 for the cross-entropy.
* framework overhead: cuBLAS workspaces, ids/labels, rotary tables.
* FSDP FULL_SHARD over N GPUs (`shards`): each GPU keeps 1/N of the weights, trainable
  parameters, gradients and optimizer states; activations, the logits and the half-precision
  copy of the layer being computed (the all-gathered weights) are not sharded.

`peak_bytes` is what torch.cuda.max_memory_allocated() reports. `reserved_bytes` adds the caching
allocator's slack and `nvidia_smi_bytes` adds the CUDA context (which max_memory_allocated never
sees) and bitsandbytes' paged optimizer states (CUDA managed memory, outside PyTorch's allocator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from ftwiz.core.errors import UserError
from ftwiz.core.methods import METHOD_NAMES as METHODS

GIB = 2**30
MIB = 2**20


def gib_text(n: int | float | None) -> str:
    """Bytes as people read them ("12.3 GiB"), "?" when unknown: for every GPU, RAM and disk figure shown."""
    return "?" if n is None else f"{n / GIB:.1f} GiB"


DTYPES = ("bf16", "fp16", "fp32")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit")
BREAKDOWN_KEYS = (
    "weights",
    "weight_copies",
    "trainable_params",
    "gradients",
    "optimizer_states",
    "activations",
    "logits_loss",
    "overhead",
)


@dataclass(frozen=True)
class Calibration:
    """Every constant of the estimate that is not pure arithmetic on the shapes, in one place.

    Where each came from is said beside it. Issue 5 refits these on its measured matrix; the
    terms they scale are reported separately in the breakdown so each can be compared alone.
    """

    # Cross-entropy in transformers' ForCausalLMLoss, at the loss backward: the fp32 log-softmax
    # kept for backward, its incoming gradient and the fp32 logits' gradient coexist: 3 x 4 B x
    # vocab per token. The bf16 logits are gone by then (nothing holds the model's output in a
    # training step). 12 B is what bench/results/matrix-h200-call1.json shows where the logits
    # dominate: llama-3.2-1b/lora/ckpt-on/mb16/s2048 (51.62 GiB) and the 8B's checkpointed slope
    # llama-3.1-8b/lora/ckpt-on mb4 -> mb8 (+3.47 GiB for 2,048 tokens = 12.0 B x vocab once the
    # layer inputs are taken out). The earlier 14 B (bf16 logits kept too) was 15% high there.
    loss_fp32_buffers: float = 3.0
    # RMSNorm/LayerNorm compute in fp32 and keep that fp32 input for backward (LlamaRMSNorm).
    norm_saved_bytes: float = 4.0
    # torch's native_dropout keeps one bool per element for backward.
    dropout_mask_bytes: float = 1.0
    # During backward of a recomputed layer: gradients of the residual stream (in and out) and of
    # two MLP intermediates exist beside the layer's activations. Estimated from the op order,
    # not yet measured alone (issue 5).
    backward_residual_grads: float = 2.0
    backward_mlp_grads: float = 2.0
    # Scale on the per-layer activation sum; 1.0 = the op-by-op count above, which the H200 LoRA
    # runs without checkpointing (micro-batch 2 and 4: 22.7 and 30.1 GiB) match within 1%.
    activation_scale: float = 1.0
    # cuBLAS workspaces (Hopper: 32 MiB per handle/stream), input ids, labels, rotary tables.
    overhead_bytes: int = 96 * MIB
    # NF4 with double quantisation: 4-bit codes, an 8-bit absmax per 64 weights and an fp32
    # constant per 256 absmax blocks: 4 + 8/64 + 32/(64*256) = 4.127 bits per weight. Gives the
    # measured 5.32 GiB of the 8B model's 4-bit weights (embeddings and head in bf16).
    nf4_bits_per_param: float = 4 + 8 / 64 + 32 / (64 * 256)
    # bitsandbytes 8-bit Adam: two 1-byte states plus an fp32 absmax per 256-element block each.
    adam8bit_bytes_per_param: float = 2 * (1 + 4 / 256)
    # torch's foreach AdamW allocates sqrt(exp_avg_sq) for every parameter during the step.
    adamw_foreach_temp_bytes: float = 4.0
    # Caching allocator, PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (the matrix ran with
    # it; ftwiz's engine sets it): peak reserved - peak allocated in
    # bench/results/matrix-h200-call1.json / -call2.json is one fp32 logits-sized block (4 B x
    # vocab x tokens) left reserved but free at the peak: 1.01-1.20 blocks with checkpointing
    # (llama-3.2-1b/lora/ckpt-on/mb16/s2048: 15.83 GiB slack, 15.66 GiB block), 0.55-0.75 without
    # (llama-3.2-1b/lora/ckpt-off/mb16/s512: 2.15 of 3.91 GiB), + ~0.1 GiB. So reserved/allocated
    # is not a constant ratio: 1.02 (no checkpointing) to 1.31 (1B, 16 x 2,048, checkpointing).
    reserved_block_share_ckpt: float = 1.0
    reserved_block_share_no_ckpt: float = 0.55
    reserved_extra_bytes: int = 128 * MIB
    # nvidia-smi "used" minus PyTorch's peak reserved: 1.35 GiB on all 22 configurations of
    # bench/results/matrix-h200-call1.json / -call2.json (H200, driver 580.159.04, torch 2.11:
    # CUDA context, cuBLAS/cuDNN kernels and workspaces outside the caching allocator).
    cuda_context_bytes: int = int(1.35 * GIB)


CALIBRATION = Calibration()


@dataclass
class MemoryEstimate:
    """The peak step's memory, term by term (bytes), and what the allocator and nvidia-smi add."""

    method: str
    breakdown: dict[str, int]
    phase: str  # the moment of the step where the peak occurs
    reserved_bytes: int
    cuda_context_bytes: int
    paged_bytes: int  # paged optimizer states: managed memory, outside max_memory_allocated
    assumptions: list[str] = field(default_factory=list)

    @property
    def peak_bytes(self) -> int:
        return sum(self.breakdown.values())

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    @property
    def reserved_gib(self) -> float:
        return self.reserved_bytes / GIB

    @property
    def nvidia_smi_bytes(self) -> int:
        return self.reserved_bytes + self.cuda_context_bytes + self.paged_bytes

    @property
    def nvidia_smi_gib(self) -> float:
        return self.nvidia_smi_bytes / GIB

    @property
    def required_bytes(self) -> int:
        """What must fit on the GPU: reserved + context (paged states can spill to host RAM)."""
        return self.reserved_bytes + self.cuda_context_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "peak_gib": round(self.peak_gib, 3),
            "reserved_gib": round(self.reserved_gib, 3),
            "nvidia_smi_gib": round(self.nvidia_smi_gib, 3),
            "peak_phase": self.phase,
            "breakdown": {k: round(v / GIB, 3) for k, v in self.breakdown.items()},
            "paged_optimizer_gib": round(self.paged_bytes / GIB, 3),
            "assumptions": list(self.assumptions),
        }


@dataclass(frozen=True)
class _Shapes:
    """What the estimate needs from a ModelInfo (any object with these attributes works)."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    total_params: int
    model_type: str
    groups: tuple  # LinearGroup-like: name, in_features, out_features, count, (parent)
    parameter_groups: tuple = ()  # ModelInfo.parameter_groups: fused MoE experts LoRA adapts as parameters

    @classmethod
    def of(cls, info: Any) -> _Shapes:
        heads = int(info.num_attention_heads)
        head_dim = getattr(info, "head_dim", None) or info.hidden_size // heads
        groups = tuple(getattr(info, "linear_groups", None) or ())
        return cls(
            hidden=int(info.hidden_size),
            layers=int(info.num_layers),
            intermediate=int(info.intermediate_size),
            heads=heads,
            kv_heads=int(getattr(info, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            vocab=int(info.vocab_size),
            tied=bool(getattr(info, "tie_word_embeddings", False)),
            total_params=int(info.total_params),
            model_type=str(getattr(info, "model_type", "") or ""),
            groups=groups,
            parameter_groups=tuple(getattr(info, "parameter_groups", None) or ()),
        )

    @property
    def linear_params(self) -> int:
        """Weights of the layers bitsandbytes quantises (every linear but the output head)."""
        return sum(g.count * g.in_features * g.out_features for g in self.groups)

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def largest_linear(self) -> int:
        return max((g.in_features * g.out_features for g in self.groups), default=self.hidden * self.intermediate)

    @property
    def gated_mlp(self) -> bool:
        """SwiGLU-style (gate and up, 2 x intermediate wide) rather than one fc layer."""
        mlp_in = [g for g in self.groups if not _is_attention(g) and g.in_features == self.hidden]
        if not mlp_in:
            return True
        return sum(g.out_features for g in mlp_in) >= 2 * self.intermediate

    @property
    def norms_per_layer(self) -> int:
        return 4 if self.model_type in ("gemma2", "gemma3", "gemma3_text") else 2

    @property
    def qk_norm(self) -> bool:
        return self.model_type in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2")


def _is_attention(group: Any) -> bool:
    flag = getattr(group, "is_attention", None)
    if flag is not None:
        return bool(flag)
    return any(word in getattr(group, "parent", "") for word in ("attn", "attention"))


def _selected_groups(shapes: _Shapes, targets: Iterable[Any]) -> list[Any]:
    """LinearGroups from resolved module names (leaf or parent.leaf) or from groups given as is."""
    selected: dict[Any, None] = {}
    for target in targets:
        if not isinstance(target, str):
            selected[target] = None
            continue
        matches = [g for g in shapes.groups if target in (g.name, f"{getattr(g, 'parent', '')}.{g.name}")] + [
            g for g in shapes.parameter_groups if target == f"{g.parent}.{g.name}"]
        if not matches:
            available = ", ".join(dict.fromkeys(g.name for g in shapes.groups)) or "none known"
            raise UserError(f"--targets: {target}: no such linear module (available: {available})")
        for g in matches:
            selected[g] = None
    if not selected:
        raise UserError("--targets: LoRA needs at least one target module")
    return list(selected)


OUT_PROJECTIONS = frozenset({"o_proj", "out_proj", "dense", "down_proj", "c_proj", "fc2", "w2", "wo", "dense_4h_to_h"})
"""Leaf names of the linear layers that read a block's own result (attention output, MLP product)
rather than the normed residual stream: each has an input of its own."""


def _lora_saved_per_layer(groups: list[Any], layers: int, act: int, dropout: float, mask_bytes: float,
                          input_cast: bool, mlp_recomputed: bool = False) -> float:
    """Bytes per token per layer that LoRA modules keep for backward (lora_A's input).

    With dropout, or with peft's cast of the input to the adapters' fp32, every module keeps its
    own half-precision copy (+ a dropout mask). Without either, lora_A keeps the very tensor the
    base layer read: modules reading the same normed stream (q, k, v; gate, up) share one; the
    attention's out projection reads the attention output, which attention keeps anyway (the
    kernels write it token-major, so transformers' reshape is a view: measured on the CPU in
    tests/test_speed.py); the MLP's reads the gate x up product, kept once, or not at all where the
    engine recomputes it in backward (`mlp_recomputed`: core/engine/speed.recompute_mlp_input).
    """
    if dropout > 0 or input_cast:
        keep = act + (mask_bytes if dropout > 0 else 0)
        return keep * sum(g.count * g.in_features for g in groups) / layers
    inputs: dict[tuple, float] = {}
    for g in groups:
        block = "attention" if _is_attention(g) else "mlp"
        if g.name in OUT_PROJECTIONS and (block == "attention" or mlp_recomputed):
            continue
        key = (block, g.name) if g.name in OUT_PROJECTIONS else (block, "stream", g.in_features)
        inputs[key] = max(inputs.get(key, 0.0), g.count * g.in_features / layers)
    return act * sum(inputs.values())


def _positive_int(value: Any, option: str, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{option}: {value!r}: must be a whole number above 0 ({hint})")
    return value


def _liger_chunk_tokens(tokens: int, vocab: int, hidden: int) -> int:
    """Tokens per chunk of Liger's fused linear cross-entropy (its own rule, liger_kernel.ops)."""
    per_chunk = -(-tokens // -(-vocab // hidden))
    return min(tokens, 1 << math.ceil(math.log2(per_chunk)))


def default_optim(method: str) -> str:
    return "paged_adamw_8bit" if method == "qlora" else "adamw_torch"


@dataclass(frozen=True)
class Assumptions:
    """Everything a memory figure assumes besides the model: estimate_memory's inputs. The floor
    (minimum_memory) and a config's figure (estimate_for) are both `estimate`s of one of these, so
    two figures with equal Assumptions are one figure; `differences` says in words what two
    figures do not share, so a step showing a figure under other assumptions can say which."""

    method: str
    micro_batch: int = 1
    seq_len: int = 1024
    rank: int = 16
    targets: tuple[str, ...] = ()
    targets_words: str = field(default="every linear layer", compare=False)
    grad_ckpt: bool = True
    optim: str | None = None
    qlora_upcast: bool = False
    dtype: str = "bf16"
    lora_dropout: float = 0.0  # the config's default (recommend.dropout_reason)
    grad_accum: int = 1
    liger: bool = False
    fused_head: bool = False
    shards: int = 1
    recompute_mlp: bool = False  # recomputes_mlp_input: an engine detail, not among the words

    def estimate(self, info: Any) -> MemoryEstimate:
        return estimate_memory(
            info, self.method, self.micro_batch, self.seq_len, self.rank, self.targets, self.grad_ckpt,
            self.optim, self.qlora_upcast, self.dtype, lora_dropout=self.lora_dropout, grad_accum=self.grad_accum,
            liger=self.liger, fused_head=self.fused_head, shards=self.shards, recompute_mlp=self.recompute_mlp,
        )

    def words(self) -> dict[str, str]:
        """Each assumption in words, keyed by what it is about (the keys two figures compare)."""
        lora = self.method != "full"
        # A fused loss never holds the full logits (Liger's fused linear cross-entropy, or TRL 1.16+'s
        # chunked LM head): on an 8B model that is 1.5 GiB of the floor.
        kernels = "Liger kernels" if self.liger else "fused loss" if self.fused_head else "unfused loss"
        return {
            "micro_batch": f"micro-batch {self.micro_batch}",
            "seq_len": f"{self.seq_len} tokens",
            **({"lora": f"LoRA rank {self.rank} on {self.targets_words}"} if lora else {}),
            "grad_ckpt": f"gradient checkpointing {'on' if self.grad_ckpt else 'off'}",
            "dtype": self.dtype,
            "kernels": kernels,
            "grad_accum": f"gradient accumulation {self.grad_accum}",
            **({"lora_dropout": f"LoRA dropout {self.lora_dropout:g}"} if lora else {}),
            "optim": f"optimizer {self.optim or default_optim(self.method)}",
            **({"qlora_upcast": f"QLoRA upcast {'on' if self.qlora_upcast else 'off'}"}
               if self.method == "qlora" else {}),
            "shards": f"sharded over {self.shards} GPUs" if self.shards > 1 else "a whole copy on each GPU",
        }

    def text(self) -> str:
        """The assumptions every step states (FLOOR_ASSUMPTIONS's words), and the kernels when on."""
        words = self.words()
        shown = ["micro_batch", "seq_len", "lora", "grad_ckpt", "dtype"]
        if self.liger or self.fused_head != trl_fuses_lm_head():  # the loss every run gets goes unsaid
            shown.append("kernels")
        return ", ".join(words[key] for key in shown if key in words)

    def differences(self, other: Assumptions) -> list[str]:
        """What this figure assumes that `other` does not: 'micro-batch 8 (there: 1)'."""
        mine, theirs = self.words(), other.words()
        out = []
        for key in mine:
            if key in theirs and mine[key] != theirs[key]:
                a, b = mine[key].split(" "), theirs[key].split(" ")
                same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                out.append(f"{mine[key]} (there: {' '.join(b[same:]) or theirs[key]})")
        return out


def floor_assumptions(info: Any, method: str, seq_len: int = 1024, rank: int = 16,
                      targets: str | Iterable[str] = "all-linear", optim: str | None = None,
                      qlora_upcast: bool = False, dtype: str = "bf16", shards: int = 1) -> Assumptions:
    """minimum_memory's assumptions: micro-batch 1 with gradient checkpointing, no Liger kernels; the
    loss as the installed TRL computes it (1.16+: its own chunked LM head, never the full logits),
    as every run gets it."""
    from ftwiz.core.models import resolve_targets

    names = tuple(resolve_targets(info, targets)) if method != "full" else ()
    return Assumptions(
        method, micro_batch=1, seq_len=seq_len, rank=rank, targets=names,
        targets_words="" if method == "full" else targets_words(info, targets), grad_ckpt=True, optim=optim or default_optim(method),
        qlora_upcast=qlora_upcast, dtype=dtype, shards=shards, fused_head=trl_fuses_lm_head(),
    )


def targets_words(info: Any, targets: str | Iterable[str]) -> str:
    """LoRA targets as the steps say them: 'every linear layer' (all-linear), or their names."""
    from ftwiz.core.models import resolve_targets

    if targets == "all-linear":
        return "every linear layer"
    names = list(resolve_targets(info, targets))
    return "every linear layer" if names == list(resolve_targets(info, "all-linear")) else ", ".join(names)


FLOOR_ASSUMPTIONS = "micro-batch 1, 1024 tokens, LoRA rank 16 on every linear layer, gradient checkpointing on, bf16"
"""What minimum_memory's defaults assume (floor_assumptions(info, "lora").text()): said wherever
its figure is shown (Hardware, Model); Settings and Review name what their own figure assumes
differently (Assumptions.differences)."""


def floor_text(estimate: MemoryEstimate) -> str:
    """The one figure of a memory estimate that every step shows: what must fit on the GPU
    (reserved memory plus the CUDA context), as nvidia-smi would count it before paging."""
    return gib_text(estimate.required_bytes)


def minimum_memory(
    info: Any,
    method: str,
    seq_len: int = 1024,
    rank: int = 16,
    targets: str | Iterable[str] = "all-linear",
    optim: str | None = None,
    qlora_upcast: bool = False,
    dtype: str = "bf16",
    shards: int = 1,
) -> MemoryEstimate:
    """The floor of a method on a model: micro-batch 1 with gradient checkpointing.

    What "can this GPU train this model this way at all?" is answered against (the wizard's
    per-method tables, checks.check_fits); anything above it is a choice of batch size.
    `targets` is a preset (default ftwiz's, "all-linear") or module names; full fine-tuning ignores it.
    `shards`: FSDP over that many GPUs (see estimate_memory).
    """
    return floor_assumptions(info, method, seq_len, rank, targets, optim, qlora_upcast, dtype, shards).estimate(info)


def trl_fuses_lm_head() -> bool:
    """TRL 1.16+ computes SFT's loss through its own chunked LM head: no full logits (found without importing it)."""
    import importlib.metadata as md

    try:
        major, minor = (int(x) for x in md.version("trl").split(".")[:2])
    except (md.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (1, 16)


def mlp_recompute_possible(method: str, regional_compile: bool, fsdp: bool) -> bool:
    """Layers the engine may recompute the MLP's product on: LoRA or QLoRA, not compiled, one
    process per GPU's whole model (not FSDP). Checkpointing, decided per layout, comes on top
    (estimate_memory's `recompute_mlp` counts nothing under it)."""
    return method != "full" and not regional_compile and not fsdp


def recomputes_mlp_input(config: Any) -> bool:
    """The engine recomputes the MLP's product in backward rather than keep it for down_proj's
    adapter (core/engine/speed.recompute_mlp_input): asked for (training.recompute_mlp_input, the
    default), possible (mlp_recompute_possible) and the layers not checkpointed. Whether that
    saves memory depends on the model and adapters too (estimate_memory's `recompute_mlp`)."""
    t = config.training
    return (t.recompute_mlp_input and not t.gradient_checkpointing
            and mlp_recompute_possible(config.method, t.regional_compile, t.fsdp))


def liger_norms(use_liger_kernel: bool, regional_compile: bool) -> bool:
    """Liger's RMSNorm (half-precision input kept) is applied: Liger on and the layers not compiled
    (with compiled layers the engine leaves Liger's layer kernels to inductor: core/engine/speed.py)."""
    return use_liger_kernel and not regional_compile


def config_assumptions_of(config: Any, info: Any, hardware: Any = None, *, liger: bool | None = None) -> Assumptions:
    """What estimate_for assumes of a RunConfig on `info`'s model: the one place that reads the
    estimator's arguments off a config. One GPU's memory when the run spreads over every GPU of
    `hardware` (DDP: a replica each; FSDP: 1/N each); Liger and TRL's fused head as the engine will
    apply them on a GPU (`liger` overrides)."""
    from ftwiz.core.models import resolve_targets

    t = config.training
    targets = config.lora.target_modules
    full = config.method == "full"
    names = () if full else tuple(resolve_targets(info, targets) if isinstance(targets, str) else targets)
    return Assumptions(
        config.method, micro_batch=t.per_device_train_batch_size, seq_len=t.max_length, rank=config.lora.r,
        targets=names, targets_words="" if full else targets_words(info, targets), grad_ckpt=t.gradient_checkpointing,
        optim=t.optim or default_optim(config.method), qlora_upcast=config.quantization.upcast, dtype=t.precision,
        lora_dropout=config.lora.lora_dropout, grad_accum=t.gradient_accumulation_steps,
        liger=liger_norms(t.use_liger_kernel, t.regional_compile) if liger is None else liger,
        fused_head=trl_fuses_lm_head() or t.use_liger_kernel,
        shards=t.shards(len(getattr(hardware, "gpus", None) or [])), recompute_mlp=recomputes_mlp_input(config),
    )


def estimate_for(config: Any, info: Any, hardware: Any = None, *, liger: bool | None = None) -> MemoryEstimate:
    """The estimate for a RunConfig on `info`'s model (config_assumptions_of says what it assumes)."""
    return config_assumptions_of(config, info, hardware, liger=liger).estimate(info)


def config_assumptions(config: Any, info: Any = None) -> str:
    """What estimate_for assumes of a config, in the words FLOOR_ASSUMPTIONS uses."""
    if info is None:  # no model to resolve the targets on: the five the floor states
        t = config.training
        lora = "" if config.method == "full" else f", LoRA rank {config.lora.r}"
        return (f"micro-batch {t.per_device_train_batch_size}, {t.max_length} tokens{lora}, "
                f"gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}, {t.precision}")
    return config_assumptions_of(config, info).text()


@dataclass(frozen=True)
class MemoryFigure:
    """What Settings and Review show of a config's memory, from one place: its figure and what it
    assumes, and the Hardware and Model steps' floor with what the figure assumes differently."""

    figure: str
    assumptions: str
    estimate: MemoryEstimate
    floor: str
    floor_assumptions: str
    differences: list[str]

    @property
    def comparison(self) -> str:
        """One sentence relating this figure to the floor the earlier steps showed."""
        if not self.differences:
            return f"The same {self.figure} as the Hardware and Model steps: the same assumptions."
        return (f"The Hardware and Model steps showed {self.floor} at {self.floor_assumptions}; this figure "
                f"differs in: {', '.join(self.differences)}.")


def memory_figure(config: Any, info: Any, hardware: Any = None) -> MemoryFigure:
    """A config's memory figure and its floor, each with its assumptions (Settings, Review)."""
    mine = config_assumptions_of(config, info, hardware)
    floor = floor_assumptions(info, config.method)  # minimum_memory(info, method), as those steps call it
    estimate = mine.estimate(info)
    return MemoryFigure(
        figure=floor_text(estimate),
        assumptions=mine.text(),
        estimate=estimate,
        floor=floor_text(floor.estimate(info)),
        floor_assumptions=floor.text(),
        differences=mine.differences(floor),
    )


def estimate_memory(
    info: Any,
    method: str = "lora",
    micro_batch: int = 4,
    seq_len: int = 512,
    rank: int = 16,
    targets: Iterable[Any] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    grad_ckpt: bool = True,
    optim: str | None = None,
    qlora_upcast: bool = False,
    dtype: str = "bf16",
    lora_dropout: float = 0.0,
    grad_accum: int = 1,
    liger: bool = False,
    calibration: Calibration = CALIBRATION,
    shards: int = 1,
    fused_head: bool | None = None,
    input_cast: bool | None = None,
    recompute_mlp: bool = False,
) -> MemoryEstimate:
    """Peak memory allocated by PyTorch during a training step (after the first optimizer step).

    `dtype` is the training precision: bf16/fp16 mean autocast (LoRA/QLoRA on a half-precision
    base; full fine-tuning on fp32 master weights), fp32 means no autocast. Gradients are kept
    across micro-batches when `grad_accum` > 1 (the Trainer zeroes them with set_to_none).
    `liger` = Liger's RMSNorm applied (it keeps a half-precision input; not when the layers are
    compiled, see liger_norms). `fused_head` = the loss never materialises the full logits (Liger's
    fused linear cross-entropy, or TRL 1.16+'s own chunked LM head); defaults to `liger`.
    `shards`: the memory of one GPU under FSDP FULL_SHARD over that many GPUs (1: a whole
    replica, as on one GPU or under DDP). `input_cast`: peft casts each LoRA module's input to
    the adapters' fp32 (a copy per module); ftwiz's engine turns that off under autocast
    (core/engine/process.py), so by default it is on only without autocast (fp32).
    `recompute_mlp`: the engine recomputes a gated MLP's product in backward instead of keeping
    it for down_proj's adapter (recomputes_mlp_input); it changes the figure only without
    checkpointing, dropout or the input cast, where that adapter would keep the product itself.
    """
    if method not in METHODS:
        raise UserError(f"--method: {method!r}: unknown (allowed: {', '.join(METHODS)})")
    if dtype not in DTYPES:
        raise UserError(f"--dtype: {dtype!r}: unknown (allowed: {', '.join(DTYPES)})")
    optim = optim or default_optim(method)
    if optim not in OPTIMIZERS:
        raise UserError(f"--optim: {optim!r}: unknown (allowed: {', '.join(OPTIMIZERS)})")
    if method == "qlora" and dtype == "fp32":
        raise UserError("--dtype: fp32: QLoRA computes in bf16 or fp16 (allowed: bf16, fp16)")
    shards = _positive_int(shards, "shards", "GPUs the model is sharded over")
    if method == "qlora" and shards > 1:
        raise UserError("shards: QLoRA is not sharded (ftwiz runs it with a copy per GPU, DDP); use shards 1")
    micro_batch = _positive_int(micro_batch, "--batch", "micro-batch per GPU, e.g. 4")
    seq_len = _positive_int(seq_len, "--seq", "tokens per example, e.g. 512")
    grad_accum = _positive_int(grad_accum, "--grad-accum", "e.g. 4")
    if not 0.0 <= lora_dropout < 1.0:
        raise UserError(f"--lora-dropout: {lora_dropout}: must be in [0, 1)")
    c = calibration
    s = _Shapes.of(info)
    if input_cast is None:
        input_cast = dtype == "fp32"
    tokens = micro_batch * seq_len
    h, inter, vocab, layers = s.hidden, s.intermediate, s.vocab, s.layers
    autocast = dtype != "fp32"
    act = 2 if autocast else 4  # bytes of a value computed under autocast

    # Residual stream dtype: fp32 when the embeddings are fp32 (full fine-tuning's master weights,
    # QLoRA after peft's upcast) since every residual add then promotes to fp32.
    fp32_stream = dtype == "fp32" or method == "full" or (method == "qlora" and qlora_upcast)
    res = 4 if fp32_stream else 2
    # bitsandbytes' Linear4bit casts its output back to its input's dtype: the MLP runs in the
    # stream's dtype under QLoRA; otherwise linear outputs are autocast's half precision.
    mlp_bytes = res if method == "qlora" else act

    # -- weights ---------------------------------------------------------------------------
    assumptions: list[str] = []
    lora_groups: list[Any] = []
    trainable = 0
    if method == "full":
        weights = 4 * s.total_params  # fp32 master weights (Trainer bf16=True: autocast)
        trainable = s.total_params
        if autocast:
            assumptions.append("full fine-tuning: fp32 master weights under bf16/fp16 autocast (Trainer bf16=True)")
    else:
        rank = _positive_int(rank, "--rank", "typical: 8, 16, 32, 64")
        lora_groups = _selected_groups(s, targets)
        trainable = sum(g.count * rank * (g.in_features + g.out_features) for g in lora_groups)
        if method == "lora":
            weights = act * s.total_params
        else:
            quantised = s.linear_params
            rest = s.total_params - quantised
            weights = int(quantised * c.nf4_bits_per_param / 8) + (4 if qlora_upcast else 2) * rest
            assumptions.append(
                "QLoRA: NF4 + double quantisation (4.127 bits/weight); embeddings, head and norms "
                + ("upcast to fp32 (peft prepare_model_for_kbit_training)" if qlora_upcast else "kept in bf16 (base only frozen)")
            )

    # Half-precision copies of weights that autograd keeps for backward. Full fine-tuning:
    # autocast's cast of every linear weight and the head; only the head's survives the forward
    # when checkpointing (recomputed layers re-cast theirs one at a time). QLoRA with upcast: the
    # bf16 cast of the fp32 head. QLoRA dequantises one weight at a time (transient).
    head_copy = act * s.head_params if (autocast and (method == "full" or (method == "qlora" and qlora_upcast))) else 0
    all_copies = act * s.linear_params + head_copy if (method == "full" and autocast) else head_copy
    dequant = act * s.largest_linear if method == "qlora" else 0
    layer_copy = act * s.linear_params / layers if (method == "full" and autocast) else 0

    # -- trainable state -------------------------------------------------------------------
    trainable_param_bytes = 0 if method == "full" else 4 * trainable  # fp32 adapters
    grad_bytes = 4 * trainable
    if optim in ("adamw_torch", "adamw_torch_fused"):
        state_bytes = 8 * trainable
        step_temp = c.adamw_foreach_temp_bytes * trainable if optim == "adamw_torch" else 0
    else:
        state_bytes = int(c.adam8bit_bytes_per_param * trainable)
        step_temp = 0
    if shards > 1:
        # FULL_SHARD: every parameter, its gradient and its optimizer states live on one rank
        # only (ceil: a parameter is split into equal padded pieces).
        weights, trainable_param_bytes, grad_bytes, state_bytes, step_temp = (
            -(-int(x) // shards) for x in (weights, trainable_param_bytes, grad_bytes, state_bytes, step_temp)
        )
        assumptions.append(
            f"FSDP FULL_SHARD over {shards} GPUs: weights, gradients and optimizer states divided by {shards}; "
            "activations, logits and the gathered layer's half-precision weights are not"
        )
    paged = state_bytes if optim.startswith("paged_") else 0
    resident_states = state_bytes - paged
    if paged:
        assumptions.append("paged 8-bit optimizer states live in CUDA managed memory: in nvidia-smi, not in PyTorch's peak")

    # -- activations per token per layer ----------------------------------------------------
    q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
    # Liger's RMSNorm keeps its input in the stream's own dtype (+ an fp32 rstd per token). With it
    # and the fused linear cross-entropy, the two Liger runs of bench/results/speed-h200.json
    # (arm b2: 8B LoRA r32, 51.74 GiB; arm c: 8B QLoRA r16, 41.93 GiB; a packed row of 7,113
    # tokens, no checkpointing) are matched within 1%. Liger's SwiGLU keeps gate and up rather than
    # gate, act(gate) and up, but those runs show no such saving (taking it under-estimates both by
    # ~12%), so the MLP term stays as without Liger.
    norm_input = res if liger else c.norm_saved_bytes
    norm_saved = norm_input * h + (res * h if method == "full" else 0)  # + normed x for the weight grad
    per_layer = s.norms_per_layer * norm_saved
    if s.qk_norm:
        per_layer += c.norm_saved_bytes * (q_dim + kv_dim)
    per_layer += act * (2 * q_dim + 2 * kv_dim)  # SDPA keeps q, k, v and its output (+ tiny logsumexp)
    # act(gate) keeps gate; gate*up keeps act(gate) and up. Liger's SwiGLU recomputes act(gate) in
    # its backward and keeps gate and up only: the 8B LoRA and QLoRA runs of
    # bench/results/real-chat-h200.json (varlen attention, packed rows of 10,816 tokens, no
    # checkpointing) are matched within 1% with 2, over-estimated by 15-18% with 3.
    mlp_saved = (2 if liger else 3) if s.gated_mlp else 1
    per_layer += mlp_saved * inter * mlp_bytes
    if method == "full":
        # Every linear keeps its (autocast-cast) input for the weight gradient.
        per_layer += act * sum(g.count * g.in_features for g in s.groups) / layers
    else:
        per_layer += _lora_saved_per_layer(lora_groups, layers, act, lora_dropout, c.dropout_mask_bytes, input_cast,
                                           mlp_recomputed=recompute_mlp and s.gated_mlp and not grad_ckpt)
    per_layer *= c.activation_scale
    layer_activations = per_layer * tokens
    checkpoint_per_layer = res * h * tokens  # the layer's input, kept by checkpointing
    final_norm = norm_saved * tokens
    fused = liger if fused_head is None else fused_head
    if fused:
        # Liger's fused linear cross-entropy: logits exist one chunk of tokens at a time
        # (chunk = next power of 2 of tokens / ceil(vocab / hidden)); the gradient of the hidden
        # states is computed in the forward and kept, plus an fp32 loss per token.
        logits_block = act * vocab * _liger_chunk_tokens(tokens, vocab, h)
        logits_loss = act * h * tokens + logits_block + 4 * tokens
    else:
        logits_block = 4 * vocab * tokens
        logits_loss = c.loss_fp32_buffers * logits_block
    backward_transient = (c.backward_residual_grads * res * h + c.backward_mlp_grads * inter * mlp_bytes) * tokens

    grads_kept = grad_bytes if grad_accum > 1 else 0

    def phase(copies: float, grads: float, activations: float, loss: float, states: float = resident_states) -> dict[str, int]:
        return {
            "weights": int(weights),
            "weight_copies": int(copies),
            "trainable_params": int(trainable_param_bytes),
            "gradients": int(grads),
            "optimizer_states": int(states),
            "activations": int(activations),
            "logits_loss": int(loss),
            "overhead": int(c.overhead_bytes),
        }

    phases: dict[str, dict[str, int]] = {}
    if grad_ckpt:
        kept = layers * checkpoint_per_layer
        phases["loss backward"] = phase(head_copy, grads_kept, kept + final_norm, logits_loss)
        phases["backward through a recomputed layer"] = phase(
            head_copy + layer_copy + dequant, grads_kept, kept + layer_activations + backward_transient, 0
        )
    else:
        phases["loss backward"] = phase(all_copies, grads_kept, layers * layer_activations + final_norm, logits_loss)
    # The step's temporaries (foreach AdamW's sqrt buffer) count with the optimizer states.
    phases["optimizer step"] = phase(0, grad_bytes, 0, 0, states=resident_states + step_temp)
    peak_phase = max(phases, key=lambda name: sum(phases[name].values()))
    breakdown = phases[peak_phase]

    peak = sum(breakdown.values())
    share = c.reserved_block_share_ckpt if grad_ckpt else c.reserved_block_share_no_ckpt
    reserved = int(peak + share * logits_block + c.reserved_extra_bytes)
    assumptions.append(
        f"reserved = peak allocated + {share:g} x a {'logits chunk' if fused else 'fp32 logits block'} "
        f"({logits_block / GIB:.2f} GiB) + {c.reserved_extra_bytes // MIB} MiB "
        "(PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True, as measured on the H200)"
    )
    if liger:
        assumptions.append("Liger's RMSNorm keeps a bf16 input")
    if fused:
        assumptions.append("fused LM head (TRL's chunked head or Liger's): no full logits")
    assumptions.append(
        f"nvidia-smi = reserved + CUDA context and kernels ~{c.cuda_context_bytes / GIB:.2f} GiB (measured on the H200)"
        + (" + paged optimizer states" if paged else "")
    )
    return MemoryEstimate(
        method=method,
        breakdown=breakdown,
        phase=peak_phase,
        reserved_bytes=reserved,
        cuda_context_bytes=c.cuda_context_bytes,
        paged_bytes=paged,
        assumptions=assumptions,
    )
