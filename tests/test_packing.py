"""Packed examples never see each other: TRL's padding-free collator, as the engine trains.

The GPU plan packs rows (TRL BFD) and TRL flattens each micro-batch into one row with
position_ids restarting per example and `cu_seq_lens_*` marking where each starts. Each
example's logits in that packed row must equal its logits alone, under every attention
implementation the plan may pick: `varlen` (PyTorch's varlen FlashAttention; on the CPU its
per-example SDPA stand-in), `sdpa` and `eager` (transformers' block-diagonal mask, built when
no KV cache is passed, as TRL's compute_loss does with use_cache=False).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ftwiz.core.engine.attention import VARLEN, register, varlen_attention_forward

CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=300, max_position_embeddings=256)


def _model(impl: str):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(LlamaConfig(**CONFIG), attn_implementation=impl).eval()


def _examples() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 300, (n,), generator=g).tolist() for n in (11, 7, 16)]


@pytest.mark.parametrize("impl", [VARLEN, "sdpa", "eager"])
def test_packed_logits_equal_each_example_alone(impl):
    if impl == VARLEN:
        register()
    model = _model(impl)
    examples = _examples()
    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    batch = collator([{"input_ids": ids} for ids in examples])
    assert batch["input_ids"].shape[0] == 1 and "cu_seq_lens_q" in batch  # one flattened row, as trained
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0]
        start = 0
        for ids in examples:
            alone = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
            assert torch.allclose(packed[start:start + len(ids)], alone, atol=1e-5), impl
            start += len(ids)


def test_varlen_keeps_examples_apart_even_with_a_cache():
    """sdpa/eager only separate packed examples when no KV cache is built; varlen always does."""
    register()
    model = _model(VARLEN)
    a, b = _examples()[:2]
    ids = torch.tensor([a + b])
    position_ids = torch.tensor([list(range(len(a))) + list(range(len(b)))])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=position_ids, use_cache=True).logits[0, len(a):]
        alone = model(input_ids=torch.tensor([b]), use_cache=False).logits[0]
    assert torch.allclose(packed, alone, atol=1e-5)


def test_varlen_defers_to_sdpa_for_unpacked_batches():
    """Generation and padded batches take transformers' SDPA path with its mask (same numbers as sdpa)."""
    register()
    varlen, sdpa = _model(VARLEN), _model("sdpa")
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        a = varlen(input_ids=ids, attention_mask=mask).logits
        b = sdpa(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(a, b, atol=1e-6)
    out = varlen.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False)
    ref = sdpa.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False)
    assert out.tolist() == ref.tolist()


def test_varlen_refuses_attention_dropout():
    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="dropout"):
        varlen_attention_forward(None, q, q, q, None, dropout=0.1, cu_seq_lens_q=torch.tensor([0, 4]))
