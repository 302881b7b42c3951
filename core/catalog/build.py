"""Regenerate the bundled shape manifests: `python -m ftwiz.core.catalog.build`.

The configs below are the models' published config.json values (the fields that decide the
architecture). Each is instantiated on the meta device (core.models.compute_manifest) and
written to core/catalog/<name>.json with its Hub ids, gated flag and license, so that planning
works offline and without importing torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent

LLAMA31 = "Llama 3.1 Community License (accept it on the Hub page to download)"
LLAMA32 = "Llama 3.2 Community License (accept it on the Hub page to download)"
GEMMA = "Gemma Terms of Use (accept them on the Hub page to download)"
APACHE = "Apache-2.0"
LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
LINEAR_8 = {"rope_type": "linear", "factor": 8.0}


def llama(hidden, inter, layers, heads, kv, *, vocab=128256, tie=False, max_pos=131072,
          rope_theta=500000.0, rope_scaling=None, bos=128000, eos=128001, eps=1e-5, head_dim=None):
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
        "max_position_embeddings": max_pos, "rms_norm_eps": eps, "rope_theta": rope_theta,
        "rope_scaling": rope_scaling, "tie_word_embeddings": tie, "attention_bias": False,
        "mlp_bias": False, "bos_token_id": bos, "eos_token_id": eos, "torch_dtype": "bfloat16",
    }
    if head_dim:
        config["head_dim"] = head_dim
    return config


def qwen2(hidden, inter, layers, heads, kv, *, vocab=152064, tie=False, max_pos=131072, eps=1e-6):
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
        "max_position_embeddings": max_pos, "rms_norm_eps": eps, "rope_theta": 1000000.0,
        "sliding_window": max_pos, "use_sliding_window": False, "max_window_layers": layers,
        "tie_word_embeddings": tie, "bos_token_id": 151643, "eos_token_id": 151643,
        "torch_dtype": "bfloat16",
    }


def qwen3(hidden, inter, layers, heads, kv, *, tie=False):
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": 128,
        "vocab_size": 151936, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_scaling": None, "attention_bias": False,
        "sliding_window": None, "use_sliding_window": False, "max_window_layers": layers,
        "tie_word_embeddings": tie, "bos_token_id": 151643, "eos_token_id": 151643,
        "torch_dtype": "bfloat16",
    }


def gemma3_text(hidden, inter, layers, heads, kv, *, vocab=262208, max_pos=131072, sliding=1024,
                rope_scaling=LINEAR_8):
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": 256, "query_pre_attn_scalar": 256,
        "vocab_size": vocab, "max_position_embeddings": max_pos, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": rope_scaling,
        "sliding_window": sliding, "sliding_window_pattern": 6, "attention_bias": False,
        "final_logit_softcapping": None, "attn_logit_softcapping": None,
        "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
        "torch_dtype": "bfloat16",
    }


def gemma2(hidden, inter, layers, heads, kv):
    return {
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": 256,
        "query_pre_attn_scalar": 256, "vocab_size": 256000, "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": 4096,
        "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "attention_bias": False,
        "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
        "torch_dtype": "float32",
    }


def phi3(hidden, inter, layers, heads, kv, *, vocab, max_pos, rope_theta, sliding, bos, eos, pad):
    return {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
        "max_position_embeddings": max_pos, "original_max_position_embeddings": max_pos,
        "rms_norm_eps": 1e-5, "rope_theta": rope_theta, "rope_scaling": None,
        "sliding_window": sliding, "tie_word_embeddings": False, "attention_bias": False,
        "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "torch_dtype": "bfloat16",
    }


def smollm2(hidden, inter, layers, heads, kv, rope_theta):
    return llama(hidden, inter, layers, heads, kv, vocab=49152, tie=True, max_pos=8192,
                 rope_theta=rope_theta, bos=0, eos=0)


def entry(hub_id, config, *, gated, license, aliases=(), note=None):
    return {"hub_id": hub_id, "aliases": [hub_id, *aliases], "gated": gated, "license": license,
            "note": note, "config": config}


def instruct(hub_id, suffix="-Instruct"):
    return (hub_id + suffix,)


CATALOG: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": entry(
        "meta-llama/Llama-3.2-1B",
        llama(2048, 8192, 16, 32, 8, tie=True, head_dim=64, rope_scaling={"factor": 32.0, **LLAMA3_ROPE}),
        gated=True, license=LLAMA32, aliases=instruct("meta-llama/Llama-3.2-1B")),
    "llama-3.2-3b": entry(
        "meta-llama/Llama-3.2-3B",
        llama(3072, 8192, 28, 24, 8, tie=True, head_dim=128, rope_scaling={"factor": 32.0, **LLAMA3_ROPE}),
        gated=True, license=LLAMA32, aliases=instruct("meta-llama/Llama-3.2-3B")),
    "llama-3.1-8b": entry(
        "meta-llama/Llama-3.1-8B",
        llama(4096, 14336, 32, 32, 8, rope_scaling={"factor": 8.0, **LLAMA3_ROPE}),
        gated=True, license=LLAMA31,
        aliases=("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Meta-Llama-3.1-8B",
                 "meta-llama/Meta-Llama-3.1-8B-Instruct")),
    "llama-3.1-70b": entry(
        "meta-llama/Llama-3.1-70B",
        llama(8192, 28672, 80, 64, 8, rope_scaling={"factor": 8.0, **LLAMA3_ROPE}),
        gated=True, license=LLAMA31,
        aliases=("meta-llama/Llama-3.1-70B-Instruct", "meta-llama/Meta-Llama-3.1-70B")),
    "qwen2.5-0.5b": entry("Qwen/Qwen2.5-0.5B", qwen2(896, 4864, 24, 14, 2, vocab=151936, tie=True, max_pos=32768),
                          gated=False, license=APACHE, aliases=instruct("Qwen/Qwen2.5-0.5B")),
    "qwen2.5-1.5b": entry("Qwen/Qwen2.5-1.5B", qwen2(1536, 8960, 28, 12, 2, vocab=151936, tie=True, max_pos=32768),
                          gated=False, license=APACHE, aliases=instruct("Qwen/Qwen2.5-1.5B")),
    "qwen2.5-3b": entry("Qwen/Qwen2.5-3B", qwen2(2048, 11008, 36, 16, 2, vocab=151936, tie=True, max_pos=32768),
                        gated=False, license="Qwen Research License (non-commercial)",
                        aliases=instruct("Qwen/Qwen2.5-3B")),
    "qwen2.5-7b": entry("Qwen/Qwen2.5-7B", qwen2(3584, 18944, 28, 28, 4),
                        gated=False, license=APACHE, aliases=instruct("Qwen/Qwen2.5-7B")),
    "qwen2.5-14b": entry("Qwen/Qwen2.5-14B", qwen2(5120, 13824, 48, 40, 8, eps=1e-5),
                         gated=False, license=APACHE, aliases=instruct("Qwen/Qwen2.5-14B")),
    "qwen2.5-32b": entry("Qwen/Qwen2.5-32B", qwen2(5120, 27648, 64, 40, 8, eps=1e-5),
                         gated=False, license=APACHE, aliases=instruct("Qwen/Qwen2.5-32B")),
    "qwen2.5-72b": entry("Qwen/Qwen2.5-72B", qwen2(8192, 29568, 80, 64, 8, eps=1e-5),
                         gated=False, license="Qwen License (commercial use above 100M monthly users needs a license)",
                         aliases=instruct("Qwen/Qwen2.5-72B")),
    "qwen3-0.6b": entry("Qwen/Qwen3-0.6B-Base", qwen3(1024, 3072, 28, 16, 8, tie=True),
                        gated=False, license=APACHE, aliases=("Qwen/Qwen3-0.6B",)),
    "qwen3-1.7b": entry("Qwen/Qwen3-1.7B-Base", qwen3(2048, 6144, 28, 16, 8, tie=True),
                        gated=False, license=APACHE, aliases=("Qwen/Qwen3-1.7B",)),
    "qwen3-4b": entry("Qwen/Qwen3-4B-Base", qwen3(2560, 9728, 36, 32, 8, tie=True),
                      gated=False, license=APACHE, aliases=("Qwen/Qwen3-4B",)),
    "qwen3-8b": entry("Qwen/Qwen3-8B-Base", qwen3(4096, 12288, 36, 32, 8),
                      gated=False, license=APACHE, aliases=("Qwen/Qwen3-8B",)),
    "qwen3-14b": entry("Qwen/Qwen3-14B-Base", qwen3(5120, 17408, 40, 40, 8),
                       gated=False, license=APACHE, aliases=("Qwen/Qwen3-14B",)),
    "qwen3-32b": entry("Qwen/Qwen3-32B", qwen3(5120, 25600, 64, 64, 8),
                       gated=False, license=APACHE,
                       note="Qwen3-32B has no published -Base release; this is the post-trained model"),
    "mistral-7b-v0.3": entry(
        "mistralai/Mistral-7B-v0.3",
        {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
         "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
         "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32768,
         "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
         "sliding_window": None, "tie_word_embeddings": False, "bos_token_id": 1,
         "eos_token_id": 2, "torch_dtype": "bfloat16"},
        gated=True, license="Apache-2.0 (the Hub asks you to share contact details to download)",
        aliases=("mistralai/Mistral-7B-Instruct-v0.3",)),
    "gemma-2-2b": entry("google/gemma-2-2b", gemma2(2304, 9216, 26, 8, 4),
                        gated=True, license=GEMMA, aliases=("google/gemma-2-2b-it",)),
    "gemma-2-9b": entry("google/gemma-2-9b", gemma2(3584, 14336, 42, 16, 8),
                        gated=True, license=GEMMA, aliases=("google/gemma-2-9b-it",)),
    "gemma-3-1b": entry(
        "google/gemma-3-1b-pt",
        gemma3_text(1152, 6912, 26, 4, 1, vocab=262144, max_pos=32768, sliding=512, rope_scaling=None),
        gated=True, license=GEMMA, aliases=("google/gemma-3-1b-it",)),
    "gemma-3-4b": entry(
        "google/gemma-3-4b-pt", gemma3_text(2560, 10240, 34, 8, 4),
        gated=True, license=GEMMA, aliases=("google/gemma-3-4b-it",),
        note="text model only: the Hub checkpoint also holds a ~0.4B-parameter vision tower"),
    "gemma-3-12b": entry(
        "google/gemma-3-12b-pt", gemma3_text(3840, 15360, 48, 16, 8),
        gated=True, license=GEMMA, aliases=("google/gemma-3-12b-it",),
        note="text model only: the Hub checkpoint also holds a ~0.4B-parameter vision tower"),
    "phi-3-mini": entry(
        "microsoft/Phi-3-mini-4k-instruct",
        phi3(3072, 8192, 32, 32, 32, vocab=32064, max_pos=4096, rope_theta=10000.0, sliding=2047,
             bos=1, eos=32000, pad=32000),
        gated=False, license="MIT"),
    "phi-4": entry(
        "microsoft/phi-4",
        phi3(5120, 17920, 40, 40, 10, vocab=100352, max_pos=16384, rope_theta=250000.0, sliding=None,
             bos=100257, eos=100265, pad=100349),
        gated=False, license="MIT"),
    "smollm2-135m": entry("HuggingFaceTB/SmolLM2-135M", smollm2(576, 1536, 30, 9, 3, 100000.0),
                          gated=False, license=APACHE, aliases=instruct("HuggingFaceTB/SmolLM2-135M")),
    "smollm2-360m": entry("HuggingFaceTB/SmolLM2-360M", smollm2(960, 2560, 32, 15, 5, 100000.0),
                          gated=False, license=APACHE, aliases=instruct("HuggingFaceTB/SmolLM2-360M")),
    "smollm2-1.7b": entry("HuggingFaceTB/SmolLM2-1.7B", smollm2(2048, 8192, 24, 32, 32, 130000.0),
                          gated=False, license=APACHE, aliases=instruct("HuggingFaceTB/SmolLM2-1.7B")),
    "gpt2": entry(
        "openai-community/gpt2",
        {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
         "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
         "vocab_size": 50257, "layer_norm_epsilon": 1e-5, "bos_token_id": 50256, "eos_token_id": 50256},
        gated=False, license="MIT", aliases=("gpt2",)),
    "pythia-160m": entry(
        "EleutherAI/pythia-160m",
        {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_act": "gelu",
         "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
         "num_attention_heads": 12, "vocab_size": 50304, "max_position_embeddings": 2048,
         "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": True,
         "layer_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0},
        gated=False, license=APACHE),
}


def build_entry(name: str) -> dict[str, Any]:
    """One catalog manifest: the meta-device shapes plus the catalog's own facts."""
    from ftwiz.core.models import compute_manifest

    spec = CATALOG[name]
    manifest = compute_manifest(spec["config"])
    manifest.update({k: spec[k] for k in ("hub_id", "aliases", "gated", "license", "note")})
    return manifest


def main(names: list[str]) -> None:
    for name in names or sorted(CATALOG):
        manifest = build_entry(name)
        (HERE / f"{name}.json").write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"{name:18} {manifest['summary']['total_params']:>15,}")


if __name__ == "__main__":
    main(sys.argv[1:])
