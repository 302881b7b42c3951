"""The pre-flight probe: measure the planned batch on the user's own longest batch, then adjust.

Estimates can be wrong (a model the estimator has not seen, a GPU shared with another job), and
an out-of-memory error an hour into a run is the expensive way to find out. So before training,
the run process runs a few forward+backward passes on the longest examples of the training set
at the planned micro-batch, on the model it is about to train:

- no optimizer step and the gradients are dropped after each pass, so the weights, the
  optimizer and the data order are exactly what training would have seen without the probe
  (the Trainer reseeds every RNG when it is built, after the probe);
- peak memory is torch's max_memory_allocated over the passes plus the optimizer states the
  probe did not allocate (computed from the trainable parameter count), against the GPU's free
  memory (what other processes leave, plus what this one holds) minus a margin;
- on an out-of-memory error or a peak over that budget it halves the micro-batch and doubles
  the accumulation (same effective batch) down to 1, then turns gradient checkpointing on and
  starts again from the planned micro-batch;
- tokens/s are real (non-padding) tokens of the longest batch per second, after one warm-up
  pass: on the longest batch this is a conservative figure, and it turns the dataset's token
  count into the run's time and cost, which replace the plan's estimates.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from ftwiz.core.config import RunConfig
from ftwiz.core.engine import faults

PASSES = 3
"""Forward+backward passes per attempt; the first is a warm-up and is not timed."""
MARGIN_FRACTION, MARGIN_MIN_BYTES = 0.05, 1 << 30
"""Kept free on the GPU: fragmentation, the allocator's reserve, NCCL and CUDA graphs."""
ADAM_BYTES_PER_PARAM = 8.0  # two fp32 moments
ADAM_8BIT_BYTES_PER_PARAM = 2 * (1 + 4 / 256)  # two uint8 moments + one fp32 scale per 256 values


def optimizer_bytes(model: Any, optim: str) -> int:
    """Optimizer states that training allocates at its first step and the probe never does."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    per_param = ADAM_8BIT_BYTES_PER_PARAM if "8bit" in optim else ADAM_BYTES_PER_PARAM
    return int(trainable * per_param)


def candidates(micro: int, accum: int, checkpointing: bool) -> list[tuple[int, int, bool]]:
    """(micro-batch, accumulation, checkpointing) to try, in order of speed."""
    out = []
    for ckpt in ([True] if checkpointing else [False, True]):
        m, a = micro, accum
        while True:
            out.append((m, a, ckpt))
            if m <= 1:
                break
            m, a = m // 2, a * 2
    return out


def longest_rows(train_ds: Any, count: int, config: RunConfig) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of the `count` longest training examples; packed rows are full length."""
    ids_column, labels_column = train_ds["input_ids"], train_ds["labels"]
    order = sorted(range(len(ids_column)), key=lambda i: len(ids_column[i]), reverse=True)
    order = (order * count)[:count] if order else []
    rows = []
    for index in order:
        ids, labels = list(ids_column[index]), list(labels_column[index])
        if config.training.packing:
            reps = -(-config.training.max_length // max(1, len(ids)))
            ids, labels = (ids * reps)[: config.training.max_length], (labels * reps)[: config.training.max_length]
        rows.append((ids, labels))
    return rows


def make_batch(rows: list[tuple[list[int], list[int]]], pad_id: int, device: Any) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(ids)] = torch.tensor(row_labels)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _passes(model: Any, batch: dict[str, Any], precision: str, cuda: bool) -> float:
    """Seconds of the timed passes (all but the first)."""
    import contextlib

    import torch

    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
        if cuda and precision in ("bf16", "fp16")
        else contextlib.nullcontext()
    )
    timed = 0.0
    for index in range(PASSES):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        if index:
            timed += time.perf_counter() - start
        del loss
        model.zero_grad(set_to_none=True)
    return timed


def _cleanup(model: Any, cuda: bool) -> None:
    import torch

    model.zero_grad(set_to_none=True)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def run_probe(model: Any, config: RunConfig, train_ds: Any, pad_id: int, micro: int, accum: int, precision: str, cuda: bool) -> dict[str, Any]:
    """Probe, adjust, and return the `probe` event's fields (see docs/events.md)."""
    import torch

    t0 = time.time()
    device = next(model.parameters()).device
    states = optimizer_bytes(model, config.training.optim)
    budget = None
    if cuda:
        free, total = torch.cuda.mem_get_info(device)
        # What other processes leave us: free memory plus what this process already holds.
        budget = free + torch.cuda.memory_reserved(device) - max(MARGIN_MIN_BYTES, int(MARGIN_FRACTION * total))
    planned_ckpt = config.training.gradient_checkpointing
    ckpt_on = planned_ckpt
    attempts: list[dict[str, Any]] = []
    chosen: dict[str, Any] | None = None
    for number, (m, a, ckpt) in enumerate(candidates(micro, accum, planned_ckpt)):
        if ckpt and not ckpt_on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            ckpt_on = True
        rows = longest_rows(train_ds, m, config)
        batch = make_batch(rows, pad_id, device)
        real_tokens = int(batch["attention_mask"].sum())
        attempt: dict[str, Any] = {"micro_batch": m, "grad_accum": a, "gradient_checkpointing": ckpt}
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        try:
            faults.in_probe(number)
            seconds = _passes(model, batch, precision, cuda)
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not faults.is_oom(exc):
                raise
            _cleanup(model, cuda)
            attempts.append({**attempt, "outcome": "out of memory", "message": str(exc).splitlines()[0][:200]})
            continue
        peak = torch.cuda.max_memory_allocated(device) if cuda else None
        predicted = None if peak is None else peak + states
        attempt.update(
            longest_tokens=max(len(ids) for ids, _ in rows),
            tokens_per_s=round(real_tokens * (PASSES - 1) / seconds, 1) if seconds > 0 else None,
            peak_gib=None if peak is None else round(peak / 2**30, 3),
            predicted_peak_gib=None if predicted is None else round(predicted / 2**30, 3),
        )
        if budget is not None and predicted > budget:
            attempts.append({**attempt, "outcome": "over budget"})
            _cleanup(model, cuda)
            continue
        attempts.append({**attempt, "outcome": "ok"})
        chosen = attempts[-1]
        break
    _cleanup(model, cuda)
    fits = chosen is not None
    if chosen is None:  # nothing fitted: train at the smallest setting; OOM recovery has the last word
        m, a, ckpt = candidates(micro, accum, planned_ckpt)[-1]
        chosen = {"micro_batch": m, "grad_accum": a, "gradient_checkpointing": ckpt, "tokens_per_s": None}
    changes = []
    if chosen["micro_batch"] != micro:
        why = "; ".join(f"micro-batch {x['micro_batch']}: {x['outcome']}" for x in attempts if x["outcome"] != "ok")
        changes.append(
            f"micro-batch {micro} -> {chosen['micro_batch']}, gradient accumulation {accum} -> {chosen['grad_accum']} "
            f"(same effective batch): {why}"
        )
    if chosen["gradient_checkpointing"] != planned_ckpt:
        changes.append("gradient checkpointing turned on: without it even micro-batch 1 did not fit")
    tokens = tokens_to_train(config, train_ds, chosen["micro_batch"] * chosen["grad_accum"])
    speed = chosen.get("tokens_per_s")
    seconds = tokens / speed if speed else None
    price = config.limits.price_per_hour
    return {
        "fits": fits,
        "micro_batch": chosen["micro_batch"],
        "grad_accum": chosen["grad_accum"],
        "gradient_checkpointing": chosen["gradient_checkpointing"],
        "changed": bool(changes),
        "changes": changes,
        "attempts": attempts,
        "tokens_per_s": speed,
        "peak_gib": chosen.get("peak_gib"),
        "optimizer_gib": round(states / 2**30, 3),
        "predicted_peak_gib": chosen.get("predicted_peak_gib"),
        "budget_gib": None if budget is None else round(budget / 2**30, 3),
        "tokens_to_train": tokens,
        "estimated_time_s": None if seconds is None else round(seconds, 1),
        "estimated_cost_usd": None if seconds is None or price is None else round(seconds / 3600 * price, 4),
        "duration_s": round(time.time() - t0, 2),
    }


def tokens_to_train(config: RunConfig, train_ds: Any, effective_batch: int) -> int:
    """Real tokens the whole run trains on: max_steps x effective batch, or epochs x the dataset."""
    lengths = [len(ids) for ids in train_ds["input_ids"]]
    if not lengths:
        return 0
    per_example = config.training.max_length if config.training.packing else sum(lengths) / len(lengths)
    if config.training.max_steps > 0:
        return int(config.training.max_steps * effective_batch * per_example)
    return int(config.training.num_train_epochs * sum(lengths))
