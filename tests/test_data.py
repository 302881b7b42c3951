"""Data loading, format detection, statistics, rendering with loss spans, and build_dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bad_data import utf16_with_bom
from helpers_tokenizer import make_tiny_tokenizer
from ftwiz.core.config import config_from_dict
from ftwiz.core.data import (
    FALLBACK_CHAT_TEMPLATE,
    DataError,
    Note,
    build_dataset,
    detect_format,
    load_rows,
    prepare_tokenizer,
    render_example,
    validate,
    validate_rows,
)

FIXTURES = Path(__file__).parent / "fixtures" / "data"
CHAT_ROW = {
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "two plus two?"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "and three?"},
        {"role": "assistant", "content": "five"},
    ]
}


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.mark.parametrize(
    "name, fmt, rows",
    [
        ("alpaca.jsonl", "alpaca", 6),
        ("chat.jsonl", "chat", 4),
        ("sharegpt.json", "sharegpt", 3),
        ("prompt_completion.csv", "prompt_completion", 3),
        ("text.jsonl", "text", 3),
    ],
)
def test_good_fixtures_detected_and_usable(name, fmt, rows):
    report = validate(str(FIXTURES / name))
    assert (report.format, report.rows, report.ok, report.problems) == (fmt, rows, True, [])
    assert report.to_dict()["ok"] is True


def test_csv_cells_stay_text_and_empty_cell_is_named_by_row(tmp_path):
    path = tmp_path / "pc.csv"
    path.write_text('prompt,completion\n"2+2=",4\n"3+3=",\n')
    loaded = load_rows(path)
    assert loaded.rows[0].data == {"prompt": "2+2=", "completion": "4"}
    assert validate(str(path)).problem_lines() == [f"{path}:row 2: completion: is null; must be a non-empty string"]


def test_parquet_with_nested_messages(tmp_path):
    import datasets

    path = tmp_path / "chat.parquet"
    rows = [json.loads(line) for line in (FIXTURES / "chat.jsonl").read_text().splitlines()]
    rows.append({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    report = validate(str(path))
    assert report.format == "chat" and report.rows == 5
    assert report.problem_lines() == [f"{path}:row 5: messages[1].role: expected 'assistant' here, got 'user' "
                                      "(turns alternate user/assistant, starting with user)"]


def test_json_array_rows_keep_their_line_numbers(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n\n  {"instruction": "a",\n   "output": ""}\n]\n')
    assert validate(str(path)).problem_lines() == [f"{path}:4: output: empty string"]


def test_json_data_wrapper_and_json_lines_in_a_json_file(tmp_path):
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [{"text": "a"}, {"text": ""}]}))
    assert validate(str(wrapped)).problem_lines() == [f"{wrapped}:row 2: text: empty string"]
    lines = tmp_path / "lines.json"
    lines.write_text('{"text": "a"}\n{"text": "b"}\n')
    report = validate(str(lines))
    assert report.ok and report.rows == 2 and "read as JSON lines" in report.notes[0].message
    assert report.notes[0].kind == "info" and report.to_dict()["notes"] == [report.notes[0].message]


def test_utf8_bom_and_utf16_bom_are_read(tmp_path):
    bom8 = tmp_path / "bom8.jsonl"
    bom8.write_bytes(b"\xef\xbb\xbf" + b'{"text": "caf\xc3\xa9"}\n')
    assert load_rows(bom8).rows[0].data == {"text": "café"}
    bom16 = utf16_with_bom(tmp_path / "bom16.jsonl", [{"instruction": "crème", "output": "brûlée"}] * 2)
    report = validate(str(bom16))
    assert report.ok and report.rows == 2 and "UTF-16" in report.notes[0].message and report.notes[0].kind == "info"
    assert load_rows(bom16).rows[1].data["output"] == "brûlée"


def test_hub_dataset_offline_is_a_clear_problem(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as caught:
        load_rows("someone/some-dataset", "main", "train")
    message = str(caught.value)
    assert message.startswith("someone/some-dataset: could not load the Hub dataset") and "offline" in message


def test_detect_format_and_unknown_fields():
    assert detect_format([{"instrucion": "a", "output": "b"}]) == "alpaca"
    assert detect_format([{"conversations": []}, {"conversations": []}, {"text": "x"}]) == "sharegpt"
    report = validate_rows([{"foo": 1}, {"bar": 2}])
    assert not report.ok and "no known row format" in report.problem_lines()[0]
    assert "alpaca (instruction, output)" in report.problem_lines()[0]


def test_forced_format_reports_every_row_that_does_not_fit():
    report = validate_rows([{"text": "a"}, {"prompt": "p", "completion": "c"}], format="text")
    assert report.problem_lines() == ["<rows>:row 2: format: this row is prompt_completion (prompt, completion) "
                                      "but the file is text; one file holds one format"]


def test_stats_with_tokenizer_match_token_counts(tokenizer):
    rows = [{"prompt": "x" * n, "completion": "y"} for n in (1, 2, 3, 4, 40)]
    report = validate_rows(rows, tokenizer=tokenizer, max_length=10)
    lengths = sorted(len(render_example(r, tokenizer).input_ids) for r in rows)
    stats = report.stats
    assert (stats["p50"], stats["max"], stats["estimate"]) == (lengths[2], lengths[-1], False)
    assert stats["truncated_rows"] == sum(n > 10 for n in lengths) == 1 and stats["truncated_share"] == 0.2
    assert stats["suggested_max_length"] % 64 == 0 and stats["suggested_max_length"] >= lengths[-1]
    assert sum(stats["histogram"]["counts"]) == 5
    assert len(stats["histogram"]["edges"]) == len(stats["histogram"]["counts"]) + 1


def test_stats_without_tokenizer_are_labelled_estimates():
    stats = validate_rows([{"text": "one two three"}]).stats
    assert stats["estimate"] is True and "estimate" in stats["token_counter"] and stats["max"] == 3
    assert stats["truncated_share"] is None


def test_prepare_tokenizer_pad_and_fallback_template():
    bare = make_tiny_tokenizer(chat_template=False, pad=False)
    pad, template = prepare_tokenizer(bare)
    assert bare.pad_token == bare.eos_token == "</s>" and "eos token '</s>'" in str(pad) and pad.kind == "info"
    assert bare.chat_template == FALLBACK_CHAT_TEMPLATE and "fallback" in str(template) and template.kind == "warning"
    assert prepare_tokenizer(bare) == []
    no_eos = make_tiny_tokenizer(chat_template=True, pad=False)
    no_eos.eos_token = None
    assert "unk token '<unk>'" in prepare_tokenizer(no_eos)[0].message and no_eos.pad_token == "<unk>"


def test_render_uses_chat_template_and_trains_only_answers(tokenizer):
    rendered = render_example(CHAT_ROW, tokenizer)
    assert rendered.text == tokenizer.apply_chat_template(CHAT_ROW["messages"], tokenize=False)
    assert "".join(span.text for span in rendered.spans) == rendered.text
    trained = tokenizer.decode([i for i, lab in zip(rendered.input_ids, rendered.labels) if lab != -100])
    assert trained == "four<|im_end|>\nfive<|im_end|>\n"
    assert [s.token_id for s in rendered.spans] == rendered.input_ids
    assert rendered.prompt_text.endswith("and three?<|im_end|>\n<|im_start|>assistant\n")
    assert rendered.reference_text == "five<|im_end|>\n"
    everything = render_example(CHAT_ROW, tokenizer, completion_only_loss=False)
    assert everything.labels == everything.input_ids


def test_render_fallback_template_and_plain_formats():
    bare = make_tiny_tokenizer(chat_template=False)
    rendered = render_example({"instruction": "Say hi", "input": "now", "output": "hi"}, bare)
    assert rendered.text == "<s>### User:\nSay hi\n\nnow\n\n### Assistant:\nhi</s>\n\n"
    assert bare.chat_template is None  # rendering does not change the caller's tokenizer
    completion = render_example({"prompt": "2+2=", "completion": "4"}, bare)
    assert completion.text == "2+2=4</s>" and [s.text for s in completion.spans if s.trains] == ["4", "</s>"]
    without = render_example({"instruction": "Say hi", "output": "hi"})
    assert [(s.text, s.trains) for s in without.spans] == [("### User:\nSay hi\n\n### Assistant:\n", False), ("hi\n\n", True)]


def test_render_truncates_to_max_length(tokenizer):
    rendered = render_example({"text": "hello world " * 20}, tokenizer, max_length=7)
    assert rendered.truncated and len(rendered.input_ids) == len(rendered.labels) == len(rendered.spans) == 7
    assert rendered.text == "".join(span.text for span in rendered.spans) == tokenizer.decode(rendered.input_ids)


def _config(path, **data):
    return config_from_dict(
        {"model": {"name_or_path": "tiny"}, "data": {"path": str(path), **data}, "training": {"max_length": 48, "seed": 3}}
    )


def test_build_dataset_columns_labels_and_seeded_split(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(CHAT_ROW) + "\n" for _ in range(20)))
    tok = make_tiny_tokenizer(pad=False)
    notes: list[Note] = []
    train, held_out = build_dataset(_config(path, eval_fraction=0.2), tok, notes)
    assert (len(train), len(held_out)) == (16, 4)
    assert {"input_ids", "attention_mask", "labels", "completion_mask"} <= set(train.column_names)
    assert {"prompt_text", "reference_text"} <= set(held_out.column_names)
    example = train[0]
    assert len(example["input_ids"]) == len(example["labels"]) == 48  # cut to training.max_length
    assert example["labels"][0] == -100 and any(label != -100 for label in example["labels"])
    assert example["completion_mask"] == [int(label != -100) for label in example["labels"]]
    said = [note.message for note in notes]
    assert tok.pad_token == "</s>" and any("pad" in m for m in said) and any("cut to max_length" in m for m in said)
    again, _ = build_dataset(_config(path, eval_fraction=0.2), make_tiny_tokenizer(), [])
    assert again["input_ids"] == train["input_ids"]


def test_build_dataset_split_is_seeded_and_honours_max_rows(tmp_path):
    path = tmp_path / "pc.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i} ", "completion": f"a{i}"}) + "\n" for i in range(30)))
    tok = make_tiny_tokenizer()
    train, held_out = build_dataset(_config(path, eval_fraction=0.1, max_rows=20), tok)
    assert (len(train), len(held_out)) == (18, 2)
    first, _ = build_dataset(_config(path, eval_fraction=0.1, max_rows=20), tok)
    assert first["input_ids"] == train["input_ids"]
    no_eval, none = build_dataset(_config(path, eval_fraction=0.0, completion_only_loss=False), tok)
    assert none is None and len(no_eval) == 30 and no_eval[0]["labels"] == no_eval[0]["input_ids"]


def test_notes_say_their_kind_where_they_are_made(tmp_path):
    """Facts are info, things to look at are warnings: set by core.data, not read from the words."""
    path = tmp_path / "pc.jsonl"
    rows = [{"prompt": f"q{i} ", "completion": f"a{i}"} for i in range(8)]
    rows += [{"prompt": "p", "completion": "answer " * 30}, {"prompt": "question " * 60, "completion": "a"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    notes: list[Note] = []
    build_dataset(_config(path, eval_fraction=0.2), make_tiny_tokenizer(chat_template=False, pad=False), notes)
    assert all(isinstance(note, Note) and str(note) == note.message for note in notes)
    infos = [note.message for note in notes if note.kind == "info"]
    warnings = [note.message for note in notes if note.kind == "warning"]
    assert len(infos) == 2 and "has no pad token" in infos[0] and infos[1].endswith("2 evaluation examples")
    assert not any("chat template" in m for m in warnings), warnings  # prompt/completion rows never use it
    assert any("cut to max_length" in m for m in warnings) and any("left out" in m for m in warnings)
    with pytest.raises(ValueError, match="note kind 'error'"):
        Note("error", "not a kind the engine sends")  # type: ignore[arg-type]
    assert Note.info("x") == Note("info", "x") and Note.warning("x").kind == "warning"


def test_build_dataset_refuses_bad_rows_with_locations(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n')
    with pytest.raises(DataError) as caught:
        build_dataset(_config(path), make_tiny_tokenizer())
    assert str(caught.value) == f"{path}:2: output: missing (row has: instruction)"


def test_demo_dataset_by_name(tmp_path, monkeypatch):
    from ftwiz.core.demo import train_rows

    monkeypatch.chdir(tmp_path)
    report = validate("demo", max_rows=100)
    assert report.ok and report.format == "prompt_completion" and report.rows == 100
    train, held_out = build_dataset(_config("demo", eval_fraction=0.05, max_rows=200), make_tiny_tokenizer())
    assert (len(train), len(held_out)) == (190, 10)
    assert held_out[0]["reference_text"].endswith("</s>")
    assert any(held_out[0]["prompt_text"] == r["prompt"] for r in train_rows()[:200])


def test_unreachable_hub_fails_at_once_without_retries(monkeypatch):
    """Offline without HF_HUB_OFFLINE: one clear problem at once, not ~25 s of logged retries."""
    import socket

    import datasets

    from ftwiz.core.data_load import DataError, load_rows

    def no_dns(*args, **kwargs):
        raise socket.gaierror("Name or service not known")

    def never(*args, **kwargs):
        raise AssertionError("load_dataset must not be tried when the Hub is unreachable")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(datasets, "load_dataset", never)
    with pytest.raises(DataError) as caught:
        load_rows("org/some-dataset")
    assert "the Hub is unreachable (offline)" in str(caught.value.problems[0].message)


def test_empty_source_is_named_empty_not_a_directory():
    report = validate("")
    assert not report.ok and "empty dataset path" in report.problem_lines()[0]
