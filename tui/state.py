"""The wizard's choices so far: one plain object the steps read on mount and write on leave.

Screens are rebuilt whenever the user moves between steps, so everything a step must
remember lives here, never in a widget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEMO = "demo"

STEPS: list[tuple[str, str]] = [
    ("welcome", "Hardware"),
    ("decide", "Method"),
    ("model", "Model"),
    ("data", "Data"),
    ("settings", "Settings"),
    ("review", "Review"),
    ("train", "Train"),
]
"""(key, title) in wizard order; the header shows 'n/7' from this list."""


@dataclass
class WizardState:
    hardware: Any = None
    """ftwiz.core.hardware.Hardware, once detected."""
    answers: dict[str, Any] = field(default_factory=dict)
    """Answers to ftwiz.core.decision's questions, by question key."""
    method: str = "lora"
    model_spec: str | None = None
    """Catalog name, Hub id or local directory, as the user gave it."""
    model_info: Any = None
    """ftwiz.core.models.ModelInfo of model_spec (None for the demo or while loading)."""
    trust_remote_code: bool = False
    data_spec: str | None = None
    """Dataset file, Hub id or 'demo'."""
    drop_invalid: bool = False
    """Train on the usable rows only (data.drop_invalid), as chosen in the Data step."""
    n_examples: int | None = None
    """Rows in the dataset, once validated (drives the recommended hyperparameters)."""
    data_stats: dict[str, Any] | None = None
    """core.data token_stats of the validated dataset (drives max_length, time and cost)."""
    data_format: str | None = None
    """The validated dataset's format (alpaca, chat, ...): chat formats on a base model get a warning."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Settings the user edited, as 'section.field' -> value, applied over the plan."""
    config: Any = None
    """ftwiz.core.config.RunConfig built by the Settings step; Review shows and starts it."""
    demo: bool = False

    def choose_demo(self) -> None:
        """The built-in demo: tiny model and dataset, trains on the CPU in about a minute."""
        self.demo = True
        self.model_spec = DEMO
        self.model_info = None
        self.data_spec = DEMO
        self.method = "lora"
        self.trust_remote_code = False
        self.data_stats = None
        self.config = None

    @property
    def gpu_free_bytes(self) -> int | None:
        """Free memory of the first GPU, or None without one."""
        gpus = getattr(self.hardware, "gpus", None)
        return gpus[0].memory_free_bytes if gpus else None

    @property
    def gpu_count(self) -> int:
        """GPUs found (0 before detection or without any): a run uses them all."""
        return len(getattr(self.hardware, "gpus", None) or [])

    @property
    def bf16_ok(self) -> bool:
        gpus = getattr(self.hardware, "gpus", None)
        return bool(gpus) and all(g.bf16 for g in gpus)
