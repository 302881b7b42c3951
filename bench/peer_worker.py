"""One arm of the peer comparison in one fresh process (see peer.py for the arms).

Every arm loads the same random-weight model from disk in bf16, puts LoRA on the same modules
with the same rank, and runs the same hand loop: bf16 autocast, full-length micro-batches of
random tokens with labels = inputs, clipping at 1.0, AdamW, one optimizer step per micro-batch.
Only the system that builds the model differs:

* "peft": transformers + peft as their docs show it (the reference);
* "ftwiz": the engine's own build_model (ftwiz.core.engine.process): Liger kernels and
  regional compilation as a run applies them (ftwiz.core.engine.speed);
* "unsloth": Unsloth's FastLanguageModel (its own kernels and its own checkpointing).
  Unsloth patches transformers on import, so it only ever runs in a process of its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NvmlPeak, emit_result, memory_readings, sync  # noqa: E402


def build_peft(arm: dict, device):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        arm["weights_dir"], dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
        attn_implementation="sdpa").to(device)
    model.config.use_cache = False
    torch.manual_seed(arm["seed"])
    model = get_peft_model(model, LoraConfig(r=arm["rank"], lora_alpha=2 * arm["rank"], lora_dropout=0.0,
                                             target_modules=arm["targets"], task_type="CAUSAL_LM"))
    if arm["grad_ckpt"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, {}


def build_ftwiz(arm: dict, device):
    """The engine's own build_model: base weights, Liger as the run applies it, LoRA, compiled layers."""
    import torch
    from ftwiz.core.config import config_from_dict
    from ftwiz.core.engine.process import build_model
    from ftwiz.core.engine.speed import repeated_layers

    config = config_from_dict({
        "method": "lora",
        "model": {"name_or_path": arm["weights_dir"], "attn_implementation": "sdpa"},
        "data": {"path": "demo"},
        "lora": {"r": arm["rank"], "lora_alpha": 2 * arm["rank"], "lora_dropout": 0.0, "target_modules": arm["targets"]},
        "training": {"gradient_checkpointing": arm["grad_ckpt"], "bf16": True, "use_liger_kernel": arm["liger"],
                     "regional_compile": arm["compile"]},
    })
    torch.manual_seed(arm["seed"])
    cuda = device.type == "cuda"
    model = build_model(config, "bf16" if cuda else "fp32", cuda)
    if arm["grad_ckpt"]:  # in a run, the Trainer turns it on
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    compiled = sum(getattr(layer, "_compiled_call_impl", None) is not None for layer in repeated_layers(model))
    return model, {"compiled_layers": compiled}


def build_unsloth(arm: dict, device):
    import torch
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        arm["weights_dir"], max_seq_length=arm["seq_len"], dtype=torch.bfloat16, load_in_4bit=False,
        local_files_only=True)
    model = FastLanguageModel.get_peft_model(
        model, r=arm["rank"], lora_alpha=2 * arm["rank"], lora_dropout=0.0, bias="none",
        target_modules=arm["targets"], use_gradient_checkpointing="unsloth" if arm["grad_ckpt"] else False,
        random_state=arm["seed"])
    FastLanguageModel.for_training(model)
    embedding = model.get_input_embeddings().weight.device
    return model, {"unsloth_embedding_device": str(embedding)}


BUILDERS = {"peft": build_peft, "ftwiz": build_ftwiz, "unsloth": build_unsloth}


def main(arm: dict) -> dict:
    import torch

    device = torch.device(arm.get("device", "cuda"))
    t0 = time.time()
    model, facts = BUILDERS[arm["system"]](arm, device)
    model.train()
    sync(device)
    build_s = time.time() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(arm["data_seed"])
    vocab = model.config.vocab_size
    steps = arm["warmup_steps"] + arm["timed_steps"]
    batches = [torch.randint(3, min(vocab, 2000), (arm["micro_batch"], arm["seq_len"]), generator=generator)
               for _ in range(steps)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, t_timed, warm_s = [], None, None
    with NvmlPeak(device.index or 0) as nvml:
        for step, ids in enumerate(batches):
            if step == arm["warmup_steps"]:
                sync(device)
                t_timed = time.perf_counter()
                warm_s = round(time.time() - t0 - build_s, 1)
            ids = ids.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        sync(device)
        elapsed = time.perf_counter() - t_timed
    tokens = arm["timed_steps"] * arm["micro_batch"] * arm["seq_len"]
    tok_s = tokens / elapsed
    return dict(
        arm, **facts, status="ok", build_s=round(build_s, 1), warmup_s=warm_s, timed_s=round(elapsed, 2),
        tokens_per_s=round(tok_s, 1), mfu_pct=round(100 * tok_s * 4 * arm["flops_params"] / 790e12, 2),
        losses=[round(float(x), 4) for x in losses], trainable_params=sum(p.numel() for p in params),
        **memory_readings(device, nvml),
    )


if __name__ == "__main__":
    emit_result(main(json.loads(sys.argv[1])))
