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


class HubStandIn:
    """HfApi's two calls that reach the Hub over HTTP, recorded instead of sent."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        payload = {op.path_in_repo: (op.path_or_fileobj if isinstance(op.path_or_fileobj, (bytes, str)) else None)
                   for op in operations}
        self.calls.append(("create_commit", repo_id, {**kwargs, "files": payload}))


def stub_hub(monkeypatch: Any) -> HubStandIn:
    """HfApi.create_repo and create_commit answered by a HubStandIn; the Hub counted as reachable.
    Everything above them (ftwiz's push, huggingface_hub's token lookup) runs for real."""
    from huggingface_hub import HfApi

    import ftwiz.core.hub

    stand_in = HubStandIn()
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: stand_in.create_repo(repo_id, **kw))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, **kw:
                        stand_in.create_commit(repo_id, operations, **kw))
    monkeypatch.setattr(ftwiz.core.hub, "hub_reachable", lambda: True)
    return stand_in


def no_token(monkeypatch: Any, home: Path) -> None:
    """No HF_TOKEN and no stored token: huggingface_hub's lookup finds nothing."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))


def fake_merged(run: RunDir, parameters: int = 1000) -> None:
    """merged/ with a config.json and one safetensors file of `parameters` zeros: enough for the
    export's size estimate and its checks, not a model anything can load."""
    import numpy as np
    from safetensors.numpy import save_file

    run.merged_dir.mkdir(parents=True, exist_ok=True)
    (run.merged_dir / "config.json").write_text("{}")
    save_file({"w": np.zeros(parameters, dtype=np.float32)}, str(run.merged_dir / "model.safetensors"))
