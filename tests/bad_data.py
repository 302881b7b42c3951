"""The broken-dataset corpus (issue 6, bad input), written into a temporary directory on demand.

Each case is (file name or path relative to the directory, a builder writing it, the strings
the report must contain: file name plus line or field). Generated, not committed, so the 50 MB
single line costs no repository space.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Callable

ALPACA = {"instruction": "Say hi", "output": "hi"}


def _lines(*rows: object) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _huge_line(path: Path) -> None:
    with open(path, "wb") as handle:
        handle.write(_lines(ALPACA))
        handle.write(b'{"instruction": "x", "output": "')
        chunk = b"a" * (1024 * 1024)
        for _ in range(50):
            handle.write(chunk)
        handle.write(b'"}\n')
        handle.write(_lines(ALPACA))


def _directory(path: Path) -> None:
    path.mkdir()


def _missing(path: Path) -> None:
    """Nothing is written: the path does not exist."""


def _chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


# name -> (builder, expected substrings after the file name)
CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "malformed.jsonl": (_write(_lines(ALPACA, b'{"instruction": "a", "output": ', ALPACA, b"{oops}")), [":2: not valid JSON", ":4: not valid JSON"]),
    "missing_field.jsonl": (_write(_lines(ALPACA, ALPACA, {"instruction": "only"})), [":3: output: missing"]),
    "misspelled.jsonl": (_write(_lines(ALPACA, {"instrucion": "a", "output": "b"})), [':2: instruction: missing; found "instrucion": did you mean "instruction"?']),
    "empty.jsonl": (_write(b""), [": empty file"]),
    "blank_lines.jsonl": (_write(b"\n\n  \n"), [": no rows"]),
    "empty_strings.jsonl": (_write(_lines(ALPACA, {"instruction": "", "output": "x"}, {"instruction": "a", "output": "  "})), [":2: instruction: empty string", ":3: output: only whitespace"]),
    "wrong_types.jsonl": (_write(_lines(ALPACA, {"instruction": 3, "output": ["x"]}, [1, 2])), [":2: instruction: must be a string", ":2: output: must be a string", ":3: expected a JSON object"]),
    "binary.jsonl": (_write(bytes(range(256)) * 8), [": binary data, not text (NUL byte at byte offset 0)"]),
    "utf16_no_bom.jsonl": (_write(_lines(ALPACA).decode().encode("utf-16-le")), [": binary data"]),
    "latin1.jsonl": (_write(_lines(ALPACA) + '{"instruction": "café", "output": "crème"}\n'.encode("latin-1")), [":2: not valid UTF-8: byte 0xe9 at byte offset 62 (column 21)"]),
    "huge_line.jsonl": (_huge_line, [":2: line is 52,428,835 bytes long, over the limit"]),
    "mixed.jsonl": (_write(_lines(ALPACA, ALPACA, _chat(("user", "a"), ("assistant", "b")), ALPACA, {"prompt": "p", "completion": "c"})), [":3: format: this row is chat", ":5: format: this row is prompt_completion"]),
    "unknown_role.jsonl": (_write(_lines(_chat(("user", "a"), ("assistant", "b")), _chat(("user", "a"), ("bot", "b")), _chat(("user", "a"), ("assistent", "b")))), [":2: messages[1].role: unknown role 'bot' (allowed: system, user, assistant)", ':3: messages[1].role: unknown role \'assistent\' (allowed: system, user, assistant); did you mean "assistant"?']),
    "not_alternating.jsonl": (_write(_lines(_chat(("user", "a"), ("user", "b"), ("assistant", "c")), _chat(("assistant", "a"), ("user", "b")), _chat(("user", "a"), ("assistant", "b"), ("system", "c"), ("assistant", "d")), _chat(("system", "s"), ("user", "q")))), [":1: messages[1].role: expected 'assistant' here, got 'user'", ":2: messages[0].role: expected 'user' here, got 'assistant'", ":3: messages[2].role: system turn allowed only first", ":4: messages: no assistant turn"]),
    "sharegpt_bad.jsonl": (_write(_lines({"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}, {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt"}]})), [":1: conversations[1].from: unknown role 'robot'", ":2: conversations[1].value: missing"]),
    "a_directory": (_directory, [": is a directory"]),
    "missing.jsonl": (_missing, [": no such file"]),
    "truncated_array.json": (_write(b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "a", "output": "b"},\n{"instruction": "a", "outp'), [":4: not valid JSON"]),
    "gzip.jsonl": (_write(b"\x1f\x8b\x08\x00" + bytes(64)), [": gzip-compressed"]),
}


def build(directory: Path, name: str) -> Path:
    """Write one case into `directory` and return its path."""
    builder, _ = CASES[name]
    path = directory / name
    builder(path)
    return path


def utf16_with_bom(path: Path, rows: list[dict]) -> Path:
    """Good rows in UTF-16 LE with its byte-order mark: readable for sure."""
    path.write_bytes(codecs.BOM_UTF16_LE + "".join(json.dumps(r) + "\n" for r in rows).encode("utf-16-le"))
    return path
