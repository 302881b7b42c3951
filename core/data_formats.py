"""Row formats: which one a file holds, what is wrong with each row, and one shape for all.

Formats (the field names a row must have):
    alpaca             instruction, output (input, system optional)
    chat               messages: [{role: system|user|assistant, content}]
    sharegpt           conversations: [{from: system|human|gpt, value}]
    prompt_completion  prompt, completion
    text               text

Chat turns: an optional system turn first, then user and assistant alternating, starting with
user and ending with assistant (a trailing question with no answer teaches nothing).
Other fields (ids, metadata) are ignored, unless one is a near-miss of a missing required field
("instrucion"), which is reported with the correction.
"""

from __future__ import annotations

import difflib
import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ftwiz.core.errors import UserError

FORMATS = ("alpaca", "chat", "sharegpt", "prompt_completion", "text")
REQUIRED: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
OPTIONAL: dict[str, tuple[str, ...]] = {"alpaca": ("input", "system"), "sharegpt": ("system",)}
KNOWN_FIELDS = tuple(sorted({f for fields in REQUIRED.values() for f in fields} | {"input", "system"}))
CHAT_ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_TURN_KEYS = {"chat": ("role", "content"), "sharegpt": ("from", "value")}


@dataclass
class Example:
    """A valid row in one shape: chat turns (rendered with a chat template) or raw segments.

    `segments` are (text, is_completion) pieces joined as they are, for prompt_completion and text.
    """

    messages: list[dict[str, str]] | None = None
    segments: list[tuple[str, bool]] = field(default_factory=list)


def closest_field(name: str, candidates: list[str] | tuple[str, ...] = KNOWN_FIELDS) -> str | None:
    return _closest(str(name).lower(), tuple(candidates))


@functools.lru_cache(maxsize=4096)  # the same few keys repeat on every row
def _closest(name: str, candidates: tuple[str, ...]) -> str | None:
    matches = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return matches[0] if matches else None


def row_format(row: Any, fuzzy: bool = True) -> str | None:
    """The format a row's keys point to, reading near-miss keys as the field they miss."""
    if not isinstance(row, dict):
        return None
    keys = {str(k) for k in row}
    if fuzzy:
        keys |= {closest_field(k) or k for k in keys}
    best, best_hits = None, 0
    for fmt, required in REQUIRED.items():
        hits = sum(name in keys for name in required)
        if hits == len(required):
            return fmt
        if hits > best_hits:
            best, best_hits = fmt, hits
    return best


def detect_format(rows: list[Any]) -> str:
    """The format most rows have; UserError when no row looks like any known format."""
    counts = Counter(fmt for fmt in (row_format(r) for r in rows) if fmt)
    if not counts:
        seen = sorted({str(k) for r in rows[:50] if isinstance(r, dict) for k in r})[:12]
        raise UserError(
            f"no known row format: found fields {seen or 'none'}; expected one of "
            + "; ".join(f"{fmt} ({', '.join(req)})" for fmt, req in REQUIRED.items())
        )
    return counts.most_common(1)[0][0]


def check_row(row: Any, fmt: str) -> list[tuple[str | None, str]]:
    """Everything wrong with one row as (field, message); empty when the row is usable."""
    if not isinstance(row, dict):
        return [(None, f"expected a JSON object with {', '.join(REQUIRED[fmt])}, got {_kind(row)}")]
    own = row_format(row, fuzzy=False)
    if own and own != fmt and all(name in row for name in REQUIRED[own]) and not all(name in row for name in REQUIRED[fmt]):
        return [("format", f"this row is {own} ({', '.join(REQUIRED[own])}) but the file is {fmt}; one file holds one format")]
    problems: list[tuple[str | None, str]] = []
    for name in REQUIRED[fmt]:
        if name not in row or row[name] is None:
            problems.append((name, _missing(name, row)))
    if problems:
        return problems
    if fmt in _TURN_KEYS:
        return _check_turns(row[REQUIRED[fmt][0]], fmt)
    for name in REQUIRED[fmt]:
        problems += _check_text(name, row[name], required=True)
    for name in OPTIONAL.get(fmt, ()):
        if row.get(name) is not None:
            problems += _check_text(name, row[name], required=False)
    return problems


def to_example(row: dict[str, Any], fmt: str) -> Example:
    """A row that passed check_row, in one shape."""
    if fmt == "text":
        return Example(segments=[(row["text"], True)])
    if fmt == "prompt_completion":
        return Example(segments=[(row["prompt"], False), (row["completion"], True)])
    messages: list[dict[str, str]] = []
    if fmt == "alpaca":
        if (row.get("system") or "").strip():
            messages.append({"role": "system", "content": row["system"]})
        user = row["instruction"]
        if (row.get("input") or "").strip():
            user = f"{user}\n\n{row['input']}"
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
        return Example(messages=messages)
    role_key, content_key = _TURN_KEYS[fmt]
    if fmt == "sharegpt" and (row.get("system") or "").strip():
        messages.append({"role": "system", "content": row["system"]})
    for turn in row[REQUIRED[fmt][0]]:
        role = turn[role_key] if fmt == "chat" else SHAREGPT_ROLES[turn[role_key]]
        messages.append({"role": role, "content": turn[content_key]})
    return Example(messages=messages)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def _missing(name: str, row: dict[str, Any]) -> str:
    if name in row:
        return "is null; must be a non-empty string" if name not in ("messages", "conversations") else "is null"
    near = [str(k) for k in row if str(k) not in KNOWN_FIELDS and closest_field(str(k), [name])]
    if near:
        return f'missing; found "{near[0]}": did you mean "{name}"?'
    return f"missing (row has: {', '.join(sorted(map(str, row))[:8]) or 'no fields'})"


def _check_text(name: str, value: Any, required: bool) -> list[tuple[str, str]]:
    if not isinstance(value, str):
        return [(name, f"must be a string, got {_kind(value)}")]
    if required and not value.strip():
        return [(name, "empty string" if not value else "only whitespace")]
    return []


def _check_turns(turns: Any, fmt: str) -> list[tuple[str | None, str]]:
    list_name = REQUIRED[fmt][0]
    role_key, content_key = _TURN_KEYS[fmt]
    allowed = CHAT_ROLES if fmt == "chat" else tuple(SHAREGPT_ROLES)
    if not isinstance(turns, list):
        return [(list_name, f"must be a list of turns, got {_kind(turns)}")]
    if not turns:
        return [(list_name, "empty list: no turns")]
    problems: list[tuple[str | None, str]] = []
    roles: list[str | None] = []
    for index, turn in enumerate(turns):
        where = f"{list_name}[{index}]"
        if not isinstance(turn, dict):
            problems.append((where, f"expected an object with {role_key} and {content_key}, got {_kind(turn)}"))
            roles.append(None)
            continue
        role = turn.get(role_key)
        if role_key not in turn:
            near = [k for k in map(str, turn) if closest_field(k, [role_key])]
            hint = f'; found "{near[0]}": did you mean "{role_key}"?' if near else ""
            problems.append((f"{where}.{role_key}", "missing" + hint))
        elif not isinstance(role, str) or role not in allowed:
            guess = closest_field(role, allowed) if isinstance(role, str) else None
            hint = f'; did you mean "{guess}"?' if guess else ""
            problems.append((f"{where}.{role_key}", f"unknown role {role!r} (allowed: {', '.join(allowed)}){hint}"))
            role = None
        if content_key not in turn or turn[content_key] is None:
            near = [k for k in map(str, turn) if k != content_key and closest_field(k, [content_key])]
            hint = f'; found "{near[0]}": did you mean "{content_key}"?' if near else ""
            problems.append((f"{where}.{content_key}", "missing" + hint))
        else:
            problems += _check_text(f"{where}.{content_key}", turn[content_key], required=True)
        roles.append(SHAREGPT_ROLES.get(role) if fmt == "sharegpt" and isinstance(role, str) else role)
    if None in roles:
        return problems
    return problems + _check_order(roles, list_name, role_key, fmt)


def _check_order(roles: list[str | None], list_name: str, role_key: str, fmt: str) -> list[tuple[str | None, str]]:
    shown = {"user": "user", "assistant": "assistant", "system": "system"}
    if fmt == "sharegpt":
        shown = {"user": "human", "assistant": "gpt", "system": "system"}
    if "assistant" not in roles:
        return [(list_name, f"no {shown['assistant']} turn: nothing to learn from")]
    expected = "user"
    for index, role in enumerate(roles):
        if role == "system":
            if index != 0:
                return [(f"{list_name}[{index}].{role_key}", f"{shown['system']} turn allowed only first")]
            continue
        if role != expected:
            return [
                (
                    f"{list_name}[{index}].{role_key}",
                    f"expected {shown[expected]!r} here, got {shown[role]!r} "
                    f"(turns alternate {shown['user']}/{shown['assistant']}, starting with {shown['user']})",
                )
            ]
        expected = "assistant" if role == "user" else "user"
    if roles[-1] != "assistant":
        return [(f"{list_name}[{len(roles) - 1}]", f"ends with a {shown['user']} turn that has no answer")]
    return []
