"""Attention for packed rows: PyTorch's own variable-length FlashAttention, plugged into transformers.

Why: with padding-free packing, TRL's collator flattens a micro-batch into one row of several
examples and passes where each example starts (`cu_seq_lens_q/k`, `max_length_q/k`). Under
`sdpa`, transformers turns that into a dense block-diagonal mask over the whole flattened row,
so attention runs over (sum of lengths)^2 with a kernel that cannot skip the masked blocks;
under `flash_attention_2` it runs per example, but that needs the flash-attn package, which has
no wheels. PyTorch ships the FlashAttention varlen kernel itself
(`torch.nn.attention.varlen.varlen_attn`, CUDA); this module registers it with transformers'
attention interface (`AttentionInterface.register`, the documented extension point) under
the name `VARLEN`, so `attn_implementation: varlen` trains each packed example on its own
tokens only, with FlashAttention's speed, and nothing to install.

Scope: training and evaluation on packed batches (TRL's padding-free collator). Without
`cu_seq_lens_q` in the call (an unpacked batch, or generation), it defers to transformers' SDPA
path with the mask transformers built, so the same model also generates. Off CUDA (tests, the
demo) the varlen call is replaced by SDPA run example by example: the same arithmetic, slower.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

VARLEN = "varlen"
"""The `model.attn_implementation` value that selects this path."""


def varlen_available() -> bool:
    """PyTorch's varlen FlashAttention is importable (torch 2.9+) and a CUDA device is present."""
    try:
        import torch
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def register() -> str:
    """Register the implementation with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    if VARLEN not in AttentionInterface():
        AttentionInterface.register(VARLEN, varlen_attention_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN, varlen_mask)
    if varlen_available():
        import torch

        _native_gqa(torch.device("cuda", torch.cuda.current_device()))  # decided before any compile
    return VARLEN


def varlen_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                attention_mask=None, **kwargs):
    """No mask for one row without padding (packed or not: the varlen call is causal per example);
    SDPA's mask otherwise (padded batches, generation with a cache), for the SDPA fallback.

    transformers would otherwise build a dense (tokens x tokens) mask for every packed row."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and batch_size == 1 and q_length == kv_length and not q_offset and not kv_offset:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, **kwargs)


def cu_seq_lens_from(position_ids):
    """Example boundaries of one packed row from its position_ids (restarting at 0 per example)."""
    import torch

    row = position_ids.reshape(-1)
    starts = (row == 0).nonzero().flatten()
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([torch.zeros(1, dtype=starts.dtype, device=starts.device), starts])
    end = torch.tensor([row.numel()], dtype=starts.dtype, device=starts.device)
    return torch.cat([starts, end]).to(torch.int32)


@functools.lru_cache(maxsize=None)
def _native_gqa(device) -> bool:
    """Whether this torch's varlen_attn (before its enable_gqa argument) takes fewer K/V heads than
    query heads as FlashAttention does; tried once on a tiny input, outside any compiled graph."""
    import torch
    from torch.nn.attention.varlen import varlen_attn

    q = torch.zeros(4, 2, 64, dtype=torch.bfloat16, device=device)
    kv = torch.zeros(4, 1, 64, dtype=torch.bfloat16, device=device)
    cu = torch.tensor([0, 4], dtype=torch.int32, device=device)
    try:
        out = varlen_attn(q, kv, kv, cu, cu, 4, 4)
    except (RuntimeError, ValueError):
        return False
    return tuple(out.shape) == (4, 2, 64)


def _call_varlen(q, k, v, cu, max_len: int, scale: float | None):
    """torch's varlen_attn, causal, across its signatures (is_causal in 2.9-2.10, window_size later)."""
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    kwargs: dict[str, Any] = {}
    if scale is not None and "scale" in params:
        kwargs["scale"] = scale
    elif scale is not None and abs(scale - q.shape[-1] ** -0.5) > 1e-6:
        raise ValueError("attn_implementation varlen: this torch's varlen_attn has no scale argument and the "
                         "model's attention scale is not 1/sqrt(head_dim); use attn_implementation sdpa")
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        elif not _native_gqa(q.device):  # would keep 4x larger K/V for backward: only where needed
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    if "is_causal" in params:
        kwargs["is_causal"] = True
    else:
        kwargs["window_size"] = (-1, 0)
    return varlen_attn(q, k, v, cu, cu, max_len, max_len, **kwargs)


def _per_example_sdpa(q, k, v, cu, scale: float | None):
    """The same result as the varlen kernel, one example at a time with causal SDPA (CPU path)."""
    import torch
    import torch.nn.functional as F

    bounds = cu.tolist()
    groups = q.shape[1] // k.shape[1]
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        qi = q[start:end].transpose(0, 1)  # [H, L, D]
        ki = k[start:end].transpose(0, 1).repeat_interleave(groups, dim=0)
        vi = v[start:end].transpose(0, 1).repeat_interleave(groups, dim=0)
        outs.append(F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, scale=scale).transpose(0, 1))
    return torch.cat(outs, dim=0)


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention-function signature: query [B, Hq, L, D] -> ([B, L, Hq, D], None)."""
    import torch

    cu = kwargs.get("cu_seq_lens_q")
    packed_row = query.shape[0] == 1 and query.shape[2] == key.shape[2] and attention_mask is None
    if cu is None and packed_row and kwargs.get("position_ids") is not None:
        cu = cu_seq_lens_from(kwargs["position_ids"])  # a caller without TRL's collator (one sync)
    if cu is None or not packed_row:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    if dropout:
        raise ValueError("attn_implementation varlen: attention dropout is not supported")
    _, heads, length, dim = query.shape
    q = query[0].transpose(0, 1)  # [T, Hq, D]
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    cu = cu.to(device=q.device, dtype=torch.int32)
    if q.is_cuda:
        out = _call_varlen(q, k, v, cu, int(kwargs.get("max_length_q") or length), scaling)
    else:
        out = _per_example_sdpa(q, k, v, cu, scaling)
    return out.reshape(1, length, heads, dim), None
