"""`ftwiz data`: the report on stdout, exit 0 when usable and 2 when not, --json, --model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_tokenizer import save_tiny_tokenizer
from ftwiz.cli.main import main

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_tokenizer(tmp_path_factory.mktemp("tiny-model"))


def test_usable_file_exit_0_with_report_and_example(capsys):
    assert main(["data", str(FIXTURES / "alpaca.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "alpaca, 6 rows: usable" in out
    assert "whitespace words (estimate: no tokenizer given)" in out
    assert "[### User:\nGive the capital of France.\n\n### Assistant:\n]Paris" in out


def test_json_report_with_model_tokenizer(model_dir, capsys):
    code = main(["data", str(FIXTURES / "chat.jsonl"), "--model", str(model_dir), "--max-length", "20", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] and report["format"] == "chat" and report["rows"] == 4
    stats = report["stats"]
    assert stats["estimate"] is False and stats["token_counter"].startswith("tokenizer")
    assert stats["max_length"] == 20 and 0 < stats["truncated_share"] <= 1
    assert sum(stats["histogram"]["counts"]) == 4
    example = report["example"]
    assert example["truncated"] and example["tokens"] == 20
    assert "".join(s["text"] for s in example["spans"]) == example["text"]  # what the model sees, cut
    assert main(["data", str(FIXTURES / "chat.jsonl"), "--model", str(model_dir), "--json"]) == 0
    spans = json.loads(capsys.readouterr().out)["example"]["spans"]
    assert "".join(s["text"] for s in spans if s["trains"]) == "four<|im_end|>\n"


def test_tokenizer_notes_print_as_before_and_stay_strings_in_json(tmp_path, capsys):
    """prepare_tokenizer's typed notes: `note: ...` lines in the report, plain strings in --json."""
    bare = save_tiny_tokenizer(tmp_path / "bare", chat_template=False, pad=False)
    assert main(["data", str(FIXTURES / "alpaca.jsonl"), "--model", str(bare), "--no-example"]) == 0
    out = capsys.readouterr().out
    assert "note: the tokenizer has no pad token: using its eos token '</s>' for padding\n" in out
    assert "note: the tokenizer has no chat template: using ftwiz's fallback (### User: / ### Assistant:)\n" in out
    assert main(["data", str(FIXTURES / "alpaca.jsonl"), "--model", str(bare), "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert len(notes) == 2 and all(isinstance(note, str) for note in notes) and "no pad token" in notes[0]


def test_unusable_file_exit_2_lists_problems_as_file_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "", "output": "b"}\n')
    assert main(["data", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False and report["problems"][0]["text"] == f"{path}:2: instruction: empty string"
    assert report["problems"][0]["line"] == 2 and report["problems"][0]["field"] == "instruction"
    assert captured.err == f"ftwiz: {path}: not usable for training (1 problem(s) in the JSON report)\n"


def test_bad_model_dir_is_a_user_error(tmp_path, capsys):
    assert main(["data", str(FIXTURES / "text.jsonl"), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ftwiz: --model: {tmp_path}: no tokenizer files in this directory") and err.count("\n") == 1


def test_catalog_model_offline_is_one_quick_line(capsys, monkeypatch):
    """A catalog name means its Hub id; offline and uncached it is one line at once, not a minute of retries."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    start = time.time()
    assert main(["data", str(FIXTURES / "alpaca.jsonl"), "--model", "smollm2-135m"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(HuggingFaceTB/SmolLM2-135M)" in err and "offline" in err
    assert time.time() - start < 10


def test_executable_exit_code_and_no_traceback(tmp_path):
    """A fresh process: the real exit code and stderr a user sees."""
    result = subprocess.run(
        [sys.executable, "-m", "ftwiz.cli", "data", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"{tmp_path / 'nope.jsonl'}: no such file" in result.stdout
    assert "Traceback" not in result.stderr
