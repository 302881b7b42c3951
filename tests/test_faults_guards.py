"""Protections that existed before any test guarded them (each was removed once and the whole
suite still passed): every test here fails when its protection is removed.

Also in the group files: the probe's fallbacks (checkpointing turned on when micro-batch 1
does not fit; nothing fits) and a resume keeping what the probe chose are
tests/test_faults_resume.py::test_resume_keeps_the_probes_choice_and_skips_a_damaged_checkpoint
and ::test_the_probe_says_when_nothing_fits.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ftwiz.core.config import config_from_dict
from ftwiz.core.errors import UserError

BASE = {"model": {"name_or_path": "m"}, "data": {"path": "d"}}


@pytest.mark.parametrize("typo", ["limts", "trainig", "lora_config", "Limits"])
def test_an_unknown_top_level_key_is_refused(typo):
    """A typo such as `limts:` would silently drop the cost cap."""
    with pytest.raises(UserError, match=f"{typo}: unknown key"):
        config_from_dict({**BASE, typo: {"max_cost": 5.0}})


def _hooks(tmp_path):
    from ftwiz.core.engine.process import Flags, Hooks

    emitted = []
    flags = Flags()
    hooks = Hooks(run=None, config=config_from_dict(BASE), flags=flags, status=SimpleNamespace(update=lambda **k: None),
                  is_main=False, spent_s=0)
    hooks.emit = emitted.append  # typed events (core/events.py)
    return hooks, flags, emitted


@pytest.mark.parametrize("grad_norm", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_gradient_norm_stops_the_run_without_saving(tmp_path, grad_norm):
    hooks, flags, emitted = _hooks(tmp_path)
    state = SimpleNamespace(global_step=3, epoch=0.1)
    control = SimpleNamespace(should_save=True, should_training_stop=False)
    hooks.log(state, control, {"loss": 1.25, "grad_norm": grad_norm})
    assert control.should_training_stop and not control.should_save
    assert "gradient norm" in flags.nan.reason
    assert [event.type for event in emitted] == ["step", "nan"]
    # A finite one does nothing of the kind.
    hooks, flags, emitted = _hooks(tmp_path)
    control = SimpleNamespace(should_save=True, should_training_stop=False)
    hooks.log(state, control, {"loss": 1.25, "grad_norm": 3.0})
    assert not control.should_training_stop and control.should_save and flags.nan is None


def test_weights_that_are_not_finite_are_never_checkpointed(tmp_path):
    import torch

    from ftwiz.core.engine.process import Hooks, make_trainer_class

    model = torch.nn.Linear(4, 4)
    calls = []
    hooks = SimpleNamespace(weights_not_finite=Hooks.weights_not_finite,
                            on_nan=lambda step, reason, loss: calls.append((step, reason)))
    trainer = SimpleNamespace(ftwiz_hooks=hooks, model=model, state=SimpleNamespace(global_step=7),
                              control=SimpleNamespace(should_training_stop=False),
                              args=SimpleNamespace(output_dir=str(tmp_path / "checkpoints")))
    save = make_trainer_class()._save_checkpoint
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    save(trainer, model, None)  # returns before the Trainer's own save is reached
    assert calls == [(7, "non-finite weights")] and trainer.control.should_training_stop
    assert not (tmp_path / "checkpoints").exists()
    # Frozen weights do not count: only what training changes is checked.
    model.weight.requires_grad_(False)
    assert not Hooks.weights_not_finite(model)
