"""The disk a run takes: checkpoints kept, the result, a merged model on request, against free disk.

A checkpoint holds what training needs to resume: the trainable weights as the Trainer saves
them (LoRA adapters in fp32, peft's default; full fine-tuning's fp32 master weights) and the
optimizer's states (AdamW: two fp32 moments, 8 bytes per trainable weight; 8-bit AdamW: ~2).
The run keeps `save_total_limit` of the newest and, when it evaluates, the best one besides.
The base model's download lives in the Hugging Face cache, outside the run, and is listed
apart: it is not needed again once cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftwiz.core.memory import GIB, gib_text

WEIGHT_BYTES = 4  # adapters (peft autocast_adapter_dtype) and full fine-tuning's master weights: fp32
OPTIMIZER_BYTES = {"adamw_torch": 8, "adamw_torch_fused": 8}  # two fp32 moments
OPTIMIZER_BYTES_8BIT = 2  # bitsandbytes' 8-bit AdamW: two uint8 moments plus block scales
MERGED_BYTES = 2  # a merged model saved in bf16
DOWNLOAD_BYTES = 2  # Hub checkpoints of the catalog's models are bf16 safetensors
HEADROOM = 0.9  # plan on 90% of the free disk: logs, the tokenizer, samples and other writers


@dataclass
class DiskPlan:
    """What the run writes (item, bytes), its total, the free disk and what was done about it."""

    items: list[tuple[str, int]]
    total_bytes: int
    save_total_limit: int
    free_bytes: int | None = None
    download_bytes: int = 0
    fits: bool | None = None  # None: free disk unknown (another machine)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [{"what": what, "gib": round(size / GIB, 2)} for what, size in self.items],
            "total_gib": round(self.total_bytes / GIB, 2),
            "free_gib": None if self.free_bytes is None else round(self.free_bytes / GIB, 2),
            "base_model_download_gib": round(self.download_bytes / GIB, 2),
            "save_total_limit": self.save_total_limit,
            "fits": self.fits,
            "reasons": list(self.reasons),
        }


def checkpoint_bytes(method: str, trainable: int, optim: str) -> int:
    """One checkpoint: the trainable weights plus the optimizer's states."""
    state = OPTIMIZER_BYTES.get(optim, OPTIMIZER_BYTES_8BIT)
    return trainable * (WEIGHT_BYTES + state)


def plan_disk(
    method: str,
    total_params: int,
    trainable: int,
    optim: str,
    *,
    save_total_limit: int = 2,
    evaluates: bool = True,
    merge: bool = False,
    free_bytes: int | None = None,
) -> DiskPlan:
    """The disk for this run; with `free_bytes`, fewer checkpoints kept (down to the best and the
    newest) when the planned number does not fit, and `fits` False (with the reason) when even that
    does not."""
    one = checkpoint_bytes(method, trainable, optim)
    result = (total_params if method == "full" else trainable) * WEIGHT_BYTES
    merged = total_params * MERGED_BYTES if merge and method != "full" else 0

    def build(limit: int) -> DiskPlan:
        kept = limit + (1 if evaluates else 0)
        items = [(f"{kept} checkpoint{'s' if kept > 1 else ''} of {gib_text(one)}", kept * one),
                 ("model" if method == "full" else "adapter", result)]
        if merged:
            items.append(("merged model", merged))
        total = sum(size for _, size in items)
        why = (f"{limit} newest" + (" + the best by evaluation loss" if evaluates else "")
               + f" kept (training.save_total_limit {limit})")
        return DiskPlan(items, total, limit, free_bytes, total_params * DOWNLOAD_BYTES, reasons=[why])

    plan = build(save_total_limit)
    if free_bytes is None:
        return plan
    usable = int(free_bytes * HEADROOM)
    if plan.total_bytes <= usable:
        plan.fits = True
        return plan
    smaller = build(1)
    if save_total_limit > 1 and smaller.total_bytes <= usable:
        smaller.fits = True
        smaller.reasons.append(f"save_total_limit 1: {save_total_limit} would need {gib_text(plan.total_bytes)}, "
                               f"over 90% of the {gib_text(free_bytes)} free")
        return smaller
    plan.fits = False
    plan.reasons.append(f"needs {gib_text(plan.total_bytes)}, over 90% of the {gib_text(free_bytes)} free disk: "
                        "free some space, or set output.merge false / a smaller model")
    return plan
