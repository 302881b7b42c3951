"""`ftwiz gpus`, `ftwiz cost`, `ftwiz decide`: output, --json, bad input as one line and exit 2,
and the fast path (no torch import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftwiz.cli.main import main
from ftwiz.core.hardware import RECORDING_ENV, RecordedBackend, detect_hardware

FIXTURES = Path(__file__).parent / "fixtures" / "gpus"
TWO_A100 = FIXTURES / "synthetic-2x-a100.json"
CPU_ONLY = {"nvml_state": "no-driver", "message": "CPU only: no NVIDIA driver answered (test).", "gpus": []}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user price file, and the CPU-only answer unless a test replays a recording."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps(CPU_ONLY))
    monkeypatch.setenv(RECORDING_ENV, str(cpu))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, out, err, *fragments):
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("ftwiz: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_gpus_cpu_only_exits_0_and_says_so(capsys):
    code, out, _ = run(capsys, "gpus")
    assert code == 0 and "CPU only" in out and "RAM" in out and "Disk" in out


def test_gpus_table_lists_each_gpu(capsys, monkeypatch):
    monkeypatch.setenv(RECORDING_ENV, str(TWO_A100))
    code, out, _ = run(capsys, "gpus")
    assert code == 0
    assert "GPU 0  NVIDIA A100-SXM4-80GB  30.0 GiB used of 80.0 GiB (50.0 GiB free)" in out
    assert "GPU 1" in out and "bf16 yes" in out and "CUDA 12.4" in out and "MIG off" in out
    assert "pid 31337 python: 29.5 GiB" in out
    assert "power 351 W of 400 W" in out


def test_gpus_json_is_the_recording_format(capsys, monkeypatch):
    monkeypatch.setenv(RECORDING_ENV, str(TWO_A100))
    code, out, _ = run(capsys, "gpus", "--json")
    data = json.loads(out)
    assert code == 0 and data["cpu_only"] is False and len(data["gpus"]) == 2
    assert data == detect_hardware(RecordedBackend(TWO_A100)).to_dict()
    assert detect_hardware(RecordedBackend(data)).to_dict() == data  # replayable as printed


def test_gpus_json_cpu_only(capsys):
    data = json.loads(run(capsys, "gpus", "--json")[1])
    assert data["cpu_only"] is True and data["nvml_state"] == "no-driver" and data["gpus"] == []


def test_cost_text_states_assumptions(capsys):
    code, out, _ = run(capsys, "cost", "--params", "8", "--tokens", "1e7", "--gpu", "H200")
    assert code == 0
    assert "LORA on 1 x H200" in out and "tokens/s" in out and "$" in out
    assert "Compare:" in out and "qlora  1 x H200" in out and "lora   2 x H200" in out
    from ftwiz.core.cost import DEFAULT_EFFICIENCY

    assert "Assumptions:" in out and f"efficiency {DEFAULT_EFFICIENCY:.0%}" in out


def test_cost_json_from_examples(capsys):
    code, out, _ = run(capsys, "cost", "--model-params", "8B", "--examples", "1000", "--avg-tokens", "300",
                       "--epochs", "3", "--gpu", "4090", "--method", "qlora", "--grad-ckpt", "off",
                       "--price", "0.5", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["tokens"] == 900_000 and data["params"] == 8e9 and data["gpu"] == "RTX 4090"
    assert (data["method"], data["grad_ckpt"], data["price_per_gpu_hour"]) == ("qlora", False, 0.5)
    assert data["cost_usd"] == pytest.approx(data["hours"] * 0.5)
    assert [s["method"] for s in data["scenarios"]] == ["qlora", "lora", "lora", "full"]
    assert data["assumptions"]


def test_cost_defaults_to_the_gpus_here(capsys, monkeypatch):
    monkeypatch.setenv(RECORDING_ENV, str(TWO_A100))
    data = json.loads(run(capsys, "cost", "--params", "8030261248", "--tokens", "1e6", "--json")[1])
    assert data["gpu"] == "A100 80GB" and data["num_gpus"] == 2 and data["params"] == 8030261248


def test_cost_with_a_catalog_model(capsys):
    from ftwiz.core.models import load_model_info

    data = json.loads(run(capsys, "cost", "--model", "llama-3.1-8b", "--tokens", "1e6", "--gpu", "H200", "--json")[1])
    assert data["params"] == load_model_info("llama-3.1-8b").total_params


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--params", "8", "--tokens", "1e6"], ["--gpu: no GPU here", "allowed: RTX 3090"]),
        (["--params", "8", "--tokens", "1e6", "--gpu", "x100"], ["--gpu: unknown GPU 'x100'"]),
        (["--params", "8", "--tokens", "1e6", "--gpu", "h200", "--method", "dora"], ["allowed: lora, qlora, full"]),
        (["--params", "8", "--tokens", "1e6", "--gpu", "h200", "--grad-ckpt", "maybe"], ["allowed: on, off"]),
        (["--params", "0", "--tokens", "1e6", "--gpu", "h200"], ["--params: must be > 0"]),
        (["--params", "big", "--tokens", "1e6", "--gpu", "h200"], ["--params: 'big' is not a size"]),
        (["--tokens", "1e6", "--gpu", "h200"], ["--params"]),
        (["--params", "8", "--gpu", "h200"], ["--tokens: say how much data"]),
        (["--params", "8", "--tokens", "-1", "--gpu", "h200"], ["--tokens: must be > 0"]),
        (["--params", "8", "--examples", "10", "--avg-tokens", "0", "--gpu", "h200"], ["--avg-tokens: must be > 0"]),
        (["--params", "8", "--tokens", "1e6", "--gpu", "h200", "--num-gpus", "0"], ["--num-gpus"]),
        (["--params", "8", "--tokens", "1e6", "--gpu", "h200", "--price", "-2"], ["--price"]),
        (["--model", "no/such-model-here", "--tokens", "1e6", "--gpu", "h200"], []),
    ],
)
def test_cost_bad_input_is_one_line_exit_2(capsys, args, fragments):
    one_line_error(*run(capsys, "cost", *args), *fragments)


def test_decide_text_and_json(capsys):
    code, out, _ = run(capsys, "decide", "--tried-prompting", "yes", "--tried-few-shot", "yes",
                       "--examples", "500", "--strict-format", "yes", "--gpu-memory-gib", "24")
    assert code == 0 and out.startswith("1. LoRA [recommended]") and "2. QLoRA" in out
    code, out, _ = run(capsys, "decide", "--tried-prompting", "no", "--json")
    data = json.loads(out)
    assert code == 0 and data["recommendations"][0]["method"] == "prompt_engineering"
    assert data["answers"]["gpu_memory_gib"] == 0.0  # prefilled: this (recorded) machine has no GPU


def test_decide_prefills_gpu_memory_from_this_machine(capsys, monkeypatch):
    monkeypatch.setenv(RECORDING_ENV, str(TWO_A100))
    data = json.loads(run(capsys, "decide", "--json")[1])
    assert data["answers"]["gpu_memory_gib"] == 80.0 and data["answers"]["num_gpus"] == 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--budget", "lots"], "--budget: 'lots' is not a choice"), (["--examples", "many"], "--examples"),
     (["--gpu-memory-gib", "x"], "--gpu-memory-gib: 'x' is not a number")],
)
def test_decide_bad_input_is_one_line_exit_2(capsys, args, fragment):
    one_line_error(*run(capsys, "decide", *args), fragment)


def test_gpus_and_cost_are_fast_and_never_import_torch(tmp_path):
    """A fresh process, as a user runs it: no torch, and well under 2 s of work."""
    code = (
        "import sys, time\n"
        "from ftwiz.cli.main import main\n"
        "started = time.perf_counter()\n"
        "assert main(['gpus']) == 0\n"
        "assert main(['cost', '--params', '8', '--tokens', '1e7', '--gpu', 'h200']) == 0\n"
        "assert main(['decide', '--examples', '500']) == 0\n"
        "elapsed = time.perf_counter() - started\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ELAPSED', elapsed)\n"
    )
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    elapsed = float(result.stdout.rsplit("ELAPSED", 1)[1])
    assert elapsed < 2.0


@pytest.mark.parametrize(
    "args",
    [
        ["cost", "--params", "nan", "--tokens", "1e6", "--gpu", "H200"],
        ["cost", "--params", "8", "--tokens", "inf", "--gpu", "H200"],
        ["cost", "--params", "8", "--tokens", "1e6", "--gpu", "H200", "--price", "nan"],
        ["cost", "--params", "8", "--tokens", "1e6", "--gpu", "H200", "--efficiency", "1.5"],
        ["decide", "--gpu-memory-gib", "nan"],
    ],
)
def test_non_finite_numbers_are_refused(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftwiz: ") and err.count("\n") == 1
