"""Config checks that need the model and the machine: context length, method vs hardware,
pickle weights, remote code. Each failure names the field."""

from __future__ import annotations

import json

import pytest

from ftwiz.core.checks import preflight
from ftwiz.core.config import config_from_dict
from ftwiz.core.errors import UserError
from ftwiz.core.hardware import GPU, Hardware
from ftwiz.core.models import load_model_info

GIB = 2**30


def _hardware(*gpus: GPU) -> Hardware:
    return Hardware(list(gpus), 2, "cpu", 24 * GIB, 20 * GIB, 100 * GIB, "ok" if gpus else "no-gpu", "")


CPU = _hardware()
H200 = _hardware(GPU(0, "NVIDIA H200", "GPU-0", 141 * GIB, bf16=True, compute_capability=(9, 0)))
T4 = _hardware(GPU(0, "Tesla T4", "GPU-0", 15 * GIB, bf16=False, compute_capability=(7, 5)))
RTX4090 = _hardware(GPU(0, "NVIDIA GeForce RTX 4090", "GPU-0", 24 * GIB, bf16=True, compute_capability=(8, 9)))


def _config(model="llama-3.2-1b", method="lora", **training):
    return config_from_dict(
        {"method": method, "model": {"name_or_path": model}, "data": {"path": "d.jsonl"}, "training": training}
    )


def test_a_plain_lora_plan_passes():
    info = load_model_info("llama-3.2-1b")
    assert preflight(_config(bf16=True), H200, info) == []


def test_sequence_longer_than_the_models_context():
    info = load_model_info("gpt2")
    with pytest.raises(UserError, match=r"training\.max_length: 4096 .*context \(1024"):
        preflight(_config("gpt2", max_length=4096), H200, info)


def test_qlora_and_half_precision_need_a_gpu():
    info = load_model_info("llama-3.2-1b")
    with pytest.raises(UserError, match="method: qlora needs an NVIDIA GPU"):
        preflight(_config(method="qlora"), CPU, info)
    with pytest.raises(UserError, match=r"training\.bf16: mixed precision needs a GPU"):
        preflight(_config(bf16=True), CPU, info)


def test_bf16_on_a_gpu_without_it():
    with pytest.raises(UserError, match=r"training\.bf16: Tesla T4 has no bf16"):
        preflight(_config(bf16=True), T4, load_model_info("llama-3.2-1b"))


def test_full_fine_tuning_that_cannot_fit_suggests_lora():
    info = load_model_info("llama-3.1-8b")
    with pytest.raises(UserError, match="method: full of llama-3.1-8b needs at least .* GiB.*use method: lora"):
        preflight(_config("llama-3.1-8b", method="full", bf16=True), RTX4090, info)
    preflight(_config("llama-3.1-8b", method="qlora", bf16=True), RTX4090, info)


def test_unknown_target_names_the_config_field():
    config = config_from_dict(
        {"model": {"name_or_path": "llama-3.2-1b"}, "data": {"path": "d"}, "lora": {"target_modules": ["c_attn"]}}
    )
    with pytest.raises(UserError, match=r"lora\.target_modules: c_attn: no such linear module"):
        preflight(config, H200, load_model_info("llama-3.2-1b"))


def _model_dir(tmp_path, weights: str, **config):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    (path / weights).write_bytes(b"\0")
    return path


def test_pickle_weights_are_refused_unless_allowed(tmp_path):
    path = _model_dir(tmp_path, "pytorch_model.bin")
    with pytest.raises(UserError, match="model.allow_pickle: .*pytorch_model.bin"):
        preflight(_config(str(path)), CPU, None)
    allowed = config_from_dict(
        {"model": {"name_or_path": str(path), "allow_pickle": True}, "data": {"path": "d"}}
    )
    assert "pickle" in preflight(allowed, CPU, None)[0]


def test_remote_code_is_refused_unless_trusted(tmp_path):
    path = _model_dir(tmp_path, "model.safetensors", auto_map={"AutoModelForCausalLM": "modeling_x.X"})
    with pytest.raises(UserError, match="model.trust_remote_code: .*ships its own Python code"):
        preflight(_config(str(path)), CPU, None)
    trusted = config_from_dict({"model": {"name_or_path": str(path), "trust_remote_code": True}, "data": {"path": "d"}})
    assert "will run with your permissions" in preflight(trusted, CPU, None)[0]


def test_full_fine_tuning_that_needs_fsdp_is_checked_sharded():
    """Two A100 80GB (the synthesized recording): a full copy of the 8B model with AdamW cannot fit
    one; sharded over both it can. The error says which field would change that."""
    from pathlib import Path

    from ftwiz.core.hardware import RecordedBackend, detect_hardware

    two_a100 = detect_hardware(RecordedBackend(Path(__file__).parent / "fixtures" / "gpus" / "synthetic-2x-a100.json"))
    info = load_model_info("llama-3.1-8b")
    with pytest.raises(UserError, match=r"method: full of .* set training\.fsdp: true to shard it"):
        preflight(_config("llama-3.1-8b", method="full", bf16=True, max_length=512), two_a100, info)
    assert preflight(_config("llama-3.1-8b", method="full", bf16=True, max_length=512, fsdp=True), two_a100, info) == []
    with pytest.raises(UserError, match=r"needs at least .* sharded over 2 GPUs \(FSDP\)"):
        preflight(_config("llama-3.1-70b", method="full", bf16=True, max_length=512, fsdp=True), two_a100,
                  load_model_info("llama-3.1-70b"))
