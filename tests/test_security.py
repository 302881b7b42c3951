"""Security: no escape from the runs directory, private files, no pickle and no remote code by default.

The token check (a fake HF_TOKEN in a real run's environment, grepped for in every file the run
wrote, the pickled training_args.bin included) is test_engine.py::test_token_is_never_written_anywhere.
"""

from __future__ import annotations

import os
import stat

import pytest
from helpers_engine import config_dict, tiny_model_dir, write_data

from ftwiz.cli.main import main
from ftwiz.core.config import config_from_dict
from ftwiz.core.engine.launch import start_run
from ftwiz.core.errors import UserError
from ftwiz.core.runs import check_run_name, create_run_dir, list_runs, open_run


@pytest.mark.parametrize("name", ["..", "../x", "/etc", "a/b", ".hidden", "x/../../y", "", "a" * 101])
def test_run_names_cannot_escape(name, tmp_path):
    with pytest.raises(UserError):
        check_run_name(name)
    with pytest.raises(UserError):
        create_run_dir(tmp_path / "runs", name)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_refuses_escaping_run_refs(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    outside = create_run_dir(tmp_path / "elsewhere", "victim")
    outside.config_path.write_text("name: victim\n")
    outside.write_status(state="finished")
    (runs / "link").symlink_to(outside.path)
    for ref in ("../elsewhere/victim", str(outside.path), "link"):
        assert main(["--runs-dir", str(runs), "stop", ref]) == 2, ref
        capsys.readouterr()
    with pytest.raises(UserError, match="outside the runs directory"):
        open_run("link", runs)
    assert list_runs(runs) == []  # a symlinked run is not listed either


def test_symlink_in_place_of_a_new_run_dir_is_not_followed(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (runs / "mine").symlink_to(target)
    run = create_run_dir(runs, "mine")
    assert run.path == runs / "mine-2" and not any(target.iterdir())


def test_run_files_are_created_private(tmp_path):
    run = create_run_dir(tmp_path, "p")
    run.write_status(state="running")
    run.emit("warning", message="x")
    for path in (run.path, run.status_path, run.events_path):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_pickle_weights_are_refused_unless_allowed(tmp_path_factory, tmp_path):
    import shutil

    model = tiny_model_dir(tmp_path_factory)
    pickled = tmp_path / "pickled"
    shutil.copytree(model, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    data = write_data(tmp_path / "d.jsonl")
    runs = tmp_path / "runs"
    with pytest.raises(UserError, match="allow_pickle"):
        start_run(config_from_dict(config_dict(pickled, data)), runs)
    assert not runs.exists()  # nothing written


def test_engine_loads_safetensors_only_and_no_remote_code_by_default(monkeypatch):
    """What the run process passes to from_pretrained, captured."""
    import transformers

    from ftwiz.core.engine.process import load_model

    seen = {}

    class Stop(Exception):
        pass

    def fake_from_pretrained(name, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    config = config_from_dict({"model": {"name_or_path": "m"}, "data": {"path": "d"}})
    assert config.model.trust_remote_code is False and config.model.allow_pickle is False
    with pytest.raises(Stop):
        load_model(config, "fp32", cuda=False)
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False
    opted = config_from_dict({"model": {"name_or_path": "m", "trust_remote_code": True, "allow_pickle": True}, "data": {"path": "d"}})
    seen.clear()
    with pytest.raises(Stop):
        load_model(opted, "fp32", cuda=False)
    assert "use_safetensors" not in seen and seen["trust_remote_code"] is True


def test_config_yaml_holds_no_token(tmp_path_factory, tmp_path, monkeypatch):
    from helpers_engine import FAKE_TOKEN

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr("ftwiz.core.engine.launch.launch", lambda run, **kw: run)  # no process: files only
    model = tiny_model_dir(tmp_path_factory)
    run = start_run(config_from_dict(config_dict(model, write_data(tmp_path / "d.jsonl"))), tmp_path / "runs")
    for path in run.path.rglob("*"):
        assert FAKE_TOKEN not in path.read_text(errors="replace")
    assert os.stat(run.config_path).st_mode & 0o077 == 0
