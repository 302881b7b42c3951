"""A finished demo run with merged/, for the after-training tests (export, chat, push).

Trained for real (the engine in its own process) on the demo's dates, long enough that the
model's greedy answers are confident, so a GGUF round trip can be compared token for token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers_engine import start, wait_state, write_data

from ftwiz.core.runs import RunDir


def trained_run(model_dir: Path, root: Path, name: str = "after", **training: Any) -> RunDir:
    data = write_data(root / "dates.jsonl", n=160)
    settings = {"max_steps": 40, "per_device_train_batch_size": 8, "save_steps": 40,
                "output": {"samples": 0, "merge": True}, **training}
    run = start(model_dir, data, root / "runs", name=name, **settings)
    state = wait_state(run, {"finished", "failed", "crashed"})
    assert state == "finished", run.log_path.read_text(errors="replace")[-3000:]
    return run
