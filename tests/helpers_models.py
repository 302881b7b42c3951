"""Tiny model configs of several architectures, and peft's own count over them.

Shared by tests that need a small real model directory (config.json, optionally random weights)
without the network. Import torch/transformers/peft only inside functions: they are slow here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_COMMON = {"vocab_size": 128, "max_position_embeddings": 64}

# Small but shaped like the real thing: GQA where the family uses it, biases where it has them.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False},
    "qwen2": {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 112, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "mistral": {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 80, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 1},
    "gemma2": {"model_type": "gemma2", "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
               "query_pre_attn_scalar": 32, "sliding_window": 16},
    "gemma3_text": {"model_type": "gemma3_text", "hidden_size": 48, "intermediate_size": 96,
                    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                    "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 16},
    # Multimodal: the language model nests in text_config, beside a vision tower.
    "gemma3": {"model_type": "gemma3", "mm_tokens_per_image": 4,
               "text_config": {"model_type": "gemma3_text", "hidden_size": 48, "intermediate_size": 96,
                               "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                               "head_dim": 32, "vocab_size": 300},
               "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32,
                                 "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "image_size": 28, "patch_size": 14}},
    "phi3": {"model_type": "phi3", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "bos_token_id": 1, "eos_token_id": 2,
             "pad_token_id": 0},
    "gpt2": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64,
             "bos_token_id": 1, "eos_token_id": 2},
    "gpt_neox": {"model_type": "gpt_neox", "hidden_size": 64, "intermediate_size": 128,
                 "num_hidden_layers": 2, "num_attention_heads": 4, "tie_word_embeddings": False},
    "falcon": {"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "new_decoder_architecture": True, "num_kv_heads": 2, "bias": False},
}


# Mixture-of-experts layers: Mixtral-style (transformers 5 fuses the experts into 3-D parameters,
# which peft's all-linear adapts as parameters) and Qwen-MoE-style (a shared expert beside them).
MOE_CONFIGS: dict[str, dict[str, Any]] = {
    "mixtral": {"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {"model_type": "qwen2_moe", "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2},
}


def tiny_config(model_type: str) -> dict[str, Any]:
    return {**_COMMON, **(TINY_CONFIGS.get(model_type) or MOE_CONFIGS[model_type])}


def write_model_dir(path: Path, model_type: str, weights: bool = False) -> Path:
    """A model directory as `save_pretrained` leaves it; config.json only unless weights=True."""
    path.mkdir(parents=True, exist_ok=True)
    config = tiny_config(model_type)
    if weights:
        from transformers import AutoConfig, AutoModelForCausalLM

        AutoModelForCausalLM.from_config(AutoConfig.for_model(**config)).save_pretrained(path)
    else:
        (path / "config.json").write_text(json.dumps(config))
    return path


def peft_trainable(config: dict[str, Any], rank: int, target_modules: list[str] | str,
                   device: str = "meta", dropout: float = 0.05) -> tuple[int, int]:
    """(trainable, all params) from peft's get_peft_model, the numbers print_trainable_parameters prints."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
        lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=dropout,
                          target_modules=target_modules, task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, lora)
    return peft_model.get_nb_trainable_parameters()
