"""Hyperparameters from the dataset's size (the guide's table), then a batch layout that fits the GPU.

Every value carries a one-line reason that the UI shows beside it.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from ftwiz.core.cost import flops_per_token
from ftwiz.core.errors import UserError
from ftwiz.core.memory import GIB, MemoryEstimate, default_optim, estimate_memory
from ftwiz.core.methods import check_method
from ftwiz.core.models import DEFAULT_TARGETS, TARGETS_REASON

# Free memory we plan to use: the estimate may be ~10% off (issue 5 holds it to 10%) and the
# allocator, NCCL or a stray process can take a little more; 1 GiB more covers small GPUs.
MARGIN_FRACTION = 0.10
MARGIN_BYTES = 1 * GIB

# A micro-batch of far fewer tokens than this leaves the GPU's matrix units under-filled, so
# per-token time grows as (1 + SMALL_BATCH_TOKENS / tokens). Heuristic: issue 5's bench
# calibrates it on the H200 matrix.
SMALL_BATCH_TOKENS = 256
SHORTEST_SEQ = 128

# The H200 comparisons (issue 5; bench/README.md says how to repeat them): the speed comparison
# against the guide's recipe and the one with transformers + peft and Unsloth (8B LoRA,
# micro-batch 4 x 512). bench/report.py copies the ratios the reasons quote into measured.json,
# package data, so an installed wheel cites the same figures as a checkout.
MEASURED = Path(__file__).resolve().parent / "measured.json"
COMPILED_METHODS = ("lora",)
"""Methods whose compiled layers were measured (LoRA); full fine-tuning and 4-bit layers were not."""


@lru_cache(maxsize=1)
def _measured() -> dict[str, Any]:
    try:
        doc = json.loads(MEASURED.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def measured_speedups() -> dict[str, float]:
    """Real tokens/s ratios to the guide's recipe measured on the H200 (arm -> ratio), and the
    share of padding in its padded batches ("padding_share"); {} if not measured.

    b: ftwiz's plan padded, without Liger; b2: the same plan packed padding-free with Liger.
    """
    return dict(_measured().get("speedups") or {})


def measured_compile_gain() -> dict[str, float]:
    """Compiled layers' tokens/s over transformers + peft and over Unsloth, checkpointing on; {} if absent."""
    return dict(_measured().get("compile_gain") or {})


COMPILE_PAYBACK_S = 300
"""Compiled layers pay off only in runs longer than this: on real chat data (H200, 8B LoRA,
varlen attention) compiling cost ~31 s of train time for ~11% faster steps, so ~280 s of
training repay it (measured_compile(); bench/results/real-chat-h200-diag-gpu0.json)."""


def measured_attention() -> dict[str, Any]:
    """Steady tokens/s of `ftwiz train` on real chat data with sdpa and with varlen attention."""
    return dict(_measured().get("attention") or {})


def measured_compile() -> dict[str, Any]:
    """Compiled layers on real chat data: steady gain (fraction) and the train time the compile costs."""
    return dict(_measured().get("compile") or {})


def real_data_figures() -> dict[str, Any]:
    """ftwiz's plan against the guide's recipe and Unsloth through `ftwiz train` on real chat data."""
    return dict(_measured().get("real_chat") or {})


def _compile_evidence() -> str:
    c = measured_compile()
    if not c:
        return "measured on real chat data"
    return (f"on real chat data (H200, 8B LoRA) {c['steady_gain']:.0%} faster steps for ~{c['cost_s']:.0f} s "
            f"of compiling ({c['source']})")


def compile_option(cpu_only: bool, method: str) -> Recommendation:
    """Regional torch.compile of the decoder layers, where it was measured (LoRA on a GPU).

    The planner turns it off again for runs too short to repay the compile (COMPILE_PAYBACK_S)."""
    if cpu_only:
        return Recommendation("regional_compile", False, "no GPU: compiled layers pay off on GPU kernels only")
    if method not in COMPILED_METHODS:
        what = "4-bit layers" if method == "qlora" else "layers under full fine-tuning"
        return Recommendation("regional_compile", False, f"{method}: compiled {what} were not measured; left off")
    return Recommendation("regional_compile", True,
                          f"torch.compile each decoder layer: {_compile_evidence()}; on for runs over "
                          f"{COMPILE_PAYBACK_S // 60} minutes")


def liger_available() -> bool:
    """liger-kernel importable (found without importing it or torch)."""
    return importlib.util.find_spec("liger_kernel") is not None


def varlen_available() -> bool:
    """PyTorch's varlen FlashAttention (torch.nn.attention.varlen, torch 2.10+), found without importing torch."""
    import importlib.metadata as md

    try:
        major, minor = (int(x) for x in md.version("torch").split("+")[0].split(".")[:2])
    except (md.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (2, 10)


def _speed_evidence() -> str:
    real = real_data_figures()
    if real.get("vs_guide"):
        return (f"; through `ftwiz train` on real chat data (H200, 8B) ftwiz's plan trained {real['vs_guide']:.2f}x "
                f"the guide's recipe's tokens/s ({real['source']})")
    return ""


def speed_options(cpu_only: bool, method: str = "lora") -> list[Recommendation]:
    """Padding-free packing, its attention, Liger kernels and compiled layers, each with the measured reason."""
    evidence = _speed_evidence()
    if cpu_only:
        return [Recommendation("packing", False, "no GPU: padding-free packing is for GPU attention kernels"),
                Recommendation("attn_implementation", "sdpa", "no GPU: PyTorch's SDPA"),
                Recommendation("use_liger_kernel", False, "no GPU: Liger's kernels are Triton, CUDA only"),
                compile_option(cpu_only, method)]
    packing = Recommendation(
        "packing", True,
        "padding-free packing (TRL BFD): examples share rows, no compute on padding" + evidence)
    a = measured_attention()
    measured = (f": {a['sdpa_tokens_per_s']:,.0f} vs {a['varlen_tokens_per_s']:,.0f} tokens/s through `ftwiz train` "
                f"on real chat data, {a['source']}" if a else "")
    if varlen_available():
        attention = Recommendation(
            "attn_implementation", "varlen",
            "PyTorch's varlen FlashAttention: each packed example attends only to itself, at FlashAttention's "
            f"speed (SDPA masks the whole packed row{measured})")
    else:
        attention = Recommendation(
            "attn_implementation", "sdpa",
            "SDPA with a block-diagonal mask for packed rows (correct, slower); torch 2.10+ brings varlen "
            f"FlashAttention{measured}")
    if liger_available():
        liger = Recommendation("use_liger_kernel", True,
                               "Liger kernels (RMSNorm, RoPE, SwiGLU); TRL's own chunked LM head keeps the full "
                               "logits out of memory")
    else:
        liger = Recommendation("use_liger_kernel", False, "liger-kernel is not installed (pip install liger-kernel)")
    return [packing, attention, liger, compile_option(cpu_only, method)]


@dataclass(frozen=True)
class Band:
    """One column of the guide's table: its figures as printed (text) and ftwiz's pick in each range."""

    name: str
    learning_rate: float
    lr_range: str
    epochs: int
    epochs_range: str
    batch: int
    batch_range: str
    rank: int
    rank_range: str
    warmup: float


# The guide's "Hyperparameter Guidelines" table (its figures exactly as printed), with the
# value ftwiz picks inside each range: the low end of epochs and batch (a first run; more overfits
# a small set), and the guide's own example rank 16 except for over 10K examples.
BANDS = (
    Band("under 1K", 1e-4, "1e-4", 3, "3-5", 8, "8-16", 16, "8-16", 0.05),
    Band("1K to 10K", 2e-4, "2e-4", 2, "2-3", 16, "16-32", 16, "16-32", 0.03),
    Band("over 10K", 2e-4, "2e-4 to 5e-4", 1, "1-2", 32, "32-64", 32, "16-64", 0.03),
)

# Full fine-tuning's learning rate by model size. LoRA Without Regret (Thinking Machines, 2025)
# found LoRA's best rate about 10x full fine-tuning's across its sweeps; the QLoRA paper
# (Dettmers et al. 2023) trained adapters at 2e-4 for 7-13B and 1e-4 for 33-65B models, and
# Tulu 2 (Ivison et al. 2023) fully fine-tuned at 2e-5, 1e-5 for 70B: one tenth of each.
FULL_LR_BY_SIZE = ((30e9, 2e-5), (float("inf"), 1e-5))
FULL_LR_SOURCE = ("LoRA Without Regret (2025): LoRA's best rate ~10x full fine-tuning's; QLoRA paper: 2e-4 "
                  "for 7-13B, 1e-4 for 33-65B; Tulu 2: 2e-5, 1e-5 for 70B")


def full_learning_rate(params: float | None) -> float:
    """Full fine-tuning's rate for a model of `params` weights (unknown: the under-30B rate)."""
    return next(lr for limit, lr in FULL_LR_BY_SIZE if (params or 0) < limit)


def dataset_band(n_examples: int | None) -> Band:
    if n_examples is None or n_examples >= 1000:
        return BANDS[2] if n_examples is not None and n_examples > 10_000 else BANDS[1]
    return BANDS[0]


@dataclass(frozen=True)
class Recommendation:
    field: str  # the RunConfig / library field name
    value: Any
    reason: str
    guide: str | None = None  # the guide's value or range for this field, as it prints it; None: it gives none


@dataclass
class Hyperparams:
    band: str
    items: dict[str, Recommendation]

    def __getitem__(self, name: str) -> Any:
        return self.items[name].value

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: {"value": r.value, "reason": r.reason, "guide": r.guide} for name, r in self.items.items()}


def dropout_reason(saved: str | None = None) -> str:
    """Why ftwiz departs from the guide's LoRA dropout; `saved`: what following the guide would
    cost on the planned layout (core/plan.py fills it in once the layout is known)."""
    cost = f" ({saved} less at this plan's batch)" if saved else ""
    return ("0, not the guide's 0.05: with dropout each LoRA module keeps its own copy of its input for backward, "
            f"without it they share the layer's{cost}; the held-out evaluation and its best checkpoint guard against "
            "overfitting instead (0 is also LLaMA-Factory's default and what Unsloth's notebooks use); lora.lora_dropout: 0.05 follows "
            "the guide")


def recommend_hyperparams(
    n_examples: int | None, method: str, bf16_ok: bool, cpu_only: bool = False, params: float | None = None
) -> Hyperparams:
    """The guide's values for this dataset size and method, each with its reason and the guide's
    figure; `params` (the model's size) picks full fine-tuning's learning rate."""
    if n_examples is not None and (isinstance(n_examples, bool) or n_examples <= 0):
        raise UserError(f"--examples: {n_examples!r}: must be a whole number above 0")
    check_method(method)
    band = dataset_band(n_examples)
    size = "size unknown, assumed 1K to 10K" if n_examples is None else f"{n_examples:,} examples ({band.name})"
    r: list[Recommendation] = []
    if method == "full":
        lr = full_learning_rate(params)
        r.append(Recommendation(
            "learning_rate", lr, f"full fine-tuning, not the guide's LoRA rate: {lr:g} for a model "
            f"{'under' if lr == FULL_LR_BY_SIZE[0][1] else 'of'} 30B ({FULL_LR_SOURCE})", band.lr_range))
    else:
        r.append(Recommendation("learning_rate", band.learning_rate, f"{size}: the guide gives {band.lr_range}",
                                band.lr_range))
    r.append(Recommendation("num_train_epochs", band.epochs, f"{size}: the guide gives {band.epochs_range}; "
                            f"{band.epochs}, its low end, for a first run (more overfits)", band.epochs_range))
    r.append(Recommendation("effective_batch_size", band.batch, f"{size}: the guide gives {band.batch_range} "
                            "examples a step", band.batch_range))
    if method != "full":
        r.append(Recommendation("r", band.rank, f"{size}: the guide gives rank {band.rank_range}; more data can "
                                "use more capacity", band.rank_range))
        r.append(Recommendation("lora_alpha", 2 * band.rank, "alpha = 2 x rank, the guide's default scaling",
                                "2 x rank"))
        r.append(Recommendation("lora_dropout", 0.0, dropout_reason(), "0.05"))
        r.append(Recommendation("target_modules", DEFAULT_TARGETS, TARGETS_REASON, "q_proj, k_proj, v_proj, o_proj"))
        r.append(Recommendation("use_rslora", False, "rsLoRA (alpha/sqrt(r), Kalajdzievski 2023) helps ranks of 64 "
                                "and more keep learning; at this rank alpha/r is the guide's scaling"))
        r.append(Recommendation("use_dora", False, "DoRA (Liu et al. 2024) gains most at low ranks but its steps are "
                                "slower and use more memory; off for a first run"))
    r.append(Recommendation("warmup_ratio", band.warmup, f"{size}: the guide gives {band.warmup:g}", f"{band.warmup:g}"))
    r.append(Recommendation("lr_scheduler_type", "cosine", "cosine decay: the guide's default, gentle at the end",
                            "cosine"))
    r.append(Recommendation("weight_decay", 0.01, "0.01: mild regularisation, the guide's default", "0.01"))
    if method == "qlora":
        r.append(Recommendation("optim", "paged_adamw_8bit", "QLoRA: 8-bit states, paged to host RAM under memory spikes",
                                "paged_adamw_8bit"))
    else:
        r.append(Recommendation("optim", "adamw_torch", ("AdamW: the standard; the states of LoRA's few weights are "
                                "small, so the guide's paged 8-bit AdamW saves nothing worth its cost") if method == "lora"
                                else "AdamW: the standard (8-bit AdamW if memory is short)", "paged_adamw_8bit"))
    r.extend(speed_options(cpu_only, method))
    if cpu_only:
        r.append(Recommendation("precision", "fp32", "no GPU: CPUs train in fp32", "bf16"))
    elif bf16_ok:
        r.append(Recommendation("precision", "bf16", "this GPU supports bf16: fp32's range at half the memory", "bf16"))
    else:
        r.append(Recommendation("precision", "fp16", "this GPU lacks bf16 (before Ampere): fp16 with loss scaling", "bf16"))
    return Hyperparams(band.name, {rec.field: rec for rec in r})


def examples_per_row(packing: bool, mean_tokens: float | None, row_tokens: int) -> float:
    """Examples one training row holds: 1 unpacked; packed, about row length / mean example length
    (TRL's best-fit-decreasing packing fills rows almost fully when examples are short)."""
    if not packing or not mean_tokens:
        return 1.0
    return max(1.0, row_tokens / mean_tokens)


def rows_per_step(examples: int, per_row: float) -> int:
    """Rows per optimizer step (micro-batch x accumulation, over all GPUs) for `examples` a step:
    the guide's batch counts examples, the Trainer counts rows. Rounded up, so a step holds at
    least the examples asked (ftwiz picks the low end of the guide's range)."""
    return max(1, math.ceil(examples / per_row - 1e-9))


@dataclass
class Fit:
    """A batch layout for the GPU and why; `fits` False means no layout fits."""

    micro_batch: int
    grad_accum: int
    grad_ckpt: bool
    max_length: int
    optim: str
    estimate: MemoryEstimate
    fits: bool
    usable_bytes: int
    reasons: list[str] = field(default_factory=list)
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "micro_batch": self.micro_batch,
            "grad_accum": self.grad_accum,
            "effective_batch": self.micro_batch * self.grad_accum,
            "gradient_checkpointing": self.grad_ckpt,
            "max_length": self.max_length,
            "optim": self.optim,
            "fits": self.fits,
            "usable_gib": round(self.usable_bytes / GIB, 2),
            "reasons": list(self.reasons),
            "suggestion": self.suggestion,
        }


def usable_bytes(free_bytes: int) -> int:
    """Free memory minus the safety margin (10% + 1 GiB)."""
    return max(0, int(free_bytes * (1 - MARGIN_FRACTION) - MARGIN_BYTES))


def relative_step_time(method: str, micro_batch: int, seq_len: int, grad_ckpt: bool) -> float:
    """Time per token relative to an ideal large batch without checkpointing (lower is faster)."""
    recompute = flops_per_token(1.0, method, grad_ckpt) / flops_per_token(1.0, method, False)
    return recompute * (1 + SMALL_BATCH_TOKENS / (micro_batch * seq_len))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def fit_to_gpu(
    info: Any,
    method: str,
    free_bytes: int,
    effective_batch: int,
    seq_lens: Iterable[int],
    rank: int = 16,
    targets: Iterable[Any] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    *,
    micro_batch: int | None = None,
    grad_ckpt: bool | None = None,
    optim: str | None = None,
    qlora_upcast: bool = False,
    dtype: str = "bf16",
    lora_dropout: float = 0.0,
    liger: bool = False,
    shards: int = 1,
    fused_head: bool | None = None,
    batch_unit: str = "example(s)",
    recompute_mlp: bool = False,
) -> Fit:
    """The fastest layout whose estimate fits `free_bytes` with the margin.

    `seq_lens` are the max_length candidates, longest (no truncation) first; the first one for
    which some layout fits wins. Micro-batches divide the effective batch so accumulation keeps
    it; `micro_batch` / `grad_ckpt` given by the user are kept as they are. `liger` / `fused_head`:
    estimate_memory's (Liger's RMSNorm; no full logits), as is `recompute_mlp`. `shards`: FSDP over that many GPUs
    (estimate_memory's `shards`; `free_bytes` is then one GPU's). `batch_unit`: what
    `effective_batch` counts, as the reasons say it ("packed row(s)" when examples share rows).
    """
    if effective_batch <= 0:
        raise UserError(f"--batch: {effective_batch}: must be a whole number above 0")
    seqs = sorted({int(s) for s in seq_lens}, reverse=True)
    if not seqs or seqs[-1] <= 0:
        raise UserError(f"--seq: {seqs}: must be a whole number above 0")
    usable = usable_bytes(free_bytes)
    micro_batches = [micro_batch] if micro_batch else _divisors(effective_batch)
    ckpts = [grad_ckpt] if grad_ckpt is not None else [False, True]
    targets = list(targets)
    # Full fine-tuning keeps 8 bytes of AdamW state per weight: 8-bit AdamW (2 bytes) is the
    # next thing to try when it does not fit. LoRA's states are too small to matter.
    optims = [optim] if optim else ([default_optim(method), "adamw_8bit"] if method == "full" else [default_optim(method)])

    def estimate(mb: int, seq: int, ckpt: bool, opt: str = optims[-1]) -> MemoryEstimate:
        return estimate_memory(
            info, method, mb, seq, rank, targets, ckpt, opt, qlora_upcast, dtype,
            lora_dropout=lora_dropout, grad_accum=max(1, -(-effective_batch // mb)), liger=liger, shards=shards,
            fused_head=fused_head, recompute_mlp=recompute_mlp,
        )

    margin = f"{usable / GIB:.1f} GiB usable of {free_bytes / GIB:.1f} GiB free (margin 10% + 1 GiB)"
    for opt in optims:
        for seq in seqs:
            options = sorted(
                ((relative_step_time(method, mb, seq, ckpt), -mb, ckpt) for mb in micro_batches for ckpt in ckpts),
            )
            for _, neg_mb, ckpt in options:
                mb = -neg_mb
                est = estimate(mb, seq, ckpt, opt)
                if est.required_bytes <= usable:
                    accum = max(1, -(-effective_batch // mb))
                    reasons = [f"needs {est.required_bytes / GIB:.1f} GiB; {margin}"]
                    reasons.append(
                        "gradient checkpointing on: the layout without it does not fit"
                        if ckpt and grad_ckpt is None
                        else "gradient checkpointing off: fits without it, ~1.5x faster" if not ckpt and grad_ckpt is None
                        else f"gradient checkpointing {'on' if ckpt else 'off'}: as asked"
                    )
                    reasons.append(
                        f"micro-batch {mb} x accumulation {accum} = {mb * accum} {batch_unit} a step"
                        + ("" if micro_batch else ": the fastest layout that fits")
                    )
                    if seq != seqs[0]:
                        reasons.append(f"max_length {seq}: {seqs[0]} does not fit; longer examples are truncated")
                    if opt != optims[0]:
                        reasons.append(f"optimizer {opt}: 2-byte states, since {optims[0]}'s 8 bytes per weight do not fit")
                    return Fit(mb, accum, ckpt, seq, opt, est, True, usable, reasons)

    # Nothing fits: report the smallest layout and what would fit.
    mb, ckpt, seq = min(micro_batches), (True if grad_ckpt is None else grad_ckpt), seqs[-1]
    est = estimate(mb, seq, ckpt)
    shorter = seq // 2
    suggestion = None
    if micro_batch and micro_batch > 1:
        smaller = micro_batch // 2
        while smaller >= 1 and suggestion is None:
            if estimate(smaller, seq, ckpt).required_bytes <= usable:
                suggestion = f"fits with micro-batch {smaller} (a smaller batch)"
            smaller //= 2
    while shorter >= SHORTEST_SEQ and suggestion is None:
        if estimate(mb, shorter, ckpt).required_bytes <= usable:
            suggestion = f"fits with max_length {shorter} (longer examples truncated)"
            break
        shorter //= 2
    if suggestion is None:
        instead = {"full": "LoRA or QLoRA", "lora": "QLoRA"}.get(method)
        suggestion = "does not fit even at 128 tokens: use " + (
            f"{instead} or a smaller model" if instead else "a smaller model or a GPU with more memory"
        )
    reasons = [f"needs {est.required_bytes / GIB:.1f} GiB at micro-batch {mb}, {seq} tokens; {margin}"]
    return Fit(mb, max(1, -(-effective_batch // mb)), ckpt, seq, optims[-1], est, False, usable, reasons, suggestion)
