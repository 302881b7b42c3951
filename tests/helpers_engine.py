"""Engine test helpers: the demo's tiny Llama as the test model, small date data, polling.

Runs are real `python -m ftwiz.core.engine` processes started by start_run; faults are
injected through the FTWIZ_FAULT_* variables of ftwiz.core.engine.faults.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from ftwiz.core import demo
from ftwiz.core.config import config_from_dict
from ftwiz.core.runs import RunDir

FAKE_TOKEN = "hf_FAKEtokenFTWIZ0123456789abcdefXYZ"


def write_data(path: Path, n: int = 96) -> Path:
    return demo.write_rows(path, demo.demo_rows(n, seed=5))


def config_dict(model_dir: Path, data_path: Path, name: str = "t", **training: Any) -> dict[str, Any]:
    limits = training.pop("limits", {})
    output = training.pop("output", {"samples": 0})
    model = training.pop("model", {})
    lora = training.pop("lora", {})
    return {
        "name": name,
        "method": "lora",
        "model": {"name_or_path": str(model_dir), **model},
        "data": {"path": str(data_path), "eval_fraction": 0.1},
        "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear", **lora},
        "training": {
            "learning_rate": 5e-3,
            "max_steps": 8,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "warmup_ratio": 0.0,
            "gradient_checkpointing": False,
            "max_length": 64,
            "logging_steps": 1,
            "save_steps": 4,
            "save_total_limit": 2,
            **training,
        },
        "limits": limits,
        "output": output,
    }


def start(
    model_dir: Path, data_path: Path, runs_dir: Path, name: str = "t", env: dict | None = None, method: str = "lora", **training: Any
) -> RunDir:
    from ftwiz.core.engine.launch import start_run

    config = config_from_dict({**config_dict(model_dir, data_path, name, **training), "method": method})
    return start_run(config, runs_dir, env=env)


def wait_for(predicate: Callable[[], Any], timeout: float = 90.0, what: str = "condition", run: RunDir | None = None) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    log = run.log_path.read_text(errors="replace")[-3000:] if run is not None and run.log_path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{log}")


def wait_state(run: RunDir, states: set[str], timeout: float = 240.0) -> str:
    return wait_for(lambda: run.state() if run.state() in states else None, timeout, f"state in {states}", run)


def events(run: RunDir, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in run.iter_events() if kind is None or e["type"] == kind]


def step_events_after(run: RunDir, marker: str) -> list[dict[str, Any]]:
    """Step events after the last event of type `marker` (e.g. 'resumed')."""
    all_events = events(run)
    last = max((i for i, e in enumerate(all_events) if e["type"] == marker), default=-1)
    return [e for e in all_events[last + 1 :] if e["type"] == "step"]


def complete_steps(run: RunDir) -> list[int]:
    from ftwiz.core.engine.checkpoints import checkpoint_step, complete_checkpoints

    return [checkpoint_step(p) for p in complete_checkpoints(run.checkpoints_dir)]


def kill9(run: RunDir) -> None:
    pid = run.read_status()["pid"]
    os.killpg(os.getpgid(pid), 9)
    wait_for(lambda: run.state() == "crashed", 10, "crashed after kill -9", run)


def dump(run: RunDir) -> str:
    return json.dumps(events(run), indent=1)[-4000:]


def tiny_model_dir(tmp_path_factory: Any) -> Path:
    """The demo's tiny Llama, built once per test session (later calls find it on disk)."""
    return demo.ensure_demo_model(tmp_path_factory.getbasetemp() / "ftwiz-models")
