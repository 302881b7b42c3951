"""What a run leaves behind: the adapter, before/after samples, a merged model, side-by-side samples.

Merging a QLoRA adapter: the base is loaded again in 16-bit from its original weights and
the adapter is merged into that. Merging into the 4-bit model would mean dequantizing NF4
weights, which are only an approximation of the originals: the merged model would carry the
quantization error into every weight, and saving 4-bit merged weights is lossy again. The
adapter was trained to correct the quantized base, but the difference is small compared with
the rounding error, so the 16-bit base + adapter is the better model (and what QLoRA's
authors recommend).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from ftwiz.core.config import RunConfig, load_config
from ftwiz.core.engine.model_source import model_source
from ftwiz.core.errors import UserError
from ftwiz.core.events import SampleRow, SamplesFile, StartedEvent, parse_events
from ftwiz.core.runs import RunDir, _write_private, private_files


def _install(staged: Path, final: Path) -> Path:
    """Move a fully written directory into place; an old one is replaced only after the new one is whole."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, final)
    return final


def save_adapter(trainer: Any, run: RunDir, is_main: bool = True, sharded: bool = False) -> Path:
    """The adapter (safetensors) or, for full fine-tuning, the model, into adapter/ atomically.

    `sharded` (FSDP): every rank must call this, since gathering the shards into one state dict
    is a collective; the Trainer writes from the main process only, and only it stages and
    installs the directory, between barriers.
    """
    staged = run.path / ".adapter.tmp"
    if is_main:
        shutil.rmtree(staged, ignore_errors=True)
    if sharded:
        trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staged))
    if sharded:
        trainer.accelerator.wait_for_everyone()
    if not is_main:
        return run.adapter_dir
    # The Trainer pickles its arguments next to the model; an adapter needs none of it.
    (staged / "training_args.bin").unlink(missing_ok=True)
    return _install(staged, run.adapter_dir)


def _clean(text: str, tokenizer: Any) -> str:
    for token in (tokenizer.eos_token, tokenizer.pad_token):
        if token:
            text = text.replace(token, "")
    return text.strip()


def generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch: int = 16) -> list[str]:
    """Greedy continuations of each prompt (left-padded batches)."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    device = next(model.parameters()).device
    try:
        for start in range(0, len(prompts), batch):
            chunk = prompts[start : start + batch]
            bos = tokenizer.bos_token
            add_special = not (bos and all(p.startswith(bos) for p in chunk))
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=add_special).to(device)
            enc.pop("token_type_ids", None)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new = out[:, enc["input_ids"].shape[1] :]
            outputs += [_clean(t, tokenizer) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return outputs


def _scores(outputs: list[str], references: list[str], demo_data: bool) -> dict[str, float]:
    if demo_data:
        from ftwiz.core import demo

        return demo.score(outputs, references)
    n = max(len(outputs), 1)
    return {"exact_match": sum(o == r for o, r in zip(outputs, references)) / n}


def before_after_samples(model: Any, tokenizer: Any, eval_ds: Any, config: RunConfig, run: RunDir) -> SamplesFile:
    """Generate on held-out examples with the base and with the fine-tuned model; samples.json."""
    n = min(config.output.samples, len(eval_ds))
    prompts = list(eval_ds["prompt_text"][:n])
    references = [_clean(r, tokenizer) for r in eval_ds["reference_text"][:n]]
    longest = max((len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references), default=16)
    max_new = min(longest + 8, 256)
    after = generate(model, tokenizer, prompts, max_new)
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            before = generate(model, tokenizer, prompts, max_new)
    else:
        base = _load_base(config)
        before = generate(base, tokenizer, prompts, max_new)
        del base
    demo_data = config.data.path == "demo"
    document = SamplesFile(
        count=n,
        metric="demo: format_match = answer is an ISO date and nothing else" if demo_data else "exact_match",
        before=_scores(before, references, demo_data),
        after=_scores(after, references, demo_data),
        examples=[SampleRow(prompt=p, reference=r, before=b, after=a)
                  for p, r, b, a in zip(prompts, references, before, after)],
    )
    _write_private(run.samples_path, json.dumps(document.to_record(), indent=2))
    return document


def _load_base(config: RunConfig) -> Any:
    """The base model in 16-bit on a GPU (fp32 on the CPU), never quantized: what merges load onto."""
    import torch
    from transformers import AutoModelForCausalLM

    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        device_map = "auto"
    else:
        dtype, device_map = torch.float32, None
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "trust_remote_code": config.model.trust_remote_code,
        "revision": config.model.revision,
    }
    if device_map:
        kwargs["device_map"] = device_map
    if not config.model.allow_pickle:
        kwargs["use_safetensors"] = True
    return AutoModelForCausalLM.from_pretrained(model_source(config.model.name_or_path), **kwargs)


def _adapter_ready(run: RunDir) -> None:
    if not (run.adapter_dir / "adapter_config.json").exists() and not (run.adapter_dir / "config.json").exists():
        raise UserError(f"run {run.name}: no adapter yet (state {run.state()}); wait for it to finish or resume it")


def merge(run: RunDir) -> Path:
    """merged/: base (16-bit) + adapter merged with merge_and_unload, loadable by from_pretrained."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    config = load_config(run.config_path)
    _adapter_ready(run)
    if config.method == "full":
        raise UserError(f"run {run.name}: method full has no adapter to merge; adapter/ is already the full model")
    model = PeftModel.from_pretrained(_load_base(config), str(run.adapter_dir))
    merged = model.merge_and_unload()
    staged = run.path / ".merged.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    tokenizer_source = run.adapter_dir if (run.adapter_dir / "tokenizer_config.json").exists() else model_source(config.model.name_or_path)
    with private_files():
        merged.save_pretrained(str(staged), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(str(staged))
    return _install(staged, run.merged_dir)


def sample(run: RunDir, prompt: str, max_new_tokens: int = 64) -> dict[str, str]:
    """The same prompt through the base and through base + adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = load_config(run.config_path)
    _adapter_ready(run)
    tokenizer = AutoTokenizer.from_pretrained(model_source(config.model.name_or_path), trust_remote_code=config.model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = _load_base(config)
    if config.method == "full":
        tuned = AutoModelForCausalLM.from_pretrained(str(run.adapter_dir), use_safetensors=True)
        return {"base": generate(base, tokenizer, [prompt], max_new_tokens)[0], "tuned": generate(tuned, tokenizer, [prompt], max_new_tokens)[0]}
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(run.adapter_dir))
    tuned_text = generate(model, tokenizer, [prompt], max_new_tokens)[0]
    with model.disable_adapter():
        base_text = generate(model, tokenizer, [prompt], max_new_tokens)[0]
    return {"base": base_text, "tuned": tuned_text}


# -- reading what a run left (the Done screen, the CLI) ------------------------------------
CHAT_FORMATS = frozenset({"chat", "sharegpt", "alpaca"})
"""Data formats the engine renders through the chat template (core/data.py's docstring)."""


def load_samples(path: Path) -> SamplesFile:
    """samples.json as the engine writes it (core.events.SamplesFile); empty when missing or
    unreadable: a run that stopped early has none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return SamplesFile()
    return SamplesFile.parse(data)


def sample_match(row: SampleRow) -> str:
    """✓ when the fine-tuned output is the reference answer exactly, ✗ when not."""
    match = row.exact_match
    return "" if match is None else ("✓" if match else "✗")


def shell_quote(text: str) -> str:
    """One shell word on one line: plain quoting, or bash's $'...' when the text has a newline or
    another control character (a prompt like "Date: ...\\nISO:")."""
    if all(ch.isprintable() for ch in text):
        return shlex.quote(text)
    escapes = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    body = "".join(escapes.get(ch) or (ch if ch.isprintable() else f"\\x{ord(ch):02x}") for ch in text)
    return f"$'{body}'"


def run_data_format(run_dir: RunDir, config: dict[str, Any]) -> str | None:
    """The data format the run trained on: config.yaml's when set, else what the engine reported
    in its "started" event."""
    configured = (config.get("data") or {}).get("format")
    if configured and configured != "auto":
        return configured
    for event in parse_events(run_dir.iter_events()):
        if isinstance(event, StartedEvent) and isinstance(event.data_format, str):
            return event.data_format
    return None


def run_ref(run_dir: RunDir) -> str:
    """How to name the run on the command line: its name if ./runs holds it, else its path."""
    if run_dir.path.resolve().parent == (Path.cwd() / "runs").resolve():
        return run_dir.name
    return str(run_dir.path.resolve())


def usage_snippets(run_dir: RunDir, config: dict[str, Any], prompt: str,
                   data_format: str | None = None) -> dict[str, str]:
    """The exact code and commands for this run, with its real paths, prompting as training did:
    the chat template for chat data, the plain prompt text for prompt/completion and text data."""
    base = (config.get("model") or {}).get("name_or_path", "BASE_MODEL")
    adapter = str(run_dir.adapter_dir.resolve())
    merged = str(run_dir.merged_dir.resolve())
    ref = shlex.quote(run_ref(run_dir))
    if data_format is None or data_format in CHAT_FORMATS:
        # The run saved its tokenizer with the template it trained with (ftwiz's fallback
        # included) next to the adapter: load the tokenizer from there.
        tokenizer_path = adapter
        prompt_code = (
            f"messages = [{{\"role\": \"user\", \"content\": {json.dumps(prompt)}}}]\n"
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,\n"
            "                                       return_dict=True, return_tensors=\"pt\")\n"
        )
    else:
        tokenizer_path = base
        prompt_code = (
            f"# {data_format} data: trained on the plain prompt, no chat template\n"
            f"inputs = tokenizer({json.dumps(prompt)}, return_tensors=\"pt\")\n"
        )
    generate = (
        prompt_code
        + "output = model.generate(**inputs, max_new_tokens=64)\n"
        "new_tokens = output[0][inputs[\"input_ids\"].shape[1]:]\n"
        "print(tokenizer.decode(new_tokens, skip_special_tokens=True))"
    )
    if config.get("method") == "full":
        load = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"model = AutoModelForCausalLM.from_pretrained({json.dumps(adapter)}, dtype=\"auto\")\n"
            f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(tokenizer_path)})\n"
        )
        return {"load": load + generate, "commands": f"ftwiz sample {ref} --prompt {shell_quote(prompt)}"}
    load = (
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"base = AutoModelForCausalLM.from_pretrained({json.dumps(base)}, dtype=\"auto\")\n"
        f"model = PeftModel.from_pretrained(base, {json.dumps(adapter)})\n"
        f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(tokenizer_path)})\n"
    )
    merged_code = (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"model = AutoModelForCausalLM.from_pretrained({json.dumps(merged)}, dtype=\"auto\")\n"
        f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(merged)})"
    )
    commands = (
        "# the base model and base + adapter, side by side\n"
        f"ftwiz sample {ref} --prompt {shell_quote(prompt)}\n"
        "# base + adapter as one standalone model, in merged/\n"
        f"ftwiz merge {ref}"
    )
    return {"load": load + generate, "commands": commands, "merged": merged_code}


def merge_command(run_dir: RunDir) -> list[str]:
    """`ftwiz merge RUN` in a fresh interpreter: merging loads the whole model (GBs, minutes)."""
    return [sys.executable, "-m", "ftwiz.cli", "merge", str(run_dir.path.resolve())]
