"""The pre-flight probe: run the Trainer's own step on the longest batches, then adjust.

Estimates can be wrong (a model the estimator has not seen, a GPU shared with another job), and
an out-of-memory error an hour into a run is the expensive way to find out. So before training,
the run process builds the Trainer it is about to train with and runs its own loss
(`trainer.compute_loss`: TRL's fused LM head, the real collator's packed rows with their
`cu_seq_lens`, the attention implementation and compiled layers of the run) forward and
backward on the longest micro-batches of the training set:

- no optimizer step, gradients dropped after each pass, and the RNG states and the Trainer's
  token and metric counters put back afterwards, so weights, optimizer, data order and dropout
  masks are exactly what training would have seen without the probe (tests/test_probe.py);
- the compiled layers are compiled here, in the warm-up pass, so the first training step does
  not pay for it again;
- peak memory is torch's max_memory_allocated over the passes plus the optimizer states the
  probe did not allocate (computed from the trainable parameter count), against the GPU's free
  memory (what other processes leave, plus what this one holds) minus a margin;
- on an out-of-memory error or a peak over that budget it halves the micro-batch and doubles
  the accumulation (same effective batch) down to 1, then turns gradient checkpointing on and
  starts again from the planned micro-batch;
- tokens/s are the real tokens of the longest batch per second, after one warm-up pass; they
  turn the dataset's token count into the run's time and cost, which replace the plan's.
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


def row_lengths(dataset: Any) -> list[int]:
    """Tokens in each row of the Trainer's own dataset (a packed row holds several examples'):
    read once per probe, since reading a column materialises it."""
    return [len(ids) for ids in dataset["input_ids"]]


def longest_first(lengths: list[int]) -> list[int]:
    """Row indices, longest row first."""
    return sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)


def longest_rows(order: list[int], count: int) -> list[int]:
    """The `count` longest rows (repeated when the dataset has fewer)."""
    return (order * count)[:count]


def longest_batch(trainer: Any, rows: list[int]) -> dict[str, Any]:
    """These rows of the Trainer's own (packed) dataset, through its own collator."""
    dataset = trainer.train_dataset
    return trainer.data_collator([dataset[i] for i in rows])


def example_lengths(dataset: Any, lengths: list[int], rows: list[int] | None = None) -> list[int]:
    """The examples' own lengths in these rows (all rows when None): a packed row holds several
    (TRL's packing records them as seq_lengths); an unpacked row is one example (`lengths`,
    row_lengths of the same dataset)."""
    packed = "seq_lengths" in (dataset.column_names or [])
    column = dataset["seq_lengths"] if packed else lengths
    chosen = column if rows is None else [column[i] for i in rows]
    return [int(n) for row in chosen for n in (row if packed else [row])]


def step_cost(lengths: list[int], linear_flops_per_token: float, attention_flops_per_pair: float) -> float:
    """FLOPs of training on examples of these lengths: the weights' work grows with the tokens,
    causal attention's with each example's length squared (half of L x L pairs)."""
    return sum(linear_flops_per_token * n + attention_flops_per_pair * n * n / 2 for n in lengths)


def flop_rates(model: Any, method: str, checkpointing: bool) -> tuple[float, float]:
    """(FLOPs per token of the weights, FLOPs per attended pair), forward and backward.

    Weights: 2N forward, 2N for the input gradients, 2N more for the weight gradients of full
    fine-tuning, 2N more when checkpointing recomputes the forward. Attention: QK^T and AV,
    2 multiply-adds of the query width per pair and layer forward; FlashAttention's backward
    recomputes the scores, about 2.5x the forward (3.5x in all, +1 with checkpointing)."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    head_dim = int(getattr(text, "head_dim", 0) or (getattr(text, "hidden_size", 0) or 0) // max(heads, 1))
    counter = getattr(model, "get_nb_trainable_parameters", None)
    params = counter()[1] if counter else sum(p.numel() for p in model.parameters())
    per_token = (6 if method == "full" else 4) * params + (2 * params if checkpointing else 0)
    per_pair = 4 * heads * head_dim * layers * (4.5 if checkpointing else 3.5)
    return float(per_token), float(per_pair)


def real_tokens(batch: dict[str, Any]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


class _Untouched:
    """Puts back what a probe pass changes besides memory: RNG states, TRL's token and metric counters."""

    def __init__(self, trainer: Any):
        self.trainer = trainer

    def __enter__(self) -> "_Untouched":
        import copy
        import random

        import numpy as np
        import torch

        self.rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
                    torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        self.tokens = getattr(self.trainer, "_total_train_tokens", None)
        self.metrics = copy.deepcopy(getattr(self.trainer, "_metrics", None))
        return self

    def __exit__(self, *exc: Any) -> None:
        import random

        import numpy as np
        import torch

        py, npy, cpu, cuda = self.rng
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if self.tokens is not None:
            self.trainer._total_train_tokens = self.tokens
        if self.metrics is not None:
            self.trainer._metrics = self.metrics


def _passes(trainer: Any, model: Any, batch: dict[str, Any], precision: str, cuda: bool) -> float:
    """Seconds of the timed passes (all but the first) of the Trainer's own loss, forward and backward."""
    import contextlib

    import torch

    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
        if cuda and precision in ("bf16", "fp16")
        else contextlib.nullcontext()
    )
    inputs = trainer._prepare_inputs(batch)
    timed = 0.0
    for index in range(PASSES):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast, trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(model, inputs)
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


def run_probe(trainer: Any, model: Any, config: RunConfig, micro: int, accum: int, precision: str,
              cuda: bool) -> dict[str, Any]:
    """Probe, adjust, and return the `probe` event's fields (see docs/events.md)."""
    import torch

    t0 = time.time()
    device = next(model.parameters()).device
    states = optimizer_bytes(model, config.training.optim)
    budget = None
    if cuda:
        free, _ = torch.cuda.mem_get_info(device)
        # What other processes leave us: free memory plus what this process already holds; the
        # margin is a share of that, not of the card's total (a GPU shared with another job, or a
        # simulated smaller card, would otherwise lose 5% of memory it does not have).
        available = free + torch.cuda.memory_reserved(device)
        budget = available - max(MARGIN_MIN_BYTES, int(MARGIN_FRACTION * available))
    planned_ckpt = config.training.gradient_checkpointing
    # The Trainer turns checkpointing on inside train(), after the probe: the probe turns it on itself.
    ckpt_on = False
    attempts: list[dict[str, Any]] = []
    chosen: dict[str, Any] | None = None
    dataset = trainer.train_dataset
    lengths = row_lengths(dataset)
    order = longest_first(lengths)
    for number, (m, a, ckpt) in enumerate(candidates(micro, accum, planned_ckpt)):
        if ckpt and not ckpt_on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            ckpt_on = True
        batch = longest_batch(trainer, longest_rows(order, m))
        attempt: dict[str, Any] = {"micro_batch": m, "grad_accum": a, "gradient_checkpointing": ckpt}
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        try:
            faults.in_probe(number)
            with _Untouched(trainer):
                seconds = _passes(trainer, model, batch, precision, cuda)
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not faults.is_oom(exc):
                raise
            _cleanup(model, cuda)
            attempts.append({**attempt, "outcome": "out of memory", "message": str(exc).splitlines()[0][:200]})
            continue
        peak = torch.cuda.max_memory_allocated(device) if cuda else None
        predicted = None if peak is None else peak + states
        attempt.update(
            longest_tokens=int(batch["input_ids"].shape[-1]),
            tokens_per_s=round(real_tokens(batch) * (PASSES - 1) / seconds, 1) if seconds > 0 else None,
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
    tokens = tokens_to_train(config, lengths, chosen["micro_batch"] * chosen["grad_accum"])
    speed = chosen.get("tokens_per_s")
    seconds = tokens / speed if speed else None
    if seconds is not None:
        # The probe timed the longest rows, where attention's share of the work is largest (one
        # 11,137-token chat among ~1,300-token ones: 25% slower per token than the run's mean,
        # bench/results/real-chat-h200.json). Time scales by FLOPs, not tokens.
        rates = flop_rates(model, config.method, chosen["gradient_checkpointing"])
        timed = example_lengths(dataset, lengths, longest_rows(order, chosen["micro_batch"]))
        every = example_lengths(dataset, lengths)
        per_token_probe = step_cost(timed, *rates) / max(1, sum(timed))
        if per_token_probe > 0:
            seconds *= step_cost(every, *rates) / max(1, sum(every)) / per_token_probe
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


def tokens_to_train(config: RunConfig, lengths: list[int], effective_batch: int) -> int:
    """Real tokens the whole run trains on: max_steps x effective batch x mean row, or epochs x the dataset.

    `lengths`: row_lengths of the Trainer's dataset (with packing, each row is several examples' real tokens)."""
    if not lengths:
        return 0
    if config.training.max_steps > 0:
        return int(config.training.max_steps * effective_batch * sum(lengths) / len(lengths))
    return int(config.training.num_train_epochs * sum(lengths))
