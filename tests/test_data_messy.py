"""Messy real exports made usable (issue 12): drop-invalid keeps the good rows and counts the rest
by reason; a truncated JSON export is read in time linear in its size; a JSON array saved as
.jsonl is read and said to be one."""

from __future__ import annotations

import json

import pytest

from bad_data import CASES, build
from ftwiz.cli.main import main
from ftwiz.core import data_load
from ftwiz.core.data import drop_reason, validate
from ftwiz.core.data_load import Problem, load_rows

GOOD = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
STARTS_WITH_GPT = {"conversations": [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "hi"}]}
EMPTY_TURN = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}]}


def _messy(path):
    """A ShareGPT export as they come: good rows, rows opening with the assistant, empty turns,
    a line that is not JSON, and a row of another shape."""
    lines = [GOOD, STARTS_WITH_GPT, GOOD, EMPTY_TURN, STARTS_WITH_GPT, "{not json", GOOD, [1, 2]]
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in lines))
    return path


def test_drop_invalid_keeps_good_rows_and_counts_each_reason(tmp_path):
    report = validate(str(_messy(tmp_path / "export.jsonl")), drop_invalid=True)
    assert report.ok and [row.line for row in report.kept] == [1, 3, 7]
    assert report.dropped == {
        "conversations[0].from: expected 'human' here, got 'gpt'": 2,
        "conversations[n].value: empty string": 1,
        "not valid JSON": 1,
        "expected a JSON object with conversations, got a list": 1,
    }
    assert report.dropped_total == 5 == report.rows + 1 - len(report.kept)  # 7 rows read, 1 line not JSON
    assert not validate(str(tmp_path / "export.jsonl")).ok  # without it, the file is still refused


@pytest.mark.parametrize("name", sorted(n for n in CASES if n.endswith((".jsonl", ".json"))))
def test_drop_invalid_on_every_kind_of_bad_row(tmp_path, name):
    """Each case of the broken-data corpus: either good rows survive and every bad one is counted,
    or the whole source is unusable (empty, binary, no format) and nothing is written."""
    path = build(tmp_path, name)
    strict = validate(str(path))
    report = validate(str(path), drop_invalid=True)
    assert report.rows == strict.rows and report.kept == [] or report.ok
    if report.ok:
        row_problems = {p.line for p in strict.problems if p.line is not None}
        assert report.dropped_total >= len(row_problems) > 0
        assert all(row.line not in row_problems for row in report.kept)
    out = tmp_path / "clean.jsonl"
    code = main(["data", str(path), "--drop-invalid", str(out), "--no-example"])
    assert code == (0 if report.ok else 2) and out.exists() == report.ok
    if report.ok:
        assert [json.loads(line) for line in out.read_text().splitlines()] == [row.data for row in report.kept]
        assert validate(str(out)).ok


def test_cli_drop_invalid_reports_counts_and_writes_usable_rows(tmp_path, capsys):
    source = _messy(tmp_path / "export.jsonl")
    out = tmp_path / "clean.jsonl"
    assert main(["data", str(source), "--drop-invalid", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dropped 5 bad rows or lines" in printed and "2 rows: conversations[0].from" in printed
    assert f"wrote 3 usable rows to {out}" in printed
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize("target", ["existing", "source", "rows.txt"])
def test_cli_drop_invalid_never_overwrites(tmp_path, capsys, target):
    source = _messy(tmp_path / "export.jsonl")
    out = {"existing": tmp_path / "old.jsonl", "source": source, "rows.txt": tmp_path / "rows.txt"}[target]
    if target == "existing":
        out.write_text("keep me\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(["data", str(source), "--drop-invalid", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftwiz: --drop-invalid: ") and err.count("\n") == 1 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_drop_invalid_in_a_run_says_what_was_left_out(tmp_path):
    from ftwiz.core.config import config_from_dict
    from ftwiz.core.data import build_dataset
    from helpers_tokenizer import make_tiny_tokenizer

    path = _messy(tmp_path / "export.jsonl")
    config = config_from_dict({"model": {"name_or_path": "x"}, "data": {"path": str(path), "drop_invalid": True,
                                                                         "eval_fraction": 0}})
    notes = []
    train, _ = build_dataset(config, make_tiny_tokenizer(), notes)
    assert len(train) == 3
    said = [n for n in notes if "drop_invalid" in n.message]
    assert len(said) == 1 and said[0].kind == "info" and "5 bad rows or lines left out, 3 kept" in said[0].message


def test_drop_reason_leaves_out_what_varies_by_row():
    def reason(field, message):
        return drop_reason(Problem("f", 1, field, message))

    assert reason("messages[3].role", "expected 'user' here, got 'assistant' (turns alternate)") == \
        reason("messages[5].role", "expected 'user' here, got 'assistant' (turns alternate)")
    assert reason(None, "not valid JSON: Expecting value (column 3)") == "not valid JSON"
    assert reason("output", 'missing (row has: a, b)') == "output: missing"


def _truncated_export(path, rows: int):
    row = json.dumps({"conversations": [{"from": "human", "value": "q " * 40}, {"from": "gpt", "value": "a " * 200}]})
    text = "[\n" + ",\n".join([row] * rows) + ",\n" + row[: len(row) // 2]  # cut mid-row, as a failed download
    path.write_text(text)
    return len(text)


def test_truncated_export_is_read_in_linear_time(tmp_path, monkeypatch):
    """Work (characters decoded and scanned for line breaks) grows with the file, not its square:
    counting lines from the start for every row made a 125 MB export take minutes."""
    work = {"chars": 0}
    decode, newlines = data_load._decode_at, data_load._newlines

    def counted_decode(decoder, buffer, position):
        try:
            value, end = decode(decoder, buffer, position)
        except ValueError:
            work["chars"] += len(buffer) - position
            raise
        work["chars"] += end - position
        return value, end

    def counted_newlines(buffer, start, end):
        work["chars"] += end - start
        return newlines(buffer, start, end)

    monkeypatch.setattr(data_load, "_decode_at", counted_decode)
    monkeypatch.setattr(data_load, "_newlines", counted_newlines)
    done = {}
    for rows in (2_000, 8_000):
        path = tmp_path / f"export-{rows}.json"
        size = _truncated_export(path, rows)
        work["chars"] = 0
        loaded = load_rows(path)
        assert len(loaded.rows) == rows and "reading stopped" in loaded.problems[0].message
        assert loaded.problems[0].line == rows + 2  # the cut row, on its own line
        done[rows] = work["chars"] / size
    assert done[8_000] < 1.5 * done[2_000], done  # per byte, the same work at 4x the size
    assert done[8_000] < 4, done  # and a few passes over each byte, not one per row


def test_json_array_saved_as_jsonl_is_read_and_named(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text(json.dumps([GOOD, GOOD], indent=2))
    report = validate(str(path))
    assert report.ok and report.rows == 2
    assert any("a JSON array, not one object per line" in n.message and "export.json" in n.message
               for n in report.notes)


async def test_data_step_offers_to_leave_out_bad_rows_and_the_run_config_follows(tmp_path):
    from textual.widgets import Button, Static

    from snapshot_apps import H200, fixed_app, open_step, settle
    from ftwiz.core.wizard import settings_config

    path = _messy(tmp_path / "export.jsonl")
    app = fixed_app(tmp_path / "runs", H200)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_step(pilot, "data", data_spec=str(path))
        button = app.screen.query_one("#drop-invalid", Button)
        assert button.display and "train on 3" in str(button.label)
        assert app.state.n_examples is None  # refused until the user chooses
        await pilot.press("ctrl+l")
        await settle(pilot)
        assert app.state.drop_invalid and app.state.n_examples == 3
        status = app.screen.query_one("#data-status", Static).content.plain
        assert "ready to train on 3; 5 bad rows or lines left out" in status
        await pilot.press("ctrl+l")  # and back
        await settle(pilot)
        assert not app.state.drop_invalid and app.state.n_examples is None
    config = settings_config({}, method="lora", model_spec="m", data_spec=str(path), drop_invalid=True)
    assert config.data.drop_invalid
