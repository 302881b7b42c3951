"""Chat with a run's result beside its base model, streamed token by token (no Textual).

The fine-tuned model is the base with the adapter loaded by peft (the base's answer then comes
from the same weights with the adapter switched off: one copy in memory), merged/ when only
that is left, or adapter/ itself for full fine-tuning (then the base is loaded beside it). Models load with attn_implementation "sdpa" whatever
training used: ftwiz's "varlen" attention is for packed training batches only.

Prompts are built as training built them: chat data (chat, sharegpt, alpaca) through the chat
template of the tokenizer saved with the run (ftwiz's fallback included), with the
conversation so far; prompt/completion and text data as the plain prompt, one turn at a time.

    session = ChatSession.open(run)
    for piece in session.stream("tuned", "Date: March 5, 2021\\nISO:", ChatSettings()):
        print(piece, end="")
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ftwiz.core.config import RunConfig, load_config
from ftwiz.core.engine.model_source import model_source
from ftwiz.core.errors import UserError
from ftwiz.core.runs import RunDir

Side = Literal["tuned", "base"]
SIDES: tuple[Side, ...] = ("tuned", "base")


@dataclass
class ChatSettings:
    """Generation settings the user can edit; temperature 0 means greedy."""

    temperature: float = 0.7
    max_new_tokens: int = 128
    top_p: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 5.0:
            raise UserError(f"chat: temperature {self.temperature}: use 0 (greedy) to 5")
        if not 1 <= self.max_new_tokens <= 8192:
            raise UserError(f"chat: max new tokens {self.max_new_tokens}: use 1 to 8192")


@dataclass
class ChatSession:
    """Two models (or one with a switchable adapter), the tokenizer, and each side's history."""

    run: RunDir
    config: RunConfig
    tokenizer: Any
    tuned: Any
    base: Any | None
    """A separate base model, or None when `tuned` is a PeftModel whose adapter is switched off."""
    chat_format: bool
    source: str
    history: dict[str, list[dict[str, str]]] = field(default_factory=lambda: {"tuned": [], "base": []})
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, run: RunDir, device: str | None = None) -> ChatSession:
        from ftwiz.core.engine.results import CHAT_FORMATS, run_data_format

        config = load_config(run.config_path)
        full = config.method == "full"
        merged = (run.merged_dir / "config.json").exists()
        adapter = not full and (run.adapter_dir / "adapter_config.json").exists()
        if not (adapter or merged or (full and (run.adapter_dir / "config.json").exists())):
            raise UserError(f"run {run.name}: no trained model yet (state {run.state()}); wait for it to finish")
        tokenizer = _tokenizer(run, config)
        base_path = model_source(config.model.name_or_path)
        # One copy of the base weights where there is an adapter (its answer with the adapter off);
        # two models only for full fine-tuning, or a run that kept merged/ and not its adapter.
        if not adapter:
            tuned_path = run.adapter_dir if full else run.merged_dir
            tuned = _load(str(tuned_path), config, device)
            base = _load(base_path, config, device)
            source = str(tuned_path)
        else:
            from peft import PeftModel

            tuned = PeftModel.from_pretrained(_load(base_path, config, device), str(run.adapter_dir))
            base = None
            source = f"{config.model.name_or_path} + {run.adapter_dir}"
        data_format = run_data_format(run, run.read_config())
        return cls(run=run, config=config, tokenizer=tokenizer, tuned=tuned, base=base,
                   chat_format=data_format is None or data_format in CHAT_FORMATS, source=source)

    def reset(self) -> None:
        for turns in self.history.values():
            turns.clear()

    def prompt_ids(self, side: Side, text: str) -> Any:
        """Input ids for this turn: the chat template over the side's history, or the plain prompt."""
        tok = self.tokenizer
        if self.chat_format:
            messages = [*self.history[side], {"role": "user", "content": text}]
            rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return tok(rendered, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return tok(text, return_tensors="pt")["input_ids"]

    def stream(self, side: Side, text: str, settings: ChatSettings,
               cancel: threading.Event | None = None) -> Iterator[str]:
        """The side's answer to `text`, piece by piece as tokens are generated; kept in its history."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancel = cancel or threading.Event()

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return cancel.is_set()

        model = self.tuned if side == "tuned" or self.base is None else self.base
        ids = self.prompt_ids(side, text).to(next(model.parameters()).device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sample = settings.temperature > 0
        kwargs: dict[str, Any] = dict(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=settings.max_new_tokens,
            do_sample=sample, streamer=streamer, eos_token_id=self.stop_ids(),
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id,
            stopping_criteria=StoppingCriteriaList([Cancelled()]),
        )
        if sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.no_grad():
                    if side == "base" and self.base is None:
                        with model.disable_adapter():
                            model.generate(**kwargs)
                    else:
                        model.generate(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                errors.append(exc)
                streamer.end()

        answer = ""
        with self._lock:  # one generation at a time: the adapter switch is the model's state
            worker = threading.Thread(target=generate, name=f"ftwiz-chat-{side}", daemon=True)
            worker.start()
            for piece in streamer:
                answer += piece
                yield piece
            worker.join()
        if errors:
            raise UserError(f"chat: generation failed: {str(errors[0]).splitlines()[0][:200]}")
        if self.chat_format:
            self.history[side] += [{"role": "user", "content": text}, {"role": "assistant", "content": answer.strip()}]

    def answer(self, side: Side, text: str, settings: ChatSettings) -> str:
        return "".join(self.stream(side, text, settings))

    def stop_ids(self) -> list[int]:
        """eos, and for chat data the special tokens that end the assistant's turn (e.g. <|im_end|>)."""
        from ftwiz.core.export import stop_tokens, template_parts

        tok = self.tokenizer
        parts = template_parts(tok, drop_bos=False) if self.chat_format else None
        ids = [tok.convert_tokens_to_ids(t) for t in stop_tokens(tok, parts)]
        return [i for i in dict.fromkeys(ids) if isinstance(i, int) and i != tok.unk_token_id] or [tok.eos_token_id]


def _tokenizer(run: RunDir, config: RunConfig) -> Any:
    """The tokenizer training used: saved next to the adapter (with its chat template), else the base's."""
    from transformers import AutoTokenizer

    for directory in (run.adapter_dir, run.merged_dir):
        if (directory / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(str(directory))
    tokenizer = AutoTokenizer.from_pretrained(model_source(config.model.name_or_path),
                                              trust_remote_code=config.model.trust_remote_code,
                                              revision=config.model.revision)
    from ftwiz.core.data import prepare_tokenizer

    prepare_tokenizer(tokenizer)
    return tokenizer


def _load(path: str | Path, config: RunConfig, device: str | None) -> Any:
    """A model for generation: sdpa attention, 16-bit on a GPU, fp32 on the CPU, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    kwargs: dict[str, Any] = {
        "attn_implementation": "sdpa",  # never "varlen": that is ftwiz's packed-training attention
        "dtype": (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32,
        "trust_remote_code": config.model.trust_remote_code,
    }
    if str(path) == model_source(config.model.name_or_path):
        kwargs["revision"] = config.model.revision
    if not config.model.allow_pickle:
        kwargs["use_safetensors"] = True
    if cuda:
        kwargs["device_map"] = device or "auto"
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    model.eval()
    return model
