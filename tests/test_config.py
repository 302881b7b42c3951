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
        ("training", {"fsdp": "full_shard auto_wrap"}, "training.fsdp: the option string is transformers' deprecated"),
        ("training", {"fsdp": True, "fsdp_config": {"use_orig_params": True}},
         "training.fsdp_config.use_orig_params: unknown key"),
        ("training", {"fsdp": True, "fsdp_config": {"version": 1}}, "training.fsdp_config.version"),
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


# -- FSDP: transformers 5's own fields, fsdp=True + fsdp_config -------------------------------------
FSDP_FULL = {**MINIMAL, "method": "full", "training": {
    "fsdp": True, "gradient_checkpointing": True,
    "fsdp_config": {"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]},
}}


def test_fsdp_round_trips_and_maps_onto_sft_config(tmp_path, monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from trl import SFTConfig

    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # TrainingArguments sets it: undone after

    config = config_from_dict(FSDP_FULL)
    assert load_config(config.save(tmp_path / "c.yaml")) == config
    kwargs = config.training_kwargs()
    assert kwargs["fsdp"] is True
    # Checkpointing is FSDP's own under FSDP (transformers refuses both at once).
    assert kwargs["gradient_checkpointing"] is False and kwargs["fsdp_config"]["activation_checkpointing"] is True
    assert "transformer_layer_cls_to_wrap" in kwargs["fsdp_config"]
    sft = SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, **kwargs)
    assert sft.fsdp is True and not sft.gradient_checkpointing
    plugin_args = sft.fsdp_plugin_args
    assert plugin_args["fsdp_version"] == 2 and plugin_args["reshard_after_forward"] is True
    assert plugin_args["activation_checkpointing"] is True and plugin_args["state_dict_type"] == "FULL_STATE_DICT"
    assert plugin_args["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    # What the Trainer hands accelerate (builds on the CPU, no process group needed).
    plugin = FullyShardedDataParallelPlugin(**plugin_args)
    assert plugin.fsdp_version == 2 and plugin.activation_checkpointing


def test_fsdp_off_passes_nothing_and_unset_config_takes_the_defaults():
    plain = config_from_dict(MINIMAL).training_kwargs()
    assert "fsdp" not in plain and "fsdp_config" not in plain
    on = config_from_dict({**MINIMAL, "method": "full", "training": {"fsdp": True}}).training_kwargs()
    assert on["fsdp_config"]["reshard_after_forward"] is True and on["fsdp_config"]["version"] == 2
    assert "transformer_layer_cls_to_wrap" not in on["fsdp_config"]  # the model's own _no_split_modules
    assert config_from_dict({**MINIMAL, "training": {"fsdp": ""}}).training.fsdp is False


def test_qlora_with_fsdp_is_refused_in_one_line(tmp_path, capsys):
    from ftwiz.cli.main import main

    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "method": "qlora", "training": {"fsdp": True}}))
    with pytest.raises(UserError, match=r"training\.fsdp: not with method: qlora") as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: training.fsdp:") and "\n" not in str(caught.value)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training.fsdp" in err and "Traceback" not in err


def test_accumulation_is_divided_across_gpus_so_the_effective_batch_stays():
    from ftwiz.core.config import TrainingSection

    assert TrainingSection.accumulation_per_gpu(8, 1) == (8, None)
    assert TrainingSection.accumulation_per_gpu(8, 2) == (4, None)  # 4 rows x 2 GPUs = the planned 8
    assert TrainingSection.accumulation_per_gpu(8, 8) == (1, None)
    per, note = TrainingSection.accumulation_per_gpu(3, 2)
    assert per == 2 and "x 4 instead of x 3" in note
    per, note = TrainingSection.accumulation_per_gpu(1, 4)
    assert per == 1 and "x 4 instead of x 1" in note
