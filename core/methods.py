"""The fine-tuning methods ftwiz plans and trains: one enumeration, read everywhere the list is
needed (the config, the estimator, the cost model, the recommender, the wizard's screens).

A StrEnum, so a Method is its name wherever a string is expected: `config.method == "full"`,
f-strings, JSON, YAML written from `model_dump(mode="json")`, click choices.
"""

from __future__ import annotations

from enum import StrEnum

from ftwiz.core.errors import UserError


class Method(StrEnum):
    LORA = "lora"
    """Low-rank adapters on the frozen model in 16-bit."""
    QLORA = "qlora"
    """Low-rank adapters on the frozen model quantized to 4-bit (NF4)."""
    FULL = "full"
    """Every weight trained (fp32 master weights, mixed precision)."""

    @property
    def label(self) -> str:
        """How the screens name it."""
        return {"lora": "LoRA", "qlora": "QLoRA", "full": "Full"}[self.value]


METHOD_NAMES: tuple[str, ...] = tuple(m.value for m in Method)
"""("lora", "qlora", "full"): for messages and choice lists."""


def check_method(value: str, flag: str = "--method") -> Method:
    """The Method of this name; an unknown name is a UserError naming the allowed ones."""
    try:
        return Method(value)
    except ValueError:
        raise UserError(f"{flag}: {value!r}: unknown (allowed: {', '.join(METHOD_NAMES)})") from None


__all__ = ["METHOD_NAMES", "Method", "check_method"]
