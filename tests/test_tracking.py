"""training.report_to: the trackers transformers supports, checked before a run, shown on the dashboard."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from helpers_engine import start, tiny_model_dir, wait_state, write_data
from helpers_runs import HostApp, make_run, wait_for

from ftwiz.core import tracking
from ftwiz.core.config import config_from_dict
from ftwiz.core.errors import UserError

TENSORBOARD = importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")


@pytest.mark.slow
@pytest.mark.skipif(not TENSORBOARD, reason="needs tensorboardX (in the test extra) or tensorboard installed")
def test_demo_with_tensorboard_writes_event_files(tmp_path_factory, tmp_path):
    data = write_data(tmp_path / "dates.jsonl", n=48)
    run = start(tiny_model_dir(tmp_path_factory), data, tmp_path / "runs", name="tb", max_steps=4,
                report_to="tensorboard", probe=False)
    assert wait_state(run, {"finished", "failed", "crashed"}) == "finished", run.log_path.read_text()[-2000:]
    files = list((run.path / "tensorboard").rglob("events.out.tfevents.*"))
    assert files and all(f.stat().st_size > 0 for f in files)
    assert [e for e in run.iter_events() if e["type"] == "step"]  # ftwiz's own events are still written


def test_report_to_accepts_the_trackers_and_names_the_field_otherwise():
    base = {"model": {"name_or_path": "m"}, "data": {"path": "demo"}}
    for name in tracking.TRACKERS:
        assert config_from_dict({**base, "training": {"report_to": name}}).training.report_to == name
    assert config_from_dict(base).training.report_to == "none"
    with pytest.raises(UserError, match="training.report_to"):
        config_from_dict({**base, "training": {"report_to": "comet"}})


def test_preflight_says_when_the_tracker_is_not_installed(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UserError, match=r"report_to: mlflow is not installed; pip install mlflow"):
        tracking.check_tracker("mlflow")
    tracking.check_tracker("none")


def test_preflight_says_when_wandb_is_not_logged_in(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else real(name, *a))
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    assert "wandb login" in tracking.tracker_problem("wandb", {"NETRC": str(netrc)})
    assert tracking.tracker_problem("wandb", {"NETRC": str(netrc), "WANDB_API_KEY": "x"}) is None
    netrc.write_text("machine api.wandb.ai login user password secret\n")
    netrc.chmod(0o600)
    assert tracking.tracker_problem("wandb", {"NETRC": str(netrc)}) is None


def test_train_refuses_a_missing_tracker_in_one_line(tmp_path_factory, tmp_path, monkeypatch, capsys):
    from helpers_engine import config_dict

    from ftwiz.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    config = config_dict(tiny_model_dir(tmp_path_factory), write_data(tmp_path / "d.jsonl"), report_to="trackio")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--runs-dir", str(tmp_path / "runs"), "train", str(path)]) == 2
    err = capsys.readouterr().err.strip()  # (the tiny model's first build may print a progress bar first)
    assert "Traceback" not in err and err.splitlines()[-1].startswith("ftwiz: training.report_to: trackio is not installed")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_file_trackers_write_inside_the_run(tmp_path):
    env = tracking.tracker_env(tmp_path / "r", "tensorboard", {})
    assert env == {"TENSORBOARD_LOGGING_DIR": str((tmp_path / "r" / "tensorboard").resolve())}
    assert tracking.tracker_env(tmp_path / "r", "tensorboard", {"TENSORBOARD_LOGGING_DIR": "/x"}) == {
        "TENSORBOARD_LOGGING_DIR": "/x"}
    assert tracking.tracker_env(tmp_path / "r", "mlflow", {})["MLFLOW_TRACKING_URI"].startswith("file://")
    assert tracking.tracker_env(tmp_path / "r", "none", {}) == {}


async def test_dashboard_shows_where_the_logs_go(tmp_path):
    from ftwiz.screens.train import TrainScreen

    run = make_run(tmp_path, state="finished")
    config = yaml.safe_load(run.config_path.read_text())
    config["training"]["report_to"] = "tensorboard"
    run.config_path.write_text(yaml.safe_dump(config))
    screen = TrainScreen(run, gpu_sampler=None, poll_interval_s=0.02, sample_interval_s=0.05)
    async with HostApp(screen).run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: screen.query("#run-tracker"))
        text = str(screen.query_one("#run-tracker").content)
        assert "TensorBoard" in text and str(run.path.resolve() / "tensorboard") in text
    plain = make_run(tmp_path / "b", state="finished")
    screen = TrainScreen(plain, gpu_sampler=None, poll_interval_s=0.02, sample_interval_s=0.05)
    async with HostApp(screen).run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.1)
        assert not screen.query("#run-tracker")
