"""Experiment trackers a run can report to (training.report_to), through transformers' own callbacks.

ftwiz's events.jsonl stays the source of truth; a tracker gets a copy of the Trainer's logs.
This module says whether the chosen tracker can work before a run starts (installed, logged
in), sets where its logs go (the run directory where the tracker writes files), and tells the
dashboard and the CLI where to look.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from ftwiz.core.errors import UserError

Tracker = Literal["none", "tensorboard", "trackio", "wandb", "mlflow"]
TRACKERS: tuple[str, ...] = ("none", "tensorboard", "trackio", "wandb", "mlflow")
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "wandb": ("wandb",),
             "mlflow": ("mlflow",)}


def tracker_problem(report_to: str, environ: Mapping[str, str] | None = None) -> str | None:
    """One line when the tracker cannot work here (not installed, not logged in), else None."""
    environ = os.environ if environ is None else environ
    if report_to == "none":
        return None
    if not any(importlib.util.find_spec(name) for name in _PACKAGES[report_to]):
        return f"training.report_to: {report_to} is not installed; pip install {report_to} (or set report_to: none)"
    if report_to == "wandb" and not _wandb_logged_in(environ):
        return ("training.report_to: wandb is not logged in; run `wandb login`, set WANDB_API_KEY, or "
                "WANDB_MODE=offline (or set report_to: none)")
    return None


def _wandb_logged_in(environ: Mapping[str, str]) -> bool:
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return True
    try:
        path = environ.get("NETRC") or str(Path.home() / ".netrc")
        return netrc.netrc(path).authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_tracker(report_to: str) -> None:
    """Pre-flight: refuse a run whose tracker would fail (or prompt for a login) at its first step."""
    problem = tracker_problem(report_to)
    if problem:
        raise UserError(problem)


def tracker_env(run_path: Path, report_to: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables for the run process: file-based trackers write inside the run directory,
    unless the user already points them elsewhere."""
    environ = os.environ if environ is None else environ
    run_path = Path(run_path).resolve()
    env: dict[str, str] = {}
    if report_to == "tensorboard":
        env["TENSORBOARD_LOGGING_DIR"] = environ.get("TENSORBOARD_LOGGING_DIR") or str(run_path / "tensorboard")
    elif report_to == "mlflow":
        env["MLFLOW_TRACKING_URI"] = environ.get("MLFLOW_TRACKING_URI") or (run_path / "mlruns").as_uri()
        env["MLFLOW_EXPERIMENT_NAME"] = environ.get("MLFLOW_EXPERIMENT_NAME") or "ftwiz"
        env["MLFLOW_RUN_NAME"] = environ.get("MLFLOW_RUN_NAME") or run_path.name
    elif report_to == "wandb":
        env["WANDB_DIR"] = environ.get("WANDB_DIR") or str(run_path)
        env["WANDB_PROJECT"] = environ.get("WANDB_PROJECT") or "ftwiz"
        env["WANDB_NAME"] = environ.get("WANDB_NAME") or run_path.name
    return env


def where_logs_go(run_path: Path, report_to: str, environ: Mapping[str, str] | None = None) -> str | None:
    """One line for the dashboard and `ftwiz train`: where the tracker's copy of the logs is."""
    env = tracker_env(run_path, report_to, environ)
    environ = os.environ if environ is None else environ
    if report_to == "tensorboard":
        return f"TensorBoard: {env['TENSORBOARD_LOGGING_DIR']}  (tensorboard --logdir {env['TENSORBOARD_LOGGING_DIR']})"
    if report_to == "mlflow":
        return f"MLflow: {env['MLFLOW_TRACKING_URI']}, experiment {env['MLFLOW_EXPERIMENT_NAME']}  (mlflow ui)"
    if report_to == "wandb":
        offline = environ.get("WANDB_MODE") in ("offline", "dryrun")
        where = f"{env['WANDB_DIR']}/wandb (offline; wandb sync to upload)" if offline else "wandb.ai"
        return f"Weights & Biases: project {env['WANDB_PROJECT']}, run {env['WANDB_NAME']} on {where}"
    if report_to == "trackio":
        return "Trackio: project huggingface, stored locally  (trackio show)"
    return None
