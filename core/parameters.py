"""LoRA parameter counts from layer shapes: the numbers peft's print_trainable_parameters shows.

A LoRA adapter on a linear layer of shape (in, out) adds A (rank x in) and B (out x rank), no
bias (peft's default bias="none"). peft counts "all params" as the base model's parameters
(tied embeddings once) plus the adapters, and trainable% against that sum.
"""

from __future__ import annotations

from typing import Iterable

from ftwiz.core.errors import UserError
from ftwiz.core.models import TARGET_PRESETS, ModelInfo, resolve_targets, targeted_groups

EXPLORE_RANKS = (8, 16, 32, 64)
# peft's get_peft_model(autocast_adapter_dtype=True, the default) keeps adapter weights in fp32
# even on a bf16 base, and save_pretrained writes them as they are: 4 bytes per parameter.
ADAPTER_SAVED_BYTES = 4


def adapter_bytes(trainable: int) -> int:
    """The saved adapter file's size: every trainable parameter in fp32 (ADAPTER_SAVED_BYTES)."""
    return trainable * ADAPTER_SAVED_BYTES


def adapter_text(n_bytes: int) -> str:
    """The adapter's size as `ftwiz params`, `ftwiz explore` and the Settings step all say it."""
    return f"{n_bytes / 1e6:,.1f} MB"


def check_rank(rank: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise UserError(f"--rank: {rank!r}: must be a whole number above 0 (typical: 8, 16, 32, 64)")
    return rank


def trainable_lora_params(info: ModelInfo, rank: int, targets: str | Iterable[str]) -> int:
    """Parameters LoRA adds (and trains) at this rank on these targets."""
    check_rank(rank)
    groups = targeted_groups(info, resolve_targets(info, targets))
    return sum(g.count * rank * (g.in_features + g.out_features) for g in groups)


def count_summary(info: ModelInfo, rank: int, targets: str | Iterable[str]) -> dict:
    """{"trainable", "total", "percent"} exactly as print_trainable_parameters reports them."""
    resolved = resolve_targets(info, targets)
    trainable = trainable_lora_params(info, rank, resolved)
    total = info.total_params + trainable
    return {
        "trainable": trainable,
        "total": total,
        "percent": 100 * trainable / total,
        "rank": rank,
        "targets": resolved,
        "base_params": info.total_params,
        "adapter_bytes": adapter_bytes(trainable),
    }


def explore_table(info: ModelInfo, ranks: Iterable[int] = EXPLORE_RANKS) -> list[dict]:
    """One row per (rank, preset): trainable count, percent and the saved adapter's size (from
    count_summary, as `ftwiz params` says it; the file is fp32, so there is no bf16 size to show)."""
    rows = []
    for rank in ranks:
        for preset in TARGET_PRESETS:
            summary = count_summary(info, rank, preset)
            rows.append({
                "rank": rank,
                "preset": preset,
                "targets": summary["targets"],
                "trainable": summary["trainable"],
                "total": summary["total"],
                "percent": summary["percent"],
                "adapter_bytes": summary["adapter_bytes"],
                "adapter_mb_fp32": summary["adapter_bytes"] / 1e6,
            })
    return rows
