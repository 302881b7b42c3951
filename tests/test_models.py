"""Model specs, the bundled catalog, shape manifests and LoRA target discovery."""

from __future__ import annotations

import json

import pytest

from ftwiz.core import models
from ftwiz.core.errors import UserError
from ftwiz.core.models import TARGET_PRESETS, catalog_names, load_model_info, resolve_targets

from helpers_models import tiny_config, write_model_dir

REQUIRED_CATALOG = [
    "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b",
    "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-72b",
    "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b",
    "mistral-7b-v0.3", "gemma-2-2b", "gemma-2-9b", "gemma-3-1b", "gemma-3-4b", "gemma-3-12b",
    "phi-3-mini", "phi-4", "smollm2-135m", "smollm2-360m", "smollm2-1.7b", "gpt2", "pythia-160m",
]

# Parameter counts the model cards and the Hub's safetensors metadata publish.
PUBLISHED_TOTALS = {
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.2-1b": 1_235_814_400,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-0.5b": 494_032_768,
    "mistral-7b-v0.3": 7_248_023_552,
    "gemma-2-2b": 2_614_341_888,
    "phi-3-mini": 3_821_079_552,
    "gpt2": 124_439_808,
}


@pytest.fixture(autouse=True)
def shapes_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "ftwiz" / "shapes"


def test_catalog_holds_the_promised_models():
    assert set(REQUIRED_CATALOG) <= set(catalog_names())


@pytest.mark.parametrize("name,total", sorted(PUBLISHED_TOTALS.items()))
def test_catalog_totals_match_published_counts(name, total):
    info = load_model_info(name)
    assert info.total_params == total
    assert info.size_on_disk_bytes == 2 * total


@pytest.mark.parametrize("name", ["llama-3.2-1b", "gemma-3-1b", "phi-3-mini", "gpt2", "pythia-160m"])
def test_catalog_manifest_equals_fresh_meta_device_computation(name):
    stored = json.loads((models.CATALOG_DIR / f"{name}.json").read_text())
    fresh = models.compute_manifest(stored["config"])
    assert {k: stored[k] for k in fresh} == fresh


def test_catalog_fields_and_gating():
    info = load_model_info("llama-3.1-8b")
    assert (info.source, info.model_type, info.architecture) == ("catalog", "llama", "LlamaForCausalLM")
    assert (info.hidden_size, info.num_layers, info.intermediate_size) == (4096, 32, 14336)
    assert (info.num_attention_heads, info.num_key_value_heads, info.head_dim) == (32, 8, 128)
    assert (info.vocab_size, info.max_position_embeddings, info.tie_word_embeddings) == (128256, 131072, False)
    assert load_model_info("llama-3.2-1b").tie_word_embeddings is True
    for name in catalog_names():
        gated = load_model_info(name).gated
        assert gated is name.startswith(("llama", "gemma", "mistral")), name


def test_gpt2_fields_come_from_its_own_config_names():
    info = load_model_info("gpt2")
    assert (info.hidden_size, info.num_layers, info.intermediate_size, info.max_position_embeddings) == (
        768, 12, 3072, 1024)


def test_hub_id_of_a_catalog_model_is_an_alias():
    for spec in ("meta-llama/Llama-3.1-8B", "LLAMA-3.1-8B"):
        info = load_model_info(spec)
        assert (info.name, info.source, info.total_params) == ("llama-3.1-8b", "catalog", 8_030_261_248)
        assert info.hub_id == "meta-llama/Llama-3.1-8B" and info.base is True


@pytest.mark.parametrize("spec", ["llama-3.1-8b-instruct", "meta-llama/llama-3.1-8b-instruct"])
def test_the_instruct_release_is_its_own_catalog_entry_and_loads_its_own_weights(spec):
    """The guide fine-tunes Llama-3.1-8B-Instruct: asking for it must not train the base checkpoint."""
    from ftwiz.core.engine.model_source import model_source

    info = load_model_info(spec)
    assert (info.name, info.hub_id, info.base) == ("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", False)
    assert info.total_params == load_model_info("llama-3.1-8b").total_params
    assert model_source(info.name) == "meta-llama/Llama-3.1-8B-Instruct"


def test_catalog_offers_base_and_instruct_where_both_exist():
    names = set(catalog_names())
    for name in ("llama-3.1-8b", "qwen2.5-7b", "qwen3-8b", "gemma-3-1b", "mistral-7b-v0.3"):
        assert {name, name + "-instruct"} <= names
        assert load_model_info(name).instruct_name == name + "-instruct"
    # already post-trained checkpoints get no second entry
    assert "phi-3-mini-instruct" not in names and "qwen3-32b-instruct" not in names
    assert load_model_info("qwen3-32b").base is False


def test_local_directory_computes_once_then_reads_the_cache(tmp_path, shapes_cache, monkeypatch):
    model_dir = write_model_dir(tmp_path / "tiny", "qwen2")
    info = load_model_info(str(model_dir))
    assert info.source == "local" and info.model_type == "qwen2"
    assert info.tie_word_embeddings is True
    assert len(list(shapes_cache.glob("*.json"))) == 1

    def no_recompute(config):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(models, "compute_manifest", no_recompute)
    again = load_model_info(model_dir / "config.json")
    assert again.linear_groups == info.linear_groups and again.total_params == info.total_params


def test_local_directory_with_weights_counts_what_the_weights_hold(tmp_path):
    from safetensors.torch import load_file

    model_dir = write_model_dir(tmp_path / "tiny", "llama", weights=True)
    on_disk = sum(t.numel() for t in load_file(model_dir / "model.safetensors").values())
    assert load_model_info(model_dir).total_params == on_disk


def test_hub_id_reads_config_from_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    snapshot = tmp_path / "hub" / "models--someorg--tiny-gpt2" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(tiny_config("gpt2")))
    refs = tmp_path / "hub" / "models--someorg--tiny-gpt2" / "refs"
    refs.mkdir()
    (refs / "main").write_text("a" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    info = load_model_info("someorg/tiny-gpt2")
    assert (info.source, info.hub_id, info.model_type) == ("hub", "someorg/tiny-gpt2", "gpt2")


@pytest.mark.parametrize("spec,words", [
    ("someorg/not-cached", ["someorg/not-cached", "offline", "local directory"]),
    ("no-such-model", ["no-such-model", "catalog"]),
    ("./missing/dir", ["missing/dir", "no such directory"]),
])
def test_bad_model_specs_are_user_errors(spec, words):
    with pytest.raises(UserError) as err:
        load_model_info(spec)
    assert all(w in str(err.value) for w in words)


def test_directory_without_config_and_unknown_model_type(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_model_info(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-real-arch", "hidden_size": 8}))
    with pytest.raises(UserError, match="not-a-real-arch"):
        load_model_info(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(UserError, match="not valid JSON"):
        load_model_info(tmp_path)


@pytest.mark.parametrize("name,minimal,attention,all_linear", [
    ("llama-3.1-8b", ["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"],
     ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    ("gpt2", ["c_attn"], ["c_attn", "attn.c_proj"], ["c_attn", "c_proj", "c_fc"]),
    ("pythia-160m", ["query_key_value"], ["query_key_value", "dense"],
     ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]),
    ("phi-3-mini", ["qkv_proj"], ["o_proj", "qkv_proj"], ["o_proj", "qkv_proj", "gate_up_proj", "down_proj"]),
])
def test_presets_per_architecture(name, minimal, attention, all_linear):
    info = load_model_info(name)
    assert resolve_targets(info, "minimal") == minimal
    assert resolve_targets(info, "attention") == attention
    assert resolve_targets(info, "all-linear") == all_linear
    assert "lm_head" not in resolve_targets(info, "all-linear")


def test_resolve_targets_forms_and_errors():
    info = load_model_info("llama-3.2-1b")
    assert resolve_targets(info, "q_proj, v_proj") == ["q_proj", "v_proj"]
    assert resolve_targets(info, ["o_proj", "q_proj", "o_proj"]) == ["o_proj", "q_proj"]
    with pytest.raises(UserError) as err:
        resolve_targets(info, "q_proj,qq_proj")
    assert "qq_proj" in str(err.value) and "gate_proj" in str(err.value)
    with pytest.raises(UserError, match="output head"):
        resolve_targets(info, "lm_head")
    with pytest.raises(UserError, match="empty"):
        resolve_targets(info, " , ")
    assert set(TARGET_PRESETS) == {"minimal", "attention", "all-linear"}


def test_multimodal_config_reports_its_language_model(tmp_path):
    info = load_model_info(write_model_dir(tmp_path / "mm", "gemma3"))
    assert (info.architecture, info.hidden_size, info.num_layers, info.vocab_size) == (
        "Gemma3ForConditionalGeneration", 48, 2, 300)
    assert "fc1" in info.linear_names()  # the vision tower's layers are targetable, as peft sees them


def test_a_typo_in_a_catalog_name_suggests_the_right_one():
    with pytest.raises(UserError, match="did you mean llama-3.1-8b"):
        load_model_info("lama-3.1-8b")


def test_a_config_transformers_rejects_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "llama", "hidden_size": -5}')
    with pytest.raises(UserError, match=r"m/config\.json: .*hidden size \(-5\)"):
        load_model_info(tmp_path / "m")
