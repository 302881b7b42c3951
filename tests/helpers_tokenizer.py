"""A tiny byte-level BPE tokenizer built offline in well under a second, for data and engine tests.

`make_tiny_tokenizer()` returns a transformers PreTrainedTokenizerFast with bos/eos/unk/pad
special tokens and a ChatML chat template (the same shape as Qwen's), or without template / pad
to exercise the fallbacks. Save it with `save_tiny_tokenizer(dir)` to get a "model directory"
that `AutoTokenizer.from_pretrained` and `ftwiz data --model DIR` accept.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Translate the sentence into French. Summarise the text in one line.",
    "Instruction: answer with JSON. Output: {\"name\": \"Ada\", \"age\": 36}",
    "user assistant system hello world what is two plus two? four",
    "0123456789 !?.,;:'\"()[]{}<>-_=+*/\\|@#$%^&~` \n\t",
] * 4


def make_tiny_tokenizer(chat_template: bool = True, pad: bool = True, vocab_size: int = 400):
    """Train a byte-level BPE on a few sentences: every string is encodable, offsets are exact."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>" if pad else None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def save_tiny_tokenizer(directory: str | Path, **kwargs) -> Path:
    """Write the tiny tokenizer into `directory` (created) and return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    make_tiny_tokenizer(**kwargs).save_pretrained(directory)
    return directory
