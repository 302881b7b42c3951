"""Group 3 of the adversarial suite: reads of untrusted input are bounded.

Only regular files are read as data or config (a named pipe would block forever, /dev/zero
never ends); a config has size, depth and alias limits, and an error quotes at most a short
excerpt of a value; every data format has a per-row limit naming the row; every OSError or
decoding error is the one-line message. Every case: exit 2 (or a report), no traceback, in
bounded time (the per-test timeout turns a hang into a failure).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ftwiz.cli.main import main
from ftwiz.core import data_load
from ftwiz.core.config import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, load_config
from ftwiz.core.data_load import load_rows
from ftwiz.core.errors import UserError

pytestmark = pytest.mark.timeout(60)
VALID = "model: {name_or_path: m}\ndata: {path: d.jsonl}\n"


def _one_line(capsys, code: int) -> str:
    captured = capsys.readouterr()
    text = captured.err
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in text + captured.out, text
    return lines[0]


def _fifo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


# -- config --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "symlink_to_dev_zero"])
def test_only_regular_files_are_read_as_config(tmp_path, capsys, kind):
    if kind == "fifo":
        path = _fifo(tmp_path, "c.yaml")
    elif kind == "dev_zero":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "c.yaml"
        path.symlink_to("/dev/zero")
    line = _one_line(capsys, main(["train", str(path)]))
    assert "regular files" in line


def test_a_config_past_the_size_limit_is_not_read_whole(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(VALID + "# " + "x" * MAX_CONFIG_BYTES + "\n")
    line = _one_line(capsys, main(["train", str(path)]))
    assert f"{path.stat().st_size:,} bytes" in line and "bytes at most" in line  # told by its size, not read


def test_an_alias_bomb_is_refused_while_parsed_and_its_message_stays_short(tmp_path, capsys):
    lines = [VALID.strip(), 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level, previous in zip("bcdefgh", "abcdefg"):
        lines.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    lines.append("name: *h")
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    line = _one_line(capsys, main(["train", str(path)]))
    assert "alias" in line and len(line) < 300


def test_a_small_alias_expansion_in_a_field_is_quoted_as_a_short_excerpt(tmp_path, capsys):
    """Under the node limit, but a wrong type for its field: the message quotes a few items."""
    path = tmp_path / "c.yaml"
    path.write_text(VALID + 'training: {seed: &s ["' + "y" * 5000 + '", "z"]}\nname: [*s, *s, *s, *s, *s, *s]\n')
    line = _one_line(capsys, main(["train", str(path)]))
    assert "training.seed" in line and len(line) < 600


def test_deep_nesting_is_refused_without_recursion_error(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(VALID + "name: " + "[" * 5000 + "]" * 5000 + "\n")
    assert f"nested deeper than {MAX_YAML_DEPTH}" in _one_line(capsys, main(["train", str(path)]))
    path.write_text(VALID + "name: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n")
    assert "nested deeper" in _one_line(capsys, main(["train", str(path)]))


def test_an_unreadable_config_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text(VALID)
    import ftwiz.core.config as config_module

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(config_module.os, "open", denied)
    with pytest.raises(UserError, match="cannot read it .Permission denied"):
        load_config(path)


# -- data ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "symlink_to_dev_zero"])
def test_only_regular_files_are_read_as_data(tmp_path, capsys, kind):
    if kind == "fifo":
        path = _fifo(tmp_path, "d.jsonl")
    else:
        path = tmp_path / "d.jsonl"
        path.symlink_to("/dev/zero")
    assert main(["data", str(path)]) == 2
    assert "only regular files are read as data" in capsys.readouterr().out


def _rows(n: int = 3) -> list[dict]:
    return [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(n)]


def test_one_huge_row_in_a_json_array_is_refused_naming_its_line(tmp_path):
    rows = _rows()
    rows[1]["output"] = "x" * 5000
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows, indent=1))
    loaded = load_rows(path, max_row_bytes=2000)
    assert [r.data["output"] for r in loaded.rows] == ["a0", "a2"]
    (problem,) = loaded.problems
    assert problem.line == 6 and "over the limit" in str(problem)


def test_one_huge_row_at_the_default_limit_fails_ftwiz_data(tmp_path, capsys):
    """The issue's case at its real size: one 9 MB row inside a .json array."""
    rows = _rows()
    rows[2]["output"] = "x" * (data_load.MAX_ROW_BYTES + 1024)
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    assert main(["data", str(path)]) == 2
    assert "over the limit" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["csv", "parquet", "json_container"])
def test_one_huge_row_in_csv_parquet_or_a_data_list_is_refused_naming_the_row(tmp_path, kind):
    rows = _rows()
    rows[1]["output"] = "x" * 5000
    if kind == "csv":
        path = tmp_path / "d.csv"
        path.write_text("instruction,output\n" + "".join(f"{r['instruction']},{r['output']}\n" for r in rows))
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"data": rows}))
    loaded = load_rows(path, max_row_bytes=2000)
    assert [r.data["output"] for r in loaded.rows] == ["a0", "a2"]
    (problem,) = loaded.problems
    assert problem.line == 2 and problem.unit == "row" and "limit per row" in str(problem)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_huge_integer_literal_is_a_problem_not_a_traceback(tmp_path, capsys, suffix):
    path = tmp_path / f"d{suffix}"
    huge = '{"instruction": "q", "output": "a", "n": ' + "9" * 5000 + "}"
    path.write_text(huge + "\n" if suffix == ".jsonl" else "[" + huge + "]")
    assert main(["data", str(path)]) == 2
    out = capsys.readouterr()
    assert "4300 digits" in out.out and "Traceback" not in out.out + out.err
    path.write_text(huge)  # a single document (for .json), not an array
    if suffix == ".json":
        assert main(["data", str(path)]) == 2
        assert "4300 digits" in capsys.readouterr().out


def test_an_unreadable_data_file_is_one_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(_rows(1)[0]) + "\n")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data_load, "open", denied, raising=False)  # root ignores chmod 000
    assert main(["data", str(path)]) == 2
    out = capsys.readouterr()
    assert "cannot read it: Permission denied" in out.out and "Traceback" not in out.out + out.err


# -- the runs directory -------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["runs"], ["stop", "x"], ["train", "c.yaml"]])
def test_a_runs_dir_that_is_a_file_is_one_line(tmp_path, capsys, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text(VALID)
    Path("runs").write_text("not a directory\n")
    assert "is a file, not a directory" in _one_line(capsys, main(["--runs-dir", "runs", *command]))
