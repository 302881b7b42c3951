"""The run config: YAML round trip, field-naming errors, and the libraries' own objects."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftwiz.core.config import RunConfig, config_from_dict, load_config
from ftwiz.core.errors import UserError

MINIMAL = {"model": {"name_or_path": "llama-3.2-1b"}, "data": {"path": "train.jsonl"}}


def _with(section: str, **fields):
    data = {k: dict(v) for k, v in MINIMAL.items()}
    data.setdefault(section, {}).update(fields)
    return data


def test_yaml_round_trip(tmp_path):
    config = config_from_dict(_with("training", learning_rate=1e-4, packing=True))
    path = config.save(tmp_path / "c.yaml")
    assert load_config(path) == config


def test_maps_onto_peft_bitsandbytes_and_trl():
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig
    from trl import SFTConfig

    config = config_from_dict(_with("lora", r=8, lora_alpha=16, target_modules="all-linear"))
    lora = LoraConfig(**config.lora_kwargs())
    assert (lora.r, lora.lora_alpha, lora.target_modules) == (8, 16, "all-linear")
    bnb = BitsAndBytesConfig(**config.bnb_kwargs())
    assert bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    sft = SFTConfig(output_dir="/tmp/x", max_length=config.training.max_length, **config.training_kwargs())
    assert sft.learning_rate == config.training.learning_rate
    assert sft.gradient_accumulation_steps == config.training.gradient_accumulation_steps


@pytest.mark.parametrize(
    ("section", "fields", "expected"),
    [
        ("lora", {"r": 0}, "lora.r"),
        ("lora", {"r": -4}, "lora.r"),
        ("lora", {"target_modules": []}, "lora.target_modules"),
        ("training", {"learning_rate": 0}, "training.learning_rate"),
        ("training", {"learning_rate": 10}, "training.learning_rate"),
        ("training", {"per_device_train_batch_size": 0}, "training.per_device_train_batch_size"),
        ("training", {"max_length": "long"}, "training.max_length"),
        ("training", {"bf16": True, "fp16": True}, "bf16 and fp16"),
        ("training", {"learnign_rate": 1e-4}, "training.learnign_rate: unknown key"),
        ("model", {"trust_remote_code": "maybe"}, "model.trust_remote_code"),
    ],
)
def test_bad_fields_are_named(section, fields, expected):
    with pytest.raises(UserError, match=expected.replace(".", r"\.")):
        config_from_dict(_with(section, **fields))


def test_unknown_method_lists_the_allowed_ones():
    with pytest.raises(UserError, match="method.*'lora', 'qlora' or 'full'"):
        config_from_dict({**MINIMAL, "method": "dora"})


def test_missing_sections_and_top_level_garbage():
    with pytest.raises(UserError, match="data: required"):
        config_from_dict({"model": {"name_or_path": "x"}})
    with pytest.raises(UserError, match="expected a mapping"):
        config_from_dict(["not", "a", "mapping"])


def test_file_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="is a directory"):
        load_config(tmp_path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  name_or_path: x\n data: [\n")
    with pytest.raises(UserError, match=r"broken\.yaml:3"):
        load_config(broken)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("model: {name_or_path: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_config(latin)


_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(
    string.printable, max_size=12
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(string.ascii_lowercase + "_", max_size=12), inner, max_size=4), max_leaves=12)
_sections = st.sampled_from(["model", "data", "lora", "quantization", "training", "limits", "output", "method"])
_fields = st.sampled_from(
    ["name_or_path", "path", "r", "lora_alpha", "target_modules", "learning_rate", "max_length",
     "per_device_train_batch_size", "bf16", "fp16", "eval_fraction", "max_cost", "upcast", "bogus"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_sections, st.dictionaries(_fields, _values, max_size=4) | _values, max_size=6))
def test_any_input_gives_a_config_or_a_clear_error(data):
    try:
        config = config_from_dict(data)
    except UserError as exc:
        assert str(exc).startswith("config: ")
    else:
        assert isinstance(config, RunConfig)
        assert config_from_dict(yaml.safe_load(config.to_yaml())) == config


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_file_gives_a_config_or_a_clear_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except UserError as exc:
        assert str(path) in str(exc)
