"""Evaluation in every run (issue 12): about ten evaluations whatever the run's length, a
checkpoint with each, the one with the lowest evaluation loss kept through rotation and used as
the result, early stopping on request."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers_engine import config_dict, tiny_model_dir, write_data

from ftwiz.core.config import config_from_dict
from ftwiz.core.engine import checkpoints
from ftwiz.core.engine.process import training_arguments
from ftwiz.core.errors import UserError
from ftwiz.core.runs import RunDir


def _config(tmp_path: Path, **training):
    base = config_dict(tmp_path / "model", tmp_path / "data.jsonl", **training)
    for key in ("save_steps", "max_steps"):
        if key not in training:
            base["training"].pop(key)
    return config_from_dict(base)


def _evaluations(args, max_steps: int) -> tuple[list[int], list[int]]:
    """The steps at which the Trainer evaluates and saves, by its own schedule (DefaultFlowCallback)."""
    from transformers import TrainerControl, TrainerState
    from transformers.trainer_callback import DefaultFlowCallback

    state = TrainerState()
    state.max_steps = max_steps
    state.compute_steps(args, max_steps)
    flow, evals, saves = DefaultFlowCallback(), [], []
    for step in range(1, max_steps + 1):
        state.global_step = step
        control = flow.on_step_end(args, state, TrainerControl())
        evals += [step] * control.should_evaluate
        saves += [step] * control.should_save
    return evals, saves


@pytest.mark.parametrize("steps", [10, 100, 10_000])
def test_every_run_evaluates_about_ten_times_and_saves_with_each(tmp_path, steps):
    args = training_arguments(_config(tmp_path), RunDir(tmp_path / "run"), "fp32", 4, 1, has_eval=True)
    evals, saves = _evaluations(args, steps)
    assert len(evals) == 10 and evals[-1] == steps
    assert saves == evals  # the best evaluation always has its checkpoint
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss" and not args.greater_is_better


def test_steps_given_are_kept_and_best_model_needs_saves_on_evaluations(tmp_path):
    args = training_arguments(_config(tmp_path, save_steps=25), RunDir(tmp_path / "r"), "fp32", 4, 1, True)
    assert (args.eval_steps, args.save_steps, args.load_best_model_at_end) == (25, 25, True)
    mixed = training_arguments(_config(tmp_path, eval_steps=10, save_steps=25), RunDir(tmp_path / "r"), "fp32", 4, 1, True)
    assert not mixed.load_best_model_at_end  # a save between evaluations: the Trainer would refuse
    no_eval = training_arguments(_config(tmp_path), RunDir(tmp_path / "r"), "fp32", 4, 1, has_eval=False)
    assert no_eval.eval_strategy == "no" and not no_eval.load_best_model_at_end
    assert len(_evaluations(no_eval, 300)[1]) == 10  # still ten checkpoints


def test_steps_must_be_whole_or_a_share(tmp_path):
    with pytest.raises(UserError, match="training.eval_steps"):
        _config(tmp_path, eval_steps=2.5)
    assert _config(tmp_path, eval_steps=0.25).training.eval_steps == 0.25


def test_rotation_never_deletes_the_best_checkpoint(tmp_path):
    for step in (2, 4, 6, 8):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / checkpoints.COMPLETE_MARKER).write_text("ok\n")
    removed = checkpoints.rotate(tmp_path, 1, keep_also=tmp_path / "checkpoint-2")
    assert sorted(p.name for p in removed) == ["checkpoint-4", "checkpoint-6"]
    assert [p.name for p in checkpoints.complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-8"]


@pytest.mark.slow
def test_best_checkpoint_survives_rotation_and_its_state_names_where_it_is(tmp_path_factory):
    """The Trainer's own logic picks the best step; ftwiz keeps its checkpoint past
    save_total_limit and records its final path (not the staging one) in the saved state."""
    from ftwiz.core.engine.process import best_checkpoint, build_model, make_trainer_class
    from ftwiz.core.data import build_dataset
    from transformers import AutoTokenizer

    base = tmp_path_factory.mktemp("best")
    model_dir = tiny_model_dir(tmp_path_factory)
    config = config_from_dict(config_dict(model_dir, write_data(base / "data.jsonl"), save_total_limit=1))
    run = RunDir(base / "run")
    run.checkpoints_dir.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_ds, eval_ds = build_dataset(config, tokenizer)
    args = training_arguments(config, run, "fp32", 4, 1, has_eval=True)
    trainer = make_trainer_class()(model=build_model(config, "fp32", False), args=args, train_dataset=train_ds,
                                   eval_dataset=eval_ds, processing_class=tokenizer)
    emitted = []
    trainer.ftwiz_hooks = SimpleNamespace(weights_not_finite=lambda model: False, config=config, run=run,
                                          emit=lambda kind, **fields: emitted.append((kind, fields)))
    trainer.create_optimizer_and_scheduler(num_training_steps=8)
    for step, loss in ((2, 1.0), (4, 0.5), (6, 0.9), (8, 0.7)):
        trainer.state.global_step = step
        trainer.state.log_history.append({"eval_loss": loss, "step": step})
        trainer._determine_best_metric({"eval_loss": loss}, None)
        trainer._save_checkpoint(trainer.model, None)
    kept = sorted(p.name for p in checkpoints.complete_checkpoints(run.checkpoints_dir))
    assert kept == ["checkpoint-4", "checkpoint-8"]  # the newest (limit 1) and the best
    best = str(run.checkpoints_dir / "checkpoint-4")
    assert trainer.state.best_model_checkpoint == best
    saved = json.loads((run.checkpoints_dir / "checkpoint-8" / "trainer_state.json").read_text())
    assert saved["best_model_checkpoint"] == best and saved["best_metric"] == 0.5
    trainer.state.max_steps = 8
    assert best_checkpoint(trainer.state, run) == {"best_checkpoint": "checkpoint-4", "best_eval_loss": 0.5,
                                                   "evaluations": 4, "early_stopped": False}


def test_done_screen_and_status_say_which_checkpoint_was_kept_and_why():
    from ftwiz.core.runs import kept_checkpoint_text

    text = kept_checkpoint_text({"best_checkpoint": "checkpoint-40", "best_eval_loss": 1.23456, "evaluations": 10,
                                 "early_stopped": True})
    assert text.startswith("Kept: checkpoint-40, the lowest evaluation loss (1.2346) of 10 evaluations")
    assert "early stopping ended the run" in text
    assert kept_checkpoint_text({"best_checkpoint": None}) is None and kept_checkpoint_text(None) is None


def test_plan_states_the_evaluation_and_offers_early_stopping(tmp_path, capsys):
    from ftwiz.cli.main import main
    from ftwiz.core.config import load_config

    out = tmp_path / "run.yaml"
    args = ["plan", "--model", "llama-3.2-1b", "--gpu", "H200", "--examples", "5000"]
    assert main(args + ["--early-stopping", "3", "--write", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Eval     10 times on the held-out 10%" in text and "early stopping after 3 evaluations" in text
    assert load_config(out).training.early_stopping_patience == 3
    assert main(args + ["--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["evaluation"]["early_stopping_patience"] is None


def test_plan_on_messy_data_with_drop_invalid(tmp_path, capsys):
    from ftwiz.cli.main import main
    from ftwiz.core.config import load_config

    rows = [{"instruction": f"say {i}", "output": f"{i}"} for i in range(30)] + [{"instruction": "x", "output": ""}]
    data = tmp_path / "messy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{oops\n")
    args = ["plan", "--model", "llama-3.2-1b", "--gpu", "H200", "--data", str(data)]
    assert main(args) == 2
    assert "--drop-invalid leaves bad rows out" in capsys.readouterr().err
    out = tmp_path / "run.yaml"
    assert main(args + ["--drop-invalid", "--write", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Data     30 usable rows; 2 bad rows or lines left out" in text
    assert load_config(out).data.drop_invalid
    assert main(args + ["--drop-invalid", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["data"]["kept"] == 30 and plan["examples"] == 30
    assert plan["evaluation"]["every_steps"] == -(-plan["batch"]["steps"] // 10)
