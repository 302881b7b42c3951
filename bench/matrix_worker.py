"""One matrix configuration in one fresh process: build, train a few steps, measure, print RESULT.

    python bench/matrix_worker.py '{"model": "llama-3.1-8b", "method": "lora", ...}'

Full sequences of random tokens (every token real), labels = inputs, bf16 autocast, SDPA,
model.train() before timing (a from_pretrained model is in eval mode, where checkpointing does
nothing). Peak memory is read over the warm-up and timed steps, after the model is built.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NvmlPeak, emit_result, memory_readings, random_model, sync  # noqa: E402


def build(spec: dict, device):
    """The model as ftwiz's engine sets it up for the method: dtype, quantization, peft."""
    import torch

    method = spec["method"]
    if method == "qlora":
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        bnb = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            spec["weights_dir"], quantization_config=bnb, dtype=torch.bfloat16,
            device_map={"": device.index or 0} if device.type == "cuda" else {"": "cpu"},
            attn_implementation="sdpa",
        )
        model.config.use_cache = False
    else:
        # Full fine-tuning as the Trainer runs it with bf16=True: fp32 weights under bf16 autocast.
        model = random_model(spec["model"], "float32" if method == "full" else "bfloat16", str(device))
    if spec.get("liger"):
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model)
    if method == "full":
        model.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        if method == "qlora":
            if spec.get("qlora_upcast"):
                from peft import prepare_model_for_kbit_training

                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec["grad_ckpt"])
            else:
                model.requires_grad_(False)
        lora = LoraConfig(
            r=spec["rank"], lora_alpha=2 * spec["rank"], lora_dropout=spec.get("lora_dropout", 0.05),
            target_modules=spec["targets"], task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    if spec["grad_ckpt"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method != "full":
            model.enable_input_require_grads()
    model.train()
    return model


def optimizer_for(spec: dict, params):
    import torch

    name = spec.get("optim", "adamw_torch")
    if name == "adamw_torch":
        return torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)
    import bitsandbytes as bnb

    cls = {"paged_adamw_8bit": bnb.optim.PagedAdamW8bit, "adamw_8bit": bnb.optim.AdamW8bit}[name]
    return cls(params, lr=2e-4, weight_decay=0.01)


def main(spec: dict) -> dict:
    import torch

    device = torch.device(spec.get("device", "cuda"))
    torch.manual_seed(spec.get("seed", 0))
    t0 = time.time()
    model = build(spec, device)
    sync(device)
    build_s = time.time() - t0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    opt = optimizer_for(spec, [p for p in model.parameters() if p.requires_grad])
    weights_gib = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    vocab = model.config.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(1)
    mb, seq = spec["micro_batch"], spec["seq_len"]
    losses: list[float] = []
    result = dict(spec, trainable_params=trainable, total_params_loaded=total, build_s=round(build_s, 1),
                  weights_allocated_gib=round(weights_gib, 3) if weights_gib is not None else None)

    def step() -> None:
        ids = torch.randint(0, vocab, (mb, seq), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())

    try:
        with NvmlPeak(device.index or 0) as nvml:
            for _ in range(spec["warmup_steps"]):
                step()
            sync(device)
            t1 = time.perf_counter()
            for _ in range(spec["timed_steps"]):
                step()
            sync(device)
            elapsed = time.perf_counter() - t1
    except torch.OutOfMemoryError as exc:
        result.update(status="oom", error=str(exc).splitlines()[0][:300], **memory_readings(device))
        return result
    tokens = mb * seq * spec["timed_steps"]
    result.update(
        status="ok", step_s=round(elapsed / spec["timed_steps"], 4), tokens_per_s=round(tokens / elapsed, 1),
        losses=[round(x, 4) for x in losses], grad_ckpt_active=bool(getattr(model, "is_gradient_checkpointing", False)),
        **memory_readings(device, nvml),
    )
    return result


if __name__ == "__main__":
    emit_result(main(json.loads(sys.argv[1])))
