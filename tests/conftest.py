"""Shared fixtures: no network, ever; tiny models built locally; plans independent of optional extras."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(autouse=True)
def liger_not_installed(monkeypatch):
    """Plans do not depend on what this venv happens to have: the planner recommends Liger
    (and its smaller memory estimate) only when liger-kernel, an optional extra, is importable,
    so a venv with `.[speed]` planned other batches and lengths than the expectations and
    snapshots (written without it). Tests about Liger set recommend.liger_available themselves."""
    from ftwiz.core import recommend

    monkeypatch.setattr(recommend, "liger_available", lambda: False)
