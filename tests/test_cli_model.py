"""`ftwiz params` and `ftwiz explore`: output, errors, and the no-torch fast path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ftwiz.cli.main import main
from ftwiz.core.models import load_model_info
from ftwiz.core.parameters import count_summary

from helpers_models import write_model_dir


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_params_json(capsys):
    code, out, err = run(capsys, "params", "--model", "llama-3.1-8b", "--rank", "16", "--targets", "q_proj,v_proj", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert type(data["trainable"]) is int and type(data["total"]) is int and type(data["percent"]) is float
    assert data["trainable"] == 6_815_744
    assert data["total"] == 8_030_261_248 + 6_815_744
    assert data["percent"] == pytest.approx(100 * 6_815_744 / (8_030_261_248 + 6_815_744))


def test_params_text_is_pefts_line(capsys):
    code, out, _ = run(capsys, "params", "--model", "gpt2", "--rank", "8", "--targets", "minimal")
    assert code == 0
    s = count_summary(load_model_info("gpt2"), 8, "minimal")
    assert f"trainable params: {s['trainable']:,} || all params: {s['total']:,} || trainable%: {s['percent']:.4f}" in out
    assert "c_attn" in out


def test_params_on_a_local_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model_dir = write_model_dir(tmp_path / "m", "gpt_neox")
    code, out, _ = run(capsys, "params", "--model", str(model_dir), "--targets", "all-linear", "--json")
    assert code == 0
    assert json.loads(out)["targets"] == ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def test_explore(capsys):
    code, out, _ = run(capsys, "explore", "--model", "qwen2.5-0.5b", "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert len(rows) == 12 and {r["rank"] for r in rows} == {8, 16, 32, 64}
    code, out, _ = run(capsys, "explore", "--model", "qwen2.5-0.5b")
    assert code == 0
    assert "all-linear" in out and "adapter MB (fp32)" in out
    assert f"{rows[-1]['trainable']:,}" in out


@pytest.mark.parametrize("args,word", [
    (["params", "--model", "gpt2", "--rank", "0"], "--rank"),
    (["params", "--model", "gpt2", "--rank", "-3"], "--rank"),
    (["params", "--model", "gpt2", "--targets", "q_proj"], "q_proj"),
    (["params", "--model", "./no/such/dir"], "no such directory"),
    (["params", "--model", "not-a-model"], "not-a-model"),
    (["explore", "--model", "not-a-model"], "not-a-model"),
    (["params", "--model", "gpt2", "--rank", "x"], "--rank"),
    (["params"], "--model"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, word):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert word in err and "Traceback" not in err
    if args[-1] != "x" and args != ["params"]:  # click's own usage errors print a usage block
        assert len(err.strip().splitlines()) == 1


def test_params_does_not_import_torch():
    code = (
        "import sys\n"
        "from ftwiz.cli.main import main\n"
        "assert main(['params', '--model', 'llama-3.1-8b', '--json']) == 0\n"
        "assert main(['explore', '--model', 'meta-llama/Llama-3.1-8B']) == 0\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["trainable"] > 0


def test_params_and_the_settings_explorer_give_one_adapter_size(capsys):
    """Settings once said 27 MB (bf16) where `ftwiz params` said 54.5 MB (fp32, as peft saves it):
    both now print core.parameters.adapter_text of count_summary's adapter_bytes."""
    from ftwiz.core.parameters import adapter_text, explore_table

    info = load_model_info("llama-3.2-1b")
    for rank, preset in ((16, "all-linear"), (8, "attention")):
        code, out, _ = run(capsys, "params", "--model", "llama-3.2-1b", "--rank", str(rank), "--targets", preset)
        row = next(r for r in explore_table(info) if (r["rank"], r["preset"]) == (rank, preset))
        assert code == 0 and f"adapter file: {adapter_text(row['adapter_bytes'])} (fp32" in out
        assert row["adapter_bytes"] == count_summary(info, rank, preset)["adapter_bytes"] == 4 * row["trainable"]
