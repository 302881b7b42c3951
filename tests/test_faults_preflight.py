"""Group 2 of the adversarial suite: every field the run hands to the libraries is checked first.

Each case is a config, model directory or dataset that the libraries would reject only once
the run process had started (a traceback in train.log, the CLI having said "started"). Here
`ftwiz train` refuses it in one line naming the field or file, exit 2, before the run
directory exists.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from helpers_engine import config_dict, tiny_model_dir, write_data

from ftwiz.cli.main import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def _train(tmp_path, capsys, config: dict) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    code = main(["--runs-dir", str(runs), "train", str(path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not runs.exists() or not list(runs.iterdir())  # nothing written
    return lines[0]


def _copy(model, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(model, target)
    return target


@pytest.mark.parametrize("section, field, value, named", [
    ("training", "optim", "bogus", "training.optim"),
    ("training", "optim", "adamw_torhc", "did you mean 'adamw_torch'"),
    ("training", "lr_scheduler_type", "bogus", "training.lr_scheduler_type"),
    ("model", "attn_implementation", "bogus", "model.attn_implementation"),
    ("training", "seed", -1, "training.seed"),
    ("training", "seed", 2**32, "training.seed"),
])
def test_fields_the_libraries_would_reject_are_refused_before_the_run(model, tmp_path, capsys, section, field, value, named):
    config = config_dict(model, write_data(tmp_path / "d.jsonl", 16))
    config[section][field] = value
    assert named in _train(tmp_path, capsys, config)


def test_the_enumerations_are_the_installed_libraries_own(model, tmp_path):
    """Every name the installed transformers accepts passes (and ftwiz's own varlen attention)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from ftwiz.core.checks import FTWIZ_ATTENTION, check_library_fields
    from ftwiz.core.config import config_from_dict
    from ftwiz.core.engine.attention import VARLEN

    assert FTWIZ_ATTENTION == (VARLEN,)
    base = config_dict(model, tmp_path / "d.jsonl")
    for optim in OptimizerNames:
        check_library_fields(config_from_dict({**base, "training": {**base["training"], "optim": optim.value}}))
    for scheduler in SchedulerType:
        check_library_fields(config_from_dict({**base, "training": {**base["training"], "lr_scheduler_type": scheduler.value}}))
    for attention in ["eager", VARLEN, *ALL_ATTENTION_FUNCTIONS.valid_keys()]:
        check_library_fields(config_from_dict({**base, "model": {**base["model"], "attn_implementation": attention}}))


def test_a_model_directory_without_weights_is_refused_without_advising_pickle(model, tmp_path, capsys):
    bare = _copy(model, tmp_path)
    for weights in bare.glob("*.safetensors"):
        weights.unlink()
    line = _train(tmp_path, capsys, config_dict(bare, write_data(tmp_path / "d.jsonl", 16)))
    assert "no weights" in line and "allow_pickle" not in line


@pytest.mark.parametrize("file", ["tokenizer_config.json", "config.json"])
def test_remote_code_asked_for_by_any_model_file_is_refused(model, tmp_path, capsys, file):
    remote = _copy(model, tmp_path)
    data = json.loads((remote / file).read_text())
    data["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None], "AutoConfig": "evil.EvilConfig"}
    (remote / file).write_text(json.dumps(data))
    line = _train(tmp_path, capsys, config_dict(remote, write_data(tmp_path / "d.jsonl", 16)))
    assert "model.trust_remote_code" in line and file in line


@pytest.mark.parametrize("shard, said", [("../outside.safetensors", "outside the model directory"),
                                         ("missing-00001.safetensors", "is missing")])
def test_a_safetensors_index_must_point_at_files_inside_the_model_directory(model, tmp_path, capsys, shard, said):
    sharded = _copy(model, tmp_path)
    (tmp_path / "outside.safetensors").write_bytes((sharded / "model.safetensors").read_bytes())
    index = {"metadata": {}, "weight_map": {"lm_head.weight": shard, "model.norm.weight": "model.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    line = _train(tmp_path, capsys, config_dict(sharded, write_data(tmp_path / "d.jsonl", 16)))
    assert said in line and "model.safetensors.index.json" in line


def test_a_lone_surrogate_in_the_data_is_refused_naming_the_line(model, tmp_path, capsys):
    data = write_data(tmp_path / "d.jsonl", 16)
    lines = data.read_text().splitlines()
    row = json.loads(lines[6])
    key = next(k for k, v in row.items() if isinstance(v, str))
    lines[6] = json.dumps({**row, key: "broken \udc80 text"})  # json.dumps writes the \udc80 escape
    data.write_text("\n".join(lines) + "\n")
    line = _train(tmp_path, capsys, config_dict(model, data))
    assert "d.jsonl:7" in line and "surrogate" in line
    assert main(["data", str(data)]) == 2
    assert "surrogate" in capsys.readouterr().out
