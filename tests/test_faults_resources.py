"""Resource faults: disk full while saving, CUDA OOM at step 0 and mid-run, NaN / exploding loss,
the cost limit. The runs are independent processes, so the module starts them all at once."""

from __future__ import annotations

import pytest
from helpers_engine import complete_steps, events, start, tiny_model_dir, wait_state, write_data

from ftwiz.core.engine.checkpoints import latest_checkpoint

pytestmark = pytest.mark.slow

SCENARIOS = {
    # From step 5 on, no file may grow past 64 kB (the adapter alone is ~130 kB): like a full disk.
    # LoRA dropout on, so the probe-leaves-training-unchanged test also covers the RNG it consumes.
    "full": ({"FTWIZ_FAULT_FSIZE_BYTES": "64000", "FTWIZ_FAULT_FSIZE_AT_STEP": "5"}, {"lora": {"lora_dropout": 0.1}}),
    "oom": ({"FTWIZ_FAULT_OOM_AT_STEP": "0,5"}, {}),
    "oom2": ({"FTWIZ_FAULT_OOM_AT_STEP": "0,1"}, {"limits": {"oom_retries": 1}}),
    "nan": ({"FTWIZ_FAULT_NAN_AT_STEP": "2"}, {}),
    # $36000/h is $10/s: a $0.5 limit is reached within the first steps.
    "cost": ({}, {"max_steps": 500, "save_steps": 100, "limits": {"max_cost": 0.5, "price_per_hour": 36000.0}}),
    # An OOM in the pre-flight probe's first attempt: it halves the batch before training starts.
    "probeoom": ({"FTWIZ_FAULT_OOM_IN_PROBE": "1"}, {}),
    # Same as "full" up to its step 5, without the probe: the losses must match (and allow_pickle
    # on, to count its warning: one, from start_run's preflight, none repeated by the run).
    "noprobe": ({}, {"probe": False, "model": {"allow_pickle": True}, "lora": {"lora_dropout": 0.1}}),
    # Not a fault: full fine-tuning, started here to share the wait.
    "fullft": ({}, {"method": "full", "output": {"samples": 2}}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    model = tiny_model_dir(tmp_path_factory)
    base = tmp_path_factory.mktemp("resources")
    data = write_data(base / "d.jsonl")
    started = {}
    for name, (env, overrides) in SCENARIOS.items():
        training = {"max_steps": 8, **overrides}
        started[name] = start(model, data, base / "runs", name, env=env, **training)
    return started


def test_disk_full_while_saving_keeps_last_checkpoint_and_writes_no_adapter(runs):
    run = runs["full"]
    assert wait_state(run, {"finished", "failed", "crashed"}) == "failed", run.log_path.read_text()[-3000:]
    error = events(run, "error")[-1]
    assert "checkpoint-8" in error["message"] and "checkpoint-4" in error["message"]
    assert "disk" in error["suggestion"]
    assert complete_steps(run) == [4]
    from safetensors.torch import load_file

    assert load_file(latest_checkpoint(run.checkpoints_dir) / "adapter_model.safetensors")
    assert not run.adapter_dir.exists()  # no half-written results
    assert not [p for p in run.checkpoints_dir.iterdir() if p.name.startswith(".staging")]


def test_oom_at_step_0_and_mid_run_halves_the_micro_batch_and_keeps_the_step_count(runs):
    run = runs["oom"]
    assert wait_state(run, {"finished", "failed", "crashed"}) == "finished", run.log_path.read_text()[-3000:]
    ooms = events(run, "oom")
    assert [(o["step"], o["attempt"], o["micro_batch_old"], o["micro_batch_new"], o["grad_accum_old"], o["grad_accum_new"])
            for o in ooms] == [(0, 1, 4, 2, 1, 2), (5, 2, 2, 1, 2, 4)]
    assert ooms[0]["resume_from"] is None and ooms[1]["resume_from"] == "checkpoints/checkpoint-4"
    assert [e["step"] for e in events(run) if e["type"] == "step"][-4:] == [5, 6, 7, 8]
    all_events = events(run)
    second = all_events.index(ooms[1])
    assert [e["step"] for e in all_events[second:] if e["type"] == "step"] == [5, 6, 7, 8]  # not reset to 0
    status = run.read_status()
    assert status["step"] == 8 and status["micro_batch"] == 1 and status["grad_accum"] == 4


def test_oom_beyond_the_retries_stops_with_a_suggestion(runs):
    run = runs["oom2"]
    assert wait_state(run, {"finished", "failed", "crashed"}) == "failed"
    assert len(events(run, "oom")) == 2
    error = events(run, "error")[-1]
    assert "out of GPU memory" in error["message"] and "qlora" in error["suggestion"]
    assert run.read_status()["exit_code"] == 1


def test_nan_loss_stops_the_run_with_a_suggestion_and_saves_nothing(runs):
    run = runs["nan"]
    assert wait_state(run, {"finished", "failed", "crashed"}) == "failed"
    nan = events(run, "nan")[0]
    assert nan["step"] == 3 and "learning_rate" in nan["suggestion"]
    assert "learning_rate" in events(run, "error")[-1]["suggestion"]
    assert max(e["step"] for e in events(run, "step")) == 3  # stopped, not trained on
    assert complete_steps(run) == [] and not run.adapter_dir.exists()


def test_exploding_loss_is_detected():
    from types import SimpleNamespace

    from ftwiz.core.config import config_from_dict
    from ftwiz.core.engine.process import Flags, Hooks

    emitted = []
    config = config_from_dict({"model": {"name_or_path": "m"}, "data": {"path": "d"}})
    hooks = Hooks(run=None, config=config, flags=Flags(), status=SimpleNamespace(update=lambda **k: None),
                  is_main=False, spent_s=0)
    hooks.emit = lambda kind, **fields: emitted.append((kind, fields))
    state, control = SimpleNamespace(global_step=0, epoch=0), SimpleNamespace(should_save=False, should_training_stop=False)
    for step, loss in enumerate([2.0, 2.1, 1.9, 2.0, 2.05, 1.95, 40.0], start=1):
        state.global_step = step
        hooks.log(state, control, {"loss": loss, "grad_norm": 1.0})
    assert control.should_training_stop and not control.should_save
    kind, fields = emitted[-1]
    assert kind == "nan" and fields["step"] == 7 and "median" in fields["reason"]


def test_cost_limit_saves_and_stops_with_the_spend(runs):
    run = runs["cost"]
    assert wait_state(run, {"finished", "stopped", "failed", "crashed"}) == "stopped", run.log_path.read_text()[-3000:]
    limit = events(run, "limit")[0]
    assert limit["limit"] == "max_cost" and limit["spend_usd"] >= 0.5
    step = run.read_status()["step"]
    assert step < 500 and complete_steps(run) == [step]
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert all(e["spend_usd"] is not None for e in events(run, "step"))


def test_full_fine_tuning_writes_a_loadable_model(runs):
    from transformers import AutoModelForCausalLM

    run = runs["fullft"]
    assert wait_state(run, {"finished", "failed", "crashed"}) == "finished", run.log_path.read_text()[-3000:]
    model_event = events(run, "model")[0]
    assert model_event["peft_wrappers"] == 0 and model_event["trainable_params"] == model_event["total_params"]
    model = AutoModelForCausalLM.from_pretrained(run.adapter_dir)
    assert not any("lora" in name for name, _ in model.named_modules())
    assert events(run, "samples")[0]["count"] == 2


def test_probe_oom_halves_the_micro_batch_before_training(runs):
    run = runs["probeoom"]
    assert wait_state(run, {"finished", "failed", "crashed"}) == "finished", run.log_path.read_text()[-3000:]
    probe = events(run, "probe")[0]
    assert [a["outcome"] for a in probe["attempts"]] == ["out of memory", "ok"]
    assert (probe["micro_batch"], probe["grad_accum"], probe["changed"]) == (2, 2, True)
    assert "micro-batch 4 -> 2" in probe["changes"][0] and "out of memory" in probe["changes"][0]
    kinds = [e["type"] for e in events(run)]
    assert kinds.index("probe") < kinds.index("step") and "oom" not in kinds  # adjusted before training
    steps = events(run, "step")
    assert {(e["micro_batch"], e["grad_accum"]) for e in steps} == {(2, 2)} and steps[-1]["step"] == 8
    status = run.read_status()
    assert (status["micro_batch"], status["grad_accum"]) == (2, 2) and status["probe"]["tokens_per_s"] > 0


def test_probe_does_not_change_training(runs):
    """"full" (probe on) and "noprobe" train alike until "full"'s disk fills at step 5."""
    with_probe, without = runs["full"], runs["noprobe"]
    assert wait_state(without, {"finished", "failed", "crashed"}) == "finished", without.log_path.read_text()[-3000:]
    wait_state(with_probe, {"finished", "failed", "crashed"})
    assert events(with_probe, "probe") and not events(without, "probe")
    probed = [e["loss"] for e in events(with_probe, "step")][:4]
    plain = [e["loss"] for e in events(without, "step")][:4]
    assert len(probed) == 4 and probed == pytest.approx(plain, rel=1e-6)
    pickle_warnings = [e for e in events(without, "warning") if "allow_pickle" in e["message"]]
    assert len(pickle_warnings) == 1


def test_max_hours_limit_saves_and_stops():
    """A tiny max_hours is reached at the first step end: limit event, save, stop (no process needed)."""
    from types import SimpleNamespace

    from ftwiz.core.config import config_from_dict
    from ftwiz.core.engine.process import Flags, Hooks

    emitted = []
    config = config_from_dict({"model": {"name_or_path": "m"}, "data": {"path": "d"}, "limits": {"max_hours": 1e-9}})
    flags = Flags()
    hooks = Hooks(run=None, config=config, flags=flags, status=SimpleNamespace(update=lambda **k: None),
                  is_main=False, spent_s=0)
    hooks.emit = lambda kind, **fields: emitted.append((kind, fields))
    state, control = SimpleNamespace(global_step=3, epoch=0.1), SimpleNamespace(should_save=False, should_training_stop=False)
    hooks.step_end(state, control)
    assert control.should_save and control.should_training_stop
    assert flags.limit["limit"] == "max_hours" and not flags.stop_requested  # a limit, not a user stop
    kind, fields = emitted[0]
    assert kind == "limit" and fields["step"] == 3 and fields["value"] == 1e-9 and fields["hours"] >= 0
    config = config_from_dict({"model": {"name_or_path": "m"}, "data": {"path": "d"}, "limits": {"max_hours": 1.0}})
    hooks = Hooks(run=None, config=config, flags=Flags(), status=SimpleNamespace(update=lambda **k: None),
                  is_main=False, spent_s=0)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    hooks.step_end(state, control)
    assert not control.should_training_stop
