"""Bad input (issue 6): every broken dataset ends in problems naming the file and line or field,
exit code 2 from `ftwiz data`, no traceback; the validator never raises on any bytes or rows."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_data import CASES, build
from ftwiz.cli.main import main
from ftwiz.core.data import DataReport, render_example, validate, validate_rows
from ftwiz.core.data_load import DataError, load_rows
from ftwiz.core.errors import UserError


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_dataset_is_reported_with_file_and_line(tmp_path, name):
    path = build(tmp_path, name)
    report = validate(str(path))
    assert not report.ok
    text = "\n".join(report.problem_lines())
    for expected in CASES[name][1]:
        assert f"{path}{expected}" in text, text


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_dataset_cli_exit_2_without_traceback(tmp_path, name, capsys):
    path = build(tmp_path, name)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["data", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert f"{path}{CASES[name][1][0]}" in out
    assert err.startswith("ftwiz: ") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_huge_single_line_is_skipped_in_bounded_memory(tmp_path):
    path = build(tmp_path, "huge_line.jsonl")
    tracemalloc.start()
    started = time.perf_counter()
    loaded = load_rows(path)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [row.line for row in loaded.rows] == [1, 3]  # the lines around it still count
    assert "over the limit" in loaded.problems[0].message
    assert peak < 20 * 1024 * 1024, peak  # 8 MiB row limit + 1 MiB chunks, never the 50 MB line
    assert elapsed < 10


def test_problems_listed_up_to_limit_then_counted(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"instruction": "a", "output": ""}) + "\n" for _ in range(30)))
    report = validate(str(path))
    assert report.problems_total == 30 and len(report.problems) == 20
    assert report.problem_lines()[-1] == "... and 10 more"
    assert report.problem_lines()[0] == f"{path}:1: output: empty string"
    assert validate(str(path), limit=5).problem_lines()[-1] == "... and 25 more"


def test_data_error_is_a_one_line_user_error(tmp_path):
    error = DataError([*validate(str(build(tmp_path, "empty_strings.jsonl"))).problems] * 3)
    assert isinstance(error, UserError) and "\n" not in str(error) and "(and 3 more" in str(error)


# -- property tests: any input gives a report or a UserError, never another exception ----------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["user", "assistant", "system", "human", "gpt", "bot"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["instruction", "instrucion", "input", "output", "messages", "conversations", "role",
                         "content", "from", "value", "prompt", "completion", "text", "system", "x"]),
        children,
        max_size=4,
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(json_values, max_size=6))
def test_any_rows_give_a_report(rows):
    try:
        report = validate_rows(rows)
    except UserError:
        return
    assert isinstance(report, DataReport)
    assert report.ok == (report.problems_total == 0 and report.rows > 0)
    for problem in report.problems:
        assert str(problem).startswith("<rows>")
    if report.ok:
        for row in rows:
            assert render_example(row, format=report.format).text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_any_bytes_give_a_report(tmp_path, data, suffix):
    path = tmp_path / f"any{suffix}"
    path.write_bytes(data)
    report = validate(str(path))
    assert isinstance(report, DataReport)
    if not report.ok:
        assert report.problems and all(str(p).startswith(str(path)) for p in report.problems)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(json_values, max_size=5), suffix=st.sampled_from([".jsonl", ".json"]))
def test_any_json_file_gives_a_report(tmp_path, rows, suffix):
    path = tmp_path / f"rows{suffix}"
    text = json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text)
    assert isinstance(validate(str(path)), DataReport)
