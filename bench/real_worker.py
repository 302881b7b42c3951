"""One arm of the real-data benchmark that is not ftwiz: the guide's recipe, or Unsloth.

    python bench/real_worker.py --arm guide|unsloth_matched|unsloth_notebook --model DIR --data FILE
        [--plan plan.json] [--epochs 1]

Each arm runs in its own process (Unsloth patches transformers when imported). It prints one
`BENCH_RESULT {...}` line: the Trainer's train_runtime, per-step times and real (non-padding)
token counts, losses, torch's peak allocated memory. Evaluation is off in every arm.

- guide: the guide's code as a user copies it: BitsAndBytesConfig (NF4, double quant, bf16
  compute), LoraConfig r16/a32/d0.05 on q,k,v,o, its TrainingArguments on the transformers
  Trainer (batch 4 x accumulation 4, paged_adamw_8bit, cosine, bf16, weight decay 0.01,
  logging 10, save every 100), chat rows rendered with the tokenizer's template, truncated at
  2,048 tokens, padded to the longest in each batch. One change the guide needs on
  transformers 5: `warmup_ratio=0.03` is gone, `warmup_steps=0.03` means the same.
- unsloth_matched: Unsloth's FastLanguageModel + its SFTTrainer with ftwiz's plan (method,
  rank, alpha, targets, micro-batch, accumulation, max length, packing, checkpointing, lr).
- unsloth_notebook: Unsloth's Llama-3.1 notebook defaults: 4-bit, r16/a16/d0 on all seven
  projections, its gradient checkpointing ("unsloth"), 2 x 4, max length 2048, adamw_8bit,
  linear schedule, no packing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import emit_result  # noqa: E402

ROLE = {"human": "user", "gpt": "assistant", "system": "system"}
ALL_SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def messages_rows(path: str) -> list[list[dict[str, str]]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            turns = json.loads(line)["conversations"]
            rows.append([{"role": ROLE[t["from"]], "content": t["value"]} for t in turns])
    return rows


class StepClock:
    """A TrainerCallback factory: wall time at the end of each optimizer step, tokens per step."""

    def __init__(self):
        self.ends: list[float] = []
        self.tokens: list[int] = []
        self.losses: list[float] = []
        self._pending = 0

    def count(self, n: int) -> None:
        self._pending += int(n)

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                import torch

                torch.cuda.synchronize()
                clock.ends.append(time.perf_counter())
                clock.tokens.append(clock._pending)
                clock._pending = 0

            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    clock.losses.append(float(logs["loss"]))

        return _CB()


def count_tokens(model, clock: StepClock):
    """A forward pre-hook counting real tokens of every micro-batch (attention mask, or all of a packed row)."""

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids")
        if mask is not None:
            clock.count(int(mask.sum()))
        elif ids is not None:
            clock.count(ids.numel())
        return None

    return model.register_forward_pre_hook(hook, with_kwargs=True)


def summary(clock: StepClock, train_runtime: float, config: dict) -> dict:
    import torch

    steady_tokens = sum(clock.tokens[1:])
    steady_s = clock.ends[-1] - clock.ends[0] if len(clock.ends) > 1 else None
    return {
        "config": config, "train_runtime_s": round(train_runtime, 2), "steps": len(clock.ends),
        "steady_tokens_per_s": round(steady_tokens / steady_s, 1) if steady_s else None,
        "tokens_trained": sum(clock.tokens), "step_times_s": [round(b - a, 3) for a, b in zip(clock.ends, clock.ends[1:])],
        "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "losses": clock.losses,
    }


def guide(args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig,
                              DataCollatorForLanguageModeling, Trainer, TrainingArguments)

    bnb_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                    bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=bnb_config, device_map="auto")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    lora_config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=16, lora_alpha=32, lora_dropout=0.05,
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, lora_config)
    rows = [tokenizer.apply_chat_template(m, tokenize=False) for m in messages_rows(args.data)]
    ds = Dataset.from_dict({"text": rows}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=2048, add_special_tokens=False),
        batched=True, remove_columns=["text"])
    training_args = TrainingArguments(
        output_dir="/tmp/guide-output", learning_rate=2e-4, lr_scheduler_type="cosine",
        per_device_train_batch_size=4, gradient_accumulation_steps=4, num_train_epochs=args.epochs, max_steps=-1,
        bf16=True, logging_steps=10, save_strategy="steps", save_steps=100,
        warmup_steps=0.03,  # the guide's warmup_ratio=0.03; transformers 5 removed warmup_ratio
        weight_decay=0.01, optim="paged_adamw_8bit", report_to="none", disable_tqdm=True,
    )
    clock = StepClock()
    trainer = Trainer(model=model, args=training_args, train_dataset=ds,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                      callbacks=[clock.callback()])
    count_tokens(model, clock)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    out = trainer.train()
    return summary(clock, out.metrics["train_runtime"], {
        "method": "qlora", "r": 16, "alpha": 32, "dropout": 0.05, "targets": "q,k,v,o", "micro_batch": 4,
        "grad_accum": 4, "max_length": 2048, "packing": False, "gradient_checkpointing": False,
        "optim": "paged_adamw_8bit", "trainer": "transformers.Trainer"})


def unsloth(args) -> dict:
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    from unsloth import FastLanguageModel  # noqa: I001  (first: it patches transformers)
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if args.arm == "unsloth_matched":
        plan = json.loads(Path(args.plan).read_text())
        targets = ALL_SEVEN if plan["target_modules"] == "all-linear" else plan["target_modules"]  # the same modules
        c = {"method": plan["method"], "r": plan["r"], "alpha": plan["lora_alpha"],
             "dropout": plan.get("lora_dropout", 0.0), "targets": targets, "micro_batch": plan["micro_batch"], "grad_accum": plan["grad_accum"],
             "max_length": plan["max_length"], "packing": plan["packing"],
             "gradient_checkpointing": plan["gradient_checkpointing"], "optim": plan["optim"],
             "lr": plan["learning_rate"], "scheduler": "cosine"}
    else:
        c = {"method": "qlora", "r": 16, "alpha": 16, "dropout": 0.0, "targets": ALL_SEVEN, "micro_batch": 2,
             "grad_accum": 4, "max_length": 2048, "packing": False, "gradient_checkpointing": "unsloth",
             "optim": "adamw_8bit", "lr": 2e-4, "scheduler": "linear"}
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=args.model, max_seq_length=c["max_length"], dtype=torch.bfloat16,
        load_in_4bit=c["method"] == "qlora", local_files_only=True)
    model = FastLanguageModel.get_peft_model(
        model, r=c["r"], lora_alpha=c["alpha"], lora_dropout=c["dropout"], target_modules=c["targets"], bias="none",
        use_gradient_checkpointing=c["gradient_checkpointing"], random_state=3407)
    ds = Dataset.from_dict({"messages": messages_rows(args.data)})
    config = SFTConfig(
        output_dir="/tmp/unsloth-output", per_device_train_batch_size=c["micro_batch"],
        gradient_accumulation_steps=c["grad_accum"], num_train_epochs=args.epochs, learning_rate=c["lr"],
        lr_scheduler_type=c["scheduler"], warmup_steps=0.03, weight_decay=0.01, optim=c["optim"], bf16=True,
        logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
        max_length=c["max_length"], packing=c["packing"], dataset_num_proc=4, seed=3407)
    clock = StepClock()
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=ds, args=config,
                         callbacks=[clock.callback()])
    count_tokens(model, clock)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    out = trainer.train()
    c["trainer"] = "unsloth FastLanguageModel + SFTTrainer"
    return summary(clock, out.metrics["train_runtime"], c)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arm", required=True, choices=["guide", "unsloth_matched", "unsloth_notebook"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--plan", default=None, help="ftwiz's plan (JSON) for unsloth_matched")
    ap.add_argument("--epochs", type=float, default=1.0)
    args = ap.parse_args()
    result = guide(args) if args.arm == "guide" else unsloth(args)
    result["system"] = "guide" if args.arm == "guide" else "unsloth"
    emit_result(result)


if __name__ == "__main__":
    main()
