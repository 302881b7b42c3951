"""One arm of the speed comparison in one fresh process (see speed.py for the arms).

The model is loaded and wrapped by ftwiz's own engine code (ftwiz.core.engine.process.load_model
and wrap_model, from a RunConfig), then trained by a plain hand loop that does what the
transformers Trainer does per optimizer step (autocast, accumulation with the loss normalised
over the step's tokens, grad clipping at 1.0, optimizer and cosine schedule), so that only the
batching differs between arms:

* "padded": micro-batches of `micro_batch` sequences padded to the longest (the Trainer's
  DataCollator with padding=longest), `accum` of them per optimizer step;
* "padding_free": the step's sequences packed into rows of at most `token_budget` tokens with
  position_ids restarting at each sequence (transformers turns that into a block-diagonal mask,
  so no sequence sees another) and no pad token at all.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NvmlPeak, emit_result, memory_readings, sync  # noqa: E402


def lengths_for(n: int, seed: int, median: int = 200, sigma: float = 0.9, cap: int = 2048) -> list[int]:
    """Instruction-tuning-like lengths: log-normal around the median, a tail to `cap`."""
    import random

    rng = random.Random(seed)
    return [max(16, min(cap, int(rng.lognormvariate(math.log(median), sigma)))) for _ in range(n)]


def sequences(n: int, vocab: int, seed: int, cap: int) -> list[list[int]]:
    import random

    rng = random.Random(seed + 1)
    return [[rng.randrange(3, vocab) for _ in range(length)] for length in lengths_for(n, seed, cap=cap)]


def padded_batches(seqs, micro_batch, pad_id=0):
    """Yield (input_ids, attention_mask, labels, real_tokens) padded to the longest of each micro-batch."""
    import torch

    for i in range(0, len(seqs), micro_batch):
        chunk = seqs[i:i + micro_batch]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, :len(s)] = torch.tensor(s)
            mask[row, :len(s)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels}, sum(len(s) for s in chunk)


def packed_rows(seqs, token_budget):
    """Yield (input_ids, position_ids, labels, real_tokens): sequences packed, no padding."""
    import torch

    rows: list[list[list[int]]] = [[]]
    for s in seqs:
        if rows[-1] and sum(map(len, rows[-1])) + len(s) > token_budget:
            rows.append([])
        rows[-1].append(s)
    for row in rows:
        ids = torch.tensor([t for s in row for t in s]).unsqueeze(0)
        pos = torch.tensor([p for s in row for p in range(len(s))]).unsqueeze(0)
        labels = ids.clone()
        starts = torch.tensor([0] + [sum(map(len, row[:k])) for k in range(1, len(row))])
        labels[0, starts] = -100  # no prediction across a sequence boundary
        yield {"input_ids": ids, "position_ids": pos, "labels": labels}, ids.shape[1]


def build(arm: dict, device):
    import torch
    from ftwiz.core.config import config_from_dict
    from ftwiz.core.engine.process import load_model, wrap_model

    config = config_from_dict({
        "method": arm["method"],
        "model": {"name_or_path": arm["weights_dir"], "attn_implementation": "sdpa"},
        "data": {"path": "demo"},
        "lora": {"r": arm["rank"], "lora_alpha": 2 * arm["rank"], "lora_dropout": arm["lora_dropout"],
                 "target_modules": arm["targets"]},
        "quantization": {"upcast": arm.get("qlora_upcast", False)},
        "training": {"gradient_checkpointing": arm["grad_ckpt"], "optim": arm["optim"], "bf16": True,
                     "use_liger_kernel": arm["liger"], "packing": arm["batching"] == "padding_free"},
    })
    precision = "bf16" if device.type == "cuda" else "fp32"
    torch.manual_seed(arm["seed"])
    model = load_model(config, precision, device.type == "cuda")
    if device.type != "cuda" or arm["method"] != "qlora":
        model.to(device)
    if arm["liger"]:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model)
    torch.manual_seed(arm["seed"])  # the same LoRA initialisation in every arm
    model = wrap_model(model, config)
    if arm["grad_ckpt"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    return model, config


def main(arm: dict) -> dict:
    import torch
    from transformers import get_cosine_schedule_with_warmup

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from matrix_worker import optimizer_for

    device = torch.device(arm.get("device", "cuda"))
    t0 = time.time()
    model, _ = build(arm, device)
    sync(device)
    build_s = time.time() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer_for(arm, params)
    opt.param_groups[0]["lr"] = 2e-4
    steps = arm["warmup_steps"] + arm["timed_steps"]
    sched = get_cosine_schedule_with_warmup(opt, 0, steps)
    per_step = arm["effective_batch"]
    seqs = sequences(per_step * steps, model.config.vocab_size, arm["data_seed"], arm["max_length"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, real_tokens, padded_tokens, timed_real, timed_padded = [], 0, 0, 0, 0
    t_timed = None
    with NvmlPeak(device.index or 0) as nvml:
        for step in range(steps):
            if step == arm["warmup_steps"]:
                sync(device)
                t_timed = time.perf_counter()
            chunk = seqs[step * per_step:(step + 1) * per_step]
            step_tokens = sum(len(s) - 1 for s in chunk)  # predicted tokens in this step
            batches = (padded_batches(chunk, arm["micro_batch"]) if arm["batching"] == "padded"
                       else packed_rows(chunk, arm["token_budget"]))
            step_loss = 0.0
            for batch, real in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                n_pred = int((batch["labels"][:, 1:] != -100).sum())
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = model(**batch).loss
                scaled = loss * (n_pred / step_tokens)  # token mean over the whole optimizer step
                scaled.backward()
                step_loss += scaled.detach()
                real_tokens += real
                padded_tokens += batch["input_ids"].numel()
                if t_timed is not None:
                    timed_real += real
                    timed_padded += batch["input_ids"].numel()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(step_loss))
        sync(device)
        elapsed = time.perf_counter() - t_timed
    n_params = arm["flops_params"]
    tok_s = timed_real / elapsed
    return dict(
        arm, status="ok", build_s=round(build_s, 1), timed_s=round(elapsed, 2), real_tokens_timed=timed_real,
        padded_tokens_timed=timed_padded, padding_share=round(1 - timed_real / timed_padded, 3),
        real_tokens_per_s=round(tok_s, 1), tokens_incl_padding_per_s=round(timed_padded / elapsed, 1),
        mfu_pct=round(100 * tok_s * 4 * n_params / 790e12, 2), losses=[round(x, 4) for x in losses],
        trainable_params=sum(p.numel() for p in params), **memory_readings(device, nvml),
    )


if __name__ == "__main__":
    emit_result(main(json.loads(sys.argv[1])))
