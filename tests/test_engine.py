"""End to end: a real detached LoRA run of a tiny local Llama, its files, events and results."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from helpers_engine import FAKE_TOKEN, config_dict, events, start, tiny_model_dir, wait_state, write_data

from ftwiz.core.config import config_from_dict
from ftwiz.core.engine.launch import RUN_ENV, launch_command, start_run
from ftwiz.core.errors import UserError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    """One finished run (8 steps, 2 checkpoints, samples) with a fake HF token in its environment."""
    model = tiny_model_dir(tmp_path_factory)
    base = tmp_path_factory.mktemp("e2e")
    data = write_data(base / "data.jsonl")
    old = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = FAKE_TOKEN
    try:
        run = start(model, data, base / "runs", name="e2e", output={"samples": 4})
    finally:
        if old is None:
            del os.environ["HF_TOKEN"]
        else:
            os.environ["HF_TOKEN"] = old
    wait_state(run, {"finished", "failed", "crashed"})
    return model, run


def test_run_finishes_with_events_checkpoints_and_adapter(finished_run):
    model, run = finished_run
    assert run.state() == "finished", run.log_path.read_text()[-3000:]
    status = run.read_status()
    assert status["step"] == 8 and status["max_steps"] == 8 and status["exit_code"] == 0
    kinds = [e["type"] for e in events(run)]
    assert kinds.index("started") < kinds.index("model") < kinds.index("step") < kinds.index("finished")
    started = next(e for e in events(run) if e["type"] == "started")
    assert started["data_format"] == "prompt_completion"  # detected by core.data, shown by Done
    for kind in ("eval", "checkpoint", "samples"):
        assert kind in kinds
    assert all(e["v"] == 1 for e in events(run))
    steps = [e for e in events(run) if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 9))
    first = steps[0]
    for field in ("loss", "learning_rate", "grad_norm", "epoch", "max_steps", "eta_s", "rss_gib", "spend_usd"):
        assert field in first
    model_event = next(e for e in events(run) if e["type"] == "model")
    assert model_event["lora_modules"] == 2 * 7 and model_event["peft_wrappers"] == 1
    assert (model_event["rows_per_step"], model_event["examples_per_step"]) == (4, 4.0)  # no packing on a CPU
    finished = events(run, "finished")[0]
    evals = [e["eval_loss"] for e in events(run, "eval")]
    assert finished["evaluations"] == len(evals) and finished["best_eval_loss"] == min(evals)
    assert finished["best_checkpoint"] in ("checkpoint-4", "checkpoint-8")
    # Only complete checkpoints, each with its marker; no staging leftovers.
    names = sorted(p.name for p in run.checkpoints_dir.iterdir() if p.is_dir())
    assert names == ["checkpoint-4", "checkpoint-8"]
    assert all((run.checkpoints_dir / n / "COMPLETE").is_file() for n in names)
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    samples = json.loads(run.samples_path.read_text())
    assert samples["count"] == 4 and len(samples["examples"]) == 4
    finished = events(run, "finished")[0]
    assert finished["final_loss"] < steps[0]["loss"]
    assert all(e["tokens_per_s"] > 0 for e in steps)  # the first step's too, from its own duration
    assert {(e["micro_batch"], e["grad_accum"]) for e in steps} == {(4, 1)}


def test_probe_measures_before_training_and_replaces_the_estimates(finished_run):
    _, run = finished_run
    kinds = [e["type"] for e in events(run)]
    assert kinds.index("started") < kinds.index("probe") < kinds.index("model")
    probe = events(run, "probe")[0]
    assert probe["fits"] and not probe["changed"] and probe["changes"] == []
    assert (probe["micro_batch"], probe["grad_accum"], probe["gradient_checkpointing"]) == (4, 1, False)
    assert [a["outcome"] for a in probe["attempts"]] == ["ok"] and probe["attempts"][0]["longest_tokens"] > 10
    assert probe["tokens_per_s"] > 0 and probe["estimated_time_s"] > 0 and probe["duration_s"] < 60
    # 8 steps x 4 examples of the data's mean length, at the measured rate.
    assert probe["estimated_time_s"] == pytest.approx(probe["tokens_to_train"] / probe["tokens_per_s"], abs=0.051)
    assert probe["tokens_to_train"] > 8 * 4 * 10
    assert probe["budget_gib"] is None and probe["estimated_cost_usd"] is None  # CPU, no price
    status = run.read_status()["probe"]
    assert status["tokens_per_s"] == probe["tokens_per_s"] and status["estimated_time_s"] == probe["estimated_time_s"]


def test_facts_are_info_events_and_problems_warnings(finished_run):
    _, run = finished_run
    infos = [e["message"] for e in events(run, "info")]
    warnings = [e["message"] for e in events(run, "warning")]
    assert any("training and" in m and "evaluation examples" in m for m in infos)
    assert not any("evaluation examples" in m for m in warnings)
    assert not any("chat template" in m for m in warnings)  # prompt/completion rows never use the template


def test_engine_sends_each_note_as_the_kind_it_was_made_with(tmp_path, monkeypatch):
    """The event type is note.kind, whatever the words: a reworded fact stays info, and a warning
    worded like the split-size or pad-token facts stays a warning (no guessing from the text)."""
    from types import SimpleNamespace

    import torch
    import transformers
    from helpers_tokenizer import make_tiny_tokenizer

    from ftwiz.core.data import Note
    from ftwiz.core.engine import process
    from ftwiz.core.runs import RunDir

    said = [
        Note.info("the split, said another way: 9 to learn from, 1 to check against"),
        Note.warning("prompt_completion data: 9 training and 1 evaluation examples"),
        Note.warning("the tokenizer has no pad token, and this time it is a warning"),
    ]

    class Sent(Exception):
        """Raised once the last note is out: the rest of train() is not this test's business."""

    def datasets_for(config, run, tokenizer, notes, found=None):
        notes += said
        return None, None

    emit = process.Hooks.emit

    def emit_then_stop(self, event):
        emit(self, event)
        if getattr(event, "message", None) == said[-1].message:
            raise Sent

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # train() sets it for its own process
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: make_tiny_tokenizer())
    monkeypatch.setattr(process.RunRecipe, "download_model", lambda self, hooks: None)  # "tiny" is no Hub model
    monkeypatch.setattr(process, "datasets_for", datasets_for)
    monkeypatch.setattr(process.Hooks, "emit", emit_then_stop)
    run = RunDir(tmp_path)
    config = config_from_dict({"model": {"name_or_path": "tiny"}, "data": {"path": "d"}})
    with pytest.raises(Sent):
        process.train(run, config, process.Flags(), SimpleNamespace(update=lambda **k: None), is_main=True)
    messages = {note.message for note in said}
    sent = [(e["type"], e["message"]) for e in events(run) if e.get("message") in messages]
    assert sent == [(note.kind, note.message) for note in said]


def test_catalog_model_names_load_from_their_hub_id(monkeypatch):
    """A config naming a catalog model (as the planner writes it) loads its Hub id everywhere."""
    import transformers

    from ftwiz.core.engine import process, results
    from ftwiz.core.engine.model_source import model_source
    from ftwiz.core.models import load_model_info

    hub_id = load_model_info("llama-3.2-1b").hub_id
    assert hub_id and model_source("llama-3.2-1b") == hub_id and model_source("LLAMA-3.2-1B") == hub_id
    assert model_source("some-org/some-model") == "some-org/some-model"
    assert model_source(__file__) == __file__
    seen = []
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda name, **kw: seen.append(name) or _tiny_llama())
    config = config_from_dict({"model": {"name_or_path": "llama-3.2-1b"}, "data": {"path": "d"}})
    process.load_model(config, "fp32", cuda=False)
    results._load_base(config)
    assert seen == [hub_id, hub_id]


def test_adapter_loads_with_peft_and_merge_loads_with_from_pretrained(finished_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftwiz.cli.main import main

    model_dir, run = finished_run
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), run.adapter_dir)
    assert sum(n.endswith(".lora_A") for n, _ in tuned.named_modules()) == 14
    assert main(["--runs-dir", str(run.path.parent), "merge", "e2e"]) == 0
    merged = AutoModelForCausalLM.from_pretrained(run.merged_dir)
    assert not any("lora" in n for n, _ in merged.named_modules())
    assert (run.merged_dir / "model.safetensors").is_file()


def test_sample_prints_base_and_tuned(finished_run, capsys):
    from ftwiz.cli.main import main

    _, run = finished_run
    assert main(["--runs-dir", str(run.path.parent), "sample", "e2e", "--prompt", "Date: May 1, 2001\nISO:", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"prompt", "base", "tuned"}


def test_token_is_never_written_anywhere(finished_run):
    """HF_TOKEN was in the run's environment: no file in the run dir (incl. pickles) holds it."""
    _, run = finished_run
    files = [p for p in run.path.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files)  # the pickle is among those checked
    for path in files:
        assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_run_files_are_private(finished_run):
    _, run = finished_run
    for path in [run.path, *run.path.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_runs_cli_lists_the_run(finished_run, capsys):
    from ftwiz.cli.main import main

    _, run = finished_run
    assert main(["--runs-dir", str(run.path.parent), "runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["name"] == "e2e")
    assert row["state"] == "finished" and row["step"] == 8 and row["max_steps"] == 8 and row["loss"] is not None


# -- fast: command construction and validation before anything is written ----------------------------
def test_launch_command_single_and_multi_gpu(tmp_path):
    assert launch_command(tmp_path, 0, python="py") == ["py", "-m", "ftwiz.core.engine", str(tmp_path)]
    assert launch_command(tmp_path, 1, python="py") == ["py", "-m", "ftwiz.core.engine", str(tmp_path)]
    assert launch_command(tmp_path, 4, python="py") == [
        "py", "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4",
        "-m", "ftwiz.core.engine", str(tmp_path),
    ]
    assert RUN_ENV["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert RUN_ENV["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_launch_for_an_fsdp_config(tmp_path_factory, tmp_path, capsys):
    """FSDP comes from the config (the Trainer builds accelerate's plugin from training.fsdp and
    fsdp_config), so the launch line is DDP's; a launch on fewer than 2 GPUs is refused first."""
    from ftwiz.cli.main import main
    from ftwiz.core.checks import check_launch

    fsdp = config_from_dict({**config_dict(tmp_path, tmp_path), "method": "full",
                             "training": {"fsdp": True, "fsdp_config": {"reshard_after_forward": True}}})
    assert launch_command(tmp_path, 2, python="py") == [
        "py", "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "-m", "ftwiz.core.engine", str(tmp_path),
    ]
    check_launch(fsdp, 2)
    for count in (0, 1):
        with pytest.raises(UserError, match=rf"training\.fsdp: .* this launch has {count};"):
            check_launch(fsdp, count)
    # This CPU machine: refused before the run directory exists; --prepare-only (a launch by hand
    # on other machines) writes it and says the launch line is the same.
    model = tiny_model_dir(tmp_path_factory)
    config = config_from_dict(config_dict(model, write_data(tmp_path / "d.jsonl"), fsdp=True))
    runs = tmp_path / "runs"
    with pytest.raises(UserError, match=r"training\.fsdp: .* has 0"):
        start_run(config, runs)
    assert not runs.exists()
    path = config.save(tmp_path / "fsdp.yaml")
    assert main(["--runs-dir", str(runs), "train", str(path), "--name", "sharded", "--prepare-only"]) == 0
    out = capsys.readouterr().out
    assert "accelerate launch --multi_gpu" in out and "FSDP (training.fsdp: true)" in out
    assert main(["--runs-dir", str(runs), "resume", "sharded"]) == 2
    assert "training.fsdp" in capsys.readouterr().err
    assert json.loads((runs / "sharded" / "status.json").read_text())["state"] == "prepared"


def test_bad_data_fails_before_anything_is_written(tmp_path_factory, tmp_path):
    model = tiny_model_dir(tmp_path_factory)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n', encoding="utf-8")
    runs = tmp_path / "runs"
    with pytest.raises(UserError, match=r"bad.jsonl:2"):
        start_run(config_from_dict(config_dict(model, bad)), runs)
    assert not runs.exists()


def test_missing_model_fails_before_anything_is_written(tmp_path):
    data = write_data(tmp_path / "d.jsonl")
    runs = tmp_path / "runs"
    with pytest.raises(UserError, match="model"):
        start_run(config_from_dict(config_dict(tmp_path / "no-such-model", data)), runs)
    assert not runs.exists()


def test_precision_follows_hardware():
    from ftwiz.core.engine.process import choose_precision

    config = config_from_dict(config_dict(__file__, __file__, bf16=True))
    assert choose_precision(config, cuda=False, bf16_ok=False)[0] == "fp32"
    assert choose_precision(config, cuda=True, bf16_ok=True)[0] == "bf16"
    assert choose_precision(config, cuda=True, bf16_ok=False)[0] == "fp16"


def test_engine_module_runs_without_torch_in_the_parent():
    """start_run's module stays light: the CLI imports it before any training."""
    import subprocess

    code = "import sys, ftwiz.core.engine; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_attach_follows_until_the_end(finished_run, capsys):
    from ftwiz.cli.main import main

    _, run = finished_run
    assert main(["--runs-dir", str(run.path.parent), "attach", "e2e", "--interval", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "step 8/8" in out and "[finished]" in out and out.rstrip().endswith("run e2e: finished")


def test_attach_ctrl_c_detaches_without_stopping(tmp_path, monkeypatch, capsys):
    from ftwiz.cli import run_cmds
    from ftwiz.cli.main import main
    from ftwiz.core.runs import create_run_dir

    run = create_run_dir(tmp_path, "live")
    run.config_path.write_text("name: live\n")
    run.write_status(state="running", pid=os.getpid())  # alive, and never signalled by attach

    def interrupt(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_cmds.time, "sleep", interrupt)
    assert main(["--runs-dir", str(tmp_path), "attach", "live"]) == 0
    assert "detached" in capsys.readouterr().out and run.read_status()["state"] == "running"


def test_qlora_quantizes_and_upcasts_only_when_asked(monkeypatch):
    """QLoRA: BitsAndBytesConfig from the config; prepare_model_for_kbit_training only with upcast."""
    import peft
    import transformers

    from ftwiz.core.engine import process

    seen = {}
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda name, **kw: seen.update(kw) or _tiny_llama())
    calls = []
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", lambda m, **kw: calls.append(kw) or m)
    for upcast in (False, True):
        config = config_from_dict({"method": "qlora", "model": {"name_or_path": "m"}, "data": {"path": "d"},
                                   "quantization": {"upcast": upcast}, "lora": {"target_modules": ["q_proj", "v_proj"]}})
        model = process.wrap_model(process.load_model(config, "bf16", cuda=True), config)
        q = seen["quantization_config"]
        assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
        assert sum(n.endswith(".lora_A") for n, _ in model.named_modules()) == 2 * 2
    assert len(calls) == 1 and calls[0]["gradient_checkpointing_kwargs"] == {"use_reentrant": False}


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1))


def test_prepare_only_checks_and_writes_but_starts_nothing(tmp_path_factory, tmp_path, capsys):
    """For a launch by hand on several machines: the run directory is ready, no process runs."""
    from ftwiz.cli.main import main

    model = tiny_model_dir(tmp_path_factory)
    config = tmp_path / "run.yaml"
    config_from_dict(config_dict(model, write_data(tmp_path / "d.jsonl"))).save(config)
    runs = tmp_path / "runs"
    assert main(["--runs-dir", str(runs), "train", str(config), "--name", "multi", "--prepare-only"]) == 0
    out = capsys.readouterr().out
    assert "prepared multi" in out and "accelerate launch" in out and "-m ftwiz.core.engine" in out
    status = json.loads((runs / "multi" / "status.json").read_text())
    assert status["state"] == "prepared" and "pid" not in status
    assert (runs / "multi" / "config.yaml").exists() and not (runs / "multi" / "train.log").exists()


def test_fsdp_save_is_a_collective_that_only_the_main_rank_installs(tmp_path):
    """Under FSDP every rank joins the save (the shards are gathered); only rank 0 stages and installs."""
    from ftwiz.core.engine import results
    from ftwiz.core.runs import create_run_dir

    calls: list[str] = []

    class Accelerator:
        def wait_for_everyone(self):
            calls.append("barrier")

    class Trainer:
        accelerator = Accelerator()

        def __init__(self, writes: bool):
            self.writes = writes

        def save_model(self, path):
            calls.append("save")
            if self.writes:  # the Trainer writes from the main process only
                Path(path).mkdir(parents=True, exist_ok=True)
                (Path(path) / "model.safetensors").write_bytes(b"x")
                (Path(path) / "training_args.bin").write_bytes(b"pickle")

    run = create_run_dir(tmp_path, "r")
    assert results.save_adapter(Trainer(writes=False), run, is_main=False, sharded=True) == run.adapter_dir
    assert calls == ["barrier", "save", "barrier"] and not run.adapter_dir.exists()
    calls.clear()
    results.save_adapter(Trainer(writes=True), run, is_main=True, sharded=True)
    assert calls == ["barrier", "save", "barrier"]
    assert sorted(p.name for p in run.adapter_dir.iterdir()) == ["model.safetensors"]


def test_probe_time_weighs_attention_by_each_examples_length():
    """The probe times the longest rows; a long example costs more per token (attention grows with
    its length squared), so the run's time is the probe's scaled by FLOPs per token, read from
    the examples inside TRL's own packed rows."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    from ftwiz.core.engine.probe import example_lengths, row_lengths, step_cost

    lengths = [11137, 1300, 1250, 1400, 900, 2300]
    packed = pack_dataset(Dataset.from_dict({"input_ids": [[1] * n for n in lengths]}), seq_length=11200,
                          strategy="bfd")
    assert sorted(example_lengths(packed, row_lengths(packed))) == sorted(lengths)  # packed rows: their seq_lengths
    unpacked = Dataset.from_dict({"input_ids": [[1] * n for n in lengths]})
    assert example_lengths(unpacked, row_lengths(unpacked), [0, 1]) == [11137, 1300]
    # Llama-3.1-8B shapes, LoRA: 4N per token, attention 4 x 4096 x 32 x 3.5 per pair.
    rates = (4 * 8.03e9, 4 * 4096 * 32 * 3.5)
    chats = [11137] + [1300] * 399  # the real-chat bench: one long chat among ~1,300-token ones
    long_row = step_cost([11137], *rates) / 11137
    mean = step_cost(chats, *rates) / sum(chats)
    # measured through `ftwiz train`: the probe's unweighted time 49.4 s against 39.7 s trained (+24%)
    assert 1.2 < long_row / mean < 1.3
