"""What the wizard's Settings step computes, without Textual: the recommended field values with
their reasons, and the RunConfig built from the fields the user edited.

Field keys are "section.name" of RunConfig (training.learning_rate, lora.r, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftwiz.core.config import RunConfig, config_from_dict
from ftwiz.core.models import DEFAULT_TARGETS, TARGETS_REASON

LORA_FIELDS = frozenset({"r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "use_dora"})

NOT_CONFIG_FIELDS = frozenset({"training.precision", "training.effective_batch_size"})
"""Recommended values that are not RunConfig fields: precision becomes bf16/fp16, the effective
batch is micro-batch x accumulation."""


SECTION_OF = {"r": "lora", "lora_alpha": "lora", "lora_dropout": "lora", "attn_implementation": "model"}
"""RunConfig section of a plan's hyperparameter that is not a training field."""


def tokenizer_for(model_spec: str | None, trust_remote_code: bool = False) -> Any:
    """The tokenizer the model will train with, when it is on this machine; None: the Data step
    counts words instead."""
    from ftwiz.core.demo import DEMO_DATA, build_tokenizer

    if model_spec == DEMO_DATA:
        return build_tokenizer()
    if model_spec and (Path(model_spec).expanduser() / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_spec, trust_remote_code=trust_remote_code)
    return None


def demo_values(keys: list[str], data_stats: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The demo's own values for the given field keys, each with the same reason.

    With the user's own data (data_stats of the Data step), max_length follows that data, as it
    does for any other model: the demo's 64 fits only the demo's dates."""
    from ftwiz.core.demo import demo_config

    demo = demo_config()
    values = {key: getattr(getattr(demo, key.split(".")[0]), key.split(".")[1]) for key in keys}
    values["lora.target_modules"] = "all-linear"
    why = "the demo's tuned value: a tiny model learns in ~1 minute on the CPU"
    reasons = {key: why for key in keys}
    reasons["training.num_train_epochs"] = f"unused: the demo stops after max_steps {demo.training.max_steps}"
    suggested = (data_stats or {}).get("suggested_max_length")
    if suggested and "training.max_length" in keys:
        values["training.max_length"] = int(suggested)
        reasons["training.max_length"] = f"from your data: {data_stats.get('suggested_reason', 'fits its rows')}"
    return values, reasons


def recommended_values(recommended: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """A plan's (or recommend_hyperparams') {name: {"value", "reason", "guide"}} as field values and
    reasons; a reason ends with the guide's own figure where the guide gives one."""
    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for name, rec in recommended.items():
        key = ("lora." if name in LORA_FIELDS else "model." if name == "attn_implementation" else "training.") + name
        guide = rec.get("guide")
        values[key] = rec["value"]
        reasons[key] = rec["reason"] + (f" [guide: {guide}]" if guide and guide not in rec["reason"] else "")
    if "lora.target_modules" not in values:  # full fine-tuning: no LoRA fields
        values["lora.target_modules"], reasons["lora.target_modules"] = DEFAULT_TARGETS, TARGETS_REASON
    return values, reasons


def target_modules(info: Any, preset: str) -> list[str] | str:
    """A targets preset as module names for the model (without one: all-linear or q, k, v, o)."""
    if preset == "all-linear":  # peft's own shorthand: it alone reaches fused MoE expert weights
        return "all-linear"
    if info is None:
        return ["q_proj", "k_proj", "v_proj", "o_proj"]
    from ftwiz.core.models import resolve_targets

    return resolve_targets(info, preset)


def settings_config(
    values: dict[str, Any],
    *,
    method: str,
    model_spec: str | None,
    data_spec: str | None,
    trust_remote_code: bool = False,
    info: Any = None,
    plan: Any = None,
    demo: bool = False,
    precision_chosen: bool = True,
    drop_invalid: bool = False,
) -> RunConfig:
    """The RunConfig from the Settings fields over the demo's config, or over the plan's (packing,
    kernels, scheduler: what the plan adds beyond the fields). Raises UserError when invalid.

    `precision_chosen`: the values carry a recommended training.precision (else fp32).
    `drop_invalid`: the Data step's choice to train on the usable rows only."""
    if demo:
        from ftwiz.core.demo import DEMO_DATA, demo_config_dict, demo_model_dir

        data = demo_config_dict(demo_model_dir())
        if data_spec and data_spec != DEMO_DATA:  # the demo model on the user's own data
            data["data"] = {"path": data_spec, "eval_fraction": data["data"]["eval_fraction"]}
    else:
        data = {
            "method": method,
            "model": {"name_or_path": model_spec, "trust_remote_code": trust_remote_code},
            "data": {"path": data_spec, "drop_invalid": drop_invalid},
            "training": {},
            "lora": {},
        }
        if plan is not None:
            planned = plan.to_config(data_path=data_spec).model_dump(mode="json")
            data["training"] = planned["training"]
            data["quantization"] = planned["quantization"]
        precision = precision_chosen and values.get("training.precision")
        data["training"]["bf16"] = precision == "bf16"
        data["training"]["fp16"] = precision == "fp16"
    for key, value in values.items():
        section, name = key.split(".")
        if key in NOT_CONFIG_FIELDS:
            continue
        if key == "lora.target_modules":
            value = target_modules(info, value)
        if method == "full" and section == "lora":
            continue
        data.setdefault(section, {})[name] = value
    return config_from_dict(data, source="settings")
