"""The built-in demo: a tiny Llama model and a date-to-ISO dataset, made here, offline.

Why this task: turning "March 5, 2021" into "2021-03-05" is the kind of job fine-tuning is for
(a fixed output format), a randomly initialised model never produces it by chance (so the
"before" score is near 0%), and a tiny model learns it in a minute on two CPU cores.

The model is built by our own code (random init, a character-level tokenizer from the
`tokenizers` library) and saved with save_pretrained into a cache directory, once. The tokenizer
is a BPE with no merges and byte fallback, the shape of Llama 2's tokenizer.json: one token per
character as before, and a format llama.cpp's GGUF converter reads (`ftwiz export --gguf`).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

DEMO_VERSION = 2
"""2: a byte-fallback BPE tokenizer (llama.cpp's converter reads it; v1's WordLevel it cannot)."""
DEMO_DATA = "demo"
"""data.path value that selects the generated demo dataset."""

MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]
_DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.:-/\n"

# Sized so a LoRA run (all linear layers, high LR) reaches >= 80% exact format in ~1 min on 2 cores.
MODEL_SHAPE = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


def cache_dir() -> Path:
    """Where the demo model lives: $FTWIZ_CACHE, else the user cache directory."""
    root = os.environ.get("FTWIZ_CACHE")
    if root:
        return Path(root)
    from platformdirs import user_cache_path

    return user_cache_path("ftwiz")


# -- data ---------------------------------------------------------------------------------
def _render_date(rng: random.Random, year: int, month: int, day: int) -> str:
    name = MONTHS[month - 1]
    style = rng.randrange(4)
    if style == 0:
        return f"{name} {day}, {year}"
    if style == 1:
        return f"{day} {name} {year}"
    if style == 2:
        return f"{name[:3]} {day} {year}"
    return f"{day}. {name.lower()} {year}"


def demo_rows(n: int, seed: int) -> list[dict[str, str]]:
    """n prompt/completion rows: a date in words -> the same date in ISO 8601."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        year = rng.randint(1950, 2049)
        month = rng.randint(1, 12)
        day = rng.randint(1, _DAYS_IN_MONTH[month - 1])
        text = _render_date(rng, year, month, day)
        rows.append({"prompt": f"Date: {text}\nISO:", "completion": f" {year:04d}-{month:02d}-{day:02d}"})
    return rows


def train_rows() -> list[dict[str, str]]:
    return demo_rows(2000, seed=1)


def heldout_rows(n: int = 50) -> list[dict[str, str]]:
    """Held-out examples (another seed; the training set never sees them)."""
    return demo_rows(n, seed=99)


def format_ok(output: str) -> bool:
    """Exact-format match: the answer is an ISO date and nothing else."""
    return bool(_ISO_RE.match(output.strip()))


def is_demo_run(config: dict[str, Any]) -> bool:
    """config.yaml (as a mapping) of a run on the demo's data: its results read differently."""
    return (config.get("data") or {}).get("path") == DEMO_DATA


def row_verdict(row: dict[str, Any]) -> str:
    """What the demo grades one sample on: is the fine-tuned answer an ISO date and nothing else."""
    after = row.get("after")
    return "" if not isinstance(after, str) else ("✓" if format_ok(after) else "✗")


def lesson(scores: list[tuple[str, float | None, float | None]]) -> str:
    """What the demo teaches and what its numbers mean, from its before/after scores."""

    def pct(metric: str, at: int) -> str:
        found = next((s for s in scores if s[0] == metric), None)
        value = None if found is None else found[at]
        return "--" if value is None else f"{value:.0%}"

    return (
        "What the demo teaches: a fine-tune changes how a model answers. The tiny model (random weights, "
        "2 layers) learns one format, any date written as YYYY-MM-DD, in about a minute on the CPU. "
        f"It is graded on that format (the ✓ column): {pct('format_match', 1)} before, {pct('format_match', 2)} after. "
        f"Right dates (exact_match {pct('exact_match', 1)} → {pct('exact_match', 2)}) are not expected: "
        "a model this small learns the shape of the answer, not the calendar; a real model brings that knowledge."
    )


def score(outputs: list[str], references: list[str]) -> dict[str, float]:
    """Share of outputs in the exact format, and share that are the right date."""
    n = max(len(outputs), 1)
    return {
        "format_match": sum(format_ok(o) for o in outputs) / n,
        "exact_match": sum(o.strip() == r.strip() for o, r in zip(outputs, references)) / n,
    }


# -- model ----------------------------------------------------------------------------------
def build_tokenizer():
    """A character-level tokenizer: a BPE with no merges and byte fallback (Llama 2's shape).

    Every character of the demo is one token; anything else falls back to byte tokens
    <0x00>..<0xFF>. Spaces are written as "▁" inside the vocabulary (and decoded back), and no
    space is prepended, so len(ids) == len(text) for demo text.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    pieces = _SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + [c.replace(" ", "\u2581") for c in _CHARS]
    vocab = {tok: i for i, tok in enumerate(pieces)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    core.normalizer = normalizers.Replace(" ", "\u2581")
    core.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        add_prefix_space=False,  # saved in tokenizer_config.json: llama.cpp then prepends no space either
    )
    return tokenizer


def ensure_demo_model(root: str | Path | None = None) -> Path:
    """Build the tiny demo model once (random init, seeded) and return its directory."""
    target = Path(root or cache_dir()) / f"demo-model-v{DEMO_VERSION}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **MODEL_SHAPE,
    )
    model = LlamaForCausalLM(config)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    try:
        os.replace(staging, target)  # another process may have won the race; both are identical
    except OSError:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return target


def demo_config_dict(model_dir: str | Path, name: str = "demo") -> dict[str, Any]:
    """The run config of `ftwiz train --demo`: LoRA on all linear layers, high LR, ~1 minute."""
    return {
        "name": name,
        "method": "lora",
        "model": {"name_or_path": str(model_dir), "attn_implementation": "sdpa"},
        "data": {"path": DEMO_DATA, "eval_fraction": 0.05, "completion_only_loss": True},
        "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"},
        "training": {
            "learning_rate": 5e-3,
            "max_steps": 200,
            "per_device_train_batch_size": 16,
            "gradient_accumulation_steps": 1,
            "warmup_ratio": 0.05,
            "lr_scheduler_type": "cosine",
            "weight_decay": 0.0,
            "gradient_checkpointing": False,
            "max_length": 64,
            "logging_steps": 5,
            "save_steps": 50,
            "save_total_limit": 2,
        },
        "output": {"samples": 50},
    }


def demo_model_dir() -> Path:
    """Where ensure_demo_model builds the tiny model by default."""
    return cache_dir() / f"demo-model-v{DEMO_VERSION}"


def demo_config() -> Any:
    """The demo's RunConfig, pointing at demo_model_dir()."""
    from ftwiz.core.config import config_from_dict

    return config_from_dict(demo_config_dict(demo_model_dir()), "demo")


def write_rows(path: str | Path, rows: list[dict[str, str]]) -> Path:
    """Rows as JSONL, the format core.data reads."""
    import json

    path = Path(path)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
