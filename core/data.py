"""Datasets for fine-tuning: check every row before any model loads, then render and tokenize.

    load_rows(path_or_hub, subset, split)   -> Loaded (rows with their line, problems)  [data_load]
    detect_format(rows)                     -> "alpaca" | "chat" | ...                 [data_formats]
    validate(path_or_hub, ...)              -> DataReport (problems as file:line: field: what)
    render_example(row, tokenizer, ...)     -> RenderedExample (exact text, per-token loss spans)
    build_dataset(config, tokenizer)        -> (train_ds, eval_ds) for the engine

What is said along the way is a list of Note (kind "info" or "warning", set where the note is
made; the engine emits each as an event of that kind, the CLI and the Data screen show them).

Chat rows (chat, sharegpt, alpaca) go through the tokenizer's chat template. A tokenizer with
no template gets ftwiz's fallback, FALLBACK_CHAT_TEMPLATE, which renders:

    <bos>{system}\\n\\n
    ### User:\\n{user}\\n\\n
    ### Assistant:\\n{assistant}<eos>\\n\\n
    (and "### Assistant:\\n" as the generation prompt)

prompt_completion and text rows are not templated: prompt + completion + eos, or text + eos,
as TRL does for non-conversational data.

Loss: with completion_only_loss, only assistant turns (with the template's end-of-turn tokens,
so the model learns to stop) and completions carry loss; every other token has label -100.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ftwiz.core.data_formats import FORMATS, Example, check_row, detect_format, row_format, to_example
from ftwiz.core.data_load import DataError, Loaded, Note, Problem, Row, load_rows
from ftwiz.core.errors import UserError

if TYPE_CHECKING:
    from ftwiz.core.config import RunConfig

__all__ = [
    "FALLBACK_CHAT_TEMPLATE",
    "FORMATS",
    "DataError",
    "DataReport",
    "Note",
    "Problem",
    "RenderedExample",
    "TokenSpan",
    "build_dataset",
    "detect_format",
    "load_rows",
    "prepare_tokenizer",
    "render_example",
    "token_stats",
    "validate",
    "validate_rows",
]

DEFAULT_LIMIT = 20
STATS_SAMPLE = 20_000
HISTOGRAM_BUCKETS = 20

FALLBACK_CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### User:\n' + message['content'] + '\n\n' }}"
    "{% else %}{{ '### Assistant:\n' + message['content'] + (eos_token if eos_token else '') + '\n\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)


@dataclass
class DataReport:
    """What `ftwiz data` prints and the Data screen shows. `ok`: usable for training."""

    source: str
    format: str | None
    rows: int
    problems: list[Problem]
    problems_total: int
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    limit: int = DEFAULT_LIMIT
    drop_invalid: bool = False
    dropped: dict[str, int] = field(default_factory=dict)  # why -> rows or lines left out (drop_invalid)
    kept: list[Row] = field(default_factory=list, repr=False)  # the usable rows, in order

    @property
    def ok(self) -> bool:
        """Usable for training: no problem at all, or with drop_invalid, some usable row and no
        problem with the whole source (no row format found, nothing to read)."""
        if self.drop_invalid:
            return bool(self.kept) and all(p.line is not None for p in self.problems)
        return self.problems_total == 0 and self.rows > 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def dropped_lines(self) -> list[str]:
        """'N rows: why' per reason, the most common first."""
        return [f"{n:,} {'row' if n == 1 else 'rows'}: {why}"
                for why, n in sorted(self.dropped.items(), key=lambda item: (-item[1], item[0]))]

    def problem_lines(self) -> list[str]:
        lines = [str(p) for p in self.problems]
        if self.problems_total > len(self.problems):
            lines.append(f"... and {self.problems_total - len(self.problems)} more")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "rows": self.rows,
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "problems_total": self.problems_total,
            "problems_more": self.problems_total - len(self.problems),
            "stats": self.stats,
            "notes": [note.message for note in self.notes],
            "dropped": dict(self.dropped) if self.drop_invalid else None,
            "kept_rows": len(self.kept) if self.drop_invalid else None,
        }


@dataclass
class TokenSpan:
    text: str
    trains: bool
    token_id: int | None = None


@dataclass
class RenderedExample:
    """Exactly what the model sees. Without a tokenizer, spans are text pieces, not tokens."""

    text: str
    spans: list[TokenSpan]
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    prompt_text: str = ""
    reference_text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "spans": [{"text": s.text, "trains": s.trains, "token_id": s.token_id} for s in self.spans],
            "tokens": len(self.input_ids),
            "trained_tokens": sum(label != -100 for label in self.labels),
            "truncated": self.truncated,
        }


# -- validation ------------------------------------------------------------------------


def validate(
    path_or_hub: str,
    subset: str | None = None,
    split: str = "train",
    *,
    format: str = "auto",
    tokenizer: Any = None,
    max_length: int | None = None,
    max_rows: int | None = None,
    limit: int = DEFAULT_LIMIT,
    drop_invalid: bool = False,
) -> DataReport:
    """Read and check every row; never raises for bad data (problems are in the report).
    `drop_invalid`: bad rows and lines are left out (counted by reason) instead of refusing the file."""
    try:
        loaded = load_rows(path_or_hub, subset, split, max_rows=max_rows)
    except DataError as exc:
        return DataReport(str(path_or_hub), None, 0, exc.problems[:limit], len(exc.problems) + exc.more, limit=limit,
                          drop_invalid=drop_invalid)
    return validate_rows(loaded, format=format, tokenizer=tokenizer, max_length=max_length, limit=limit,
                         drop_invalid=drop_invalid)


def validate_rows(
    rows: Loaded | list[Any],
    source: str = "<rows>",
    *,
    format: str = "auto",
    tokenizer: Any = None,
    max_length: int | None = None,
    limit: int = DEFAULT_LIMIT,
    with_stats: bool = True,
    drop_invalid: bool = False,
) -> DataReport:
    """Check rows already read (a Loaded, or plain values numbered from 1). With `drop_invalid`,
    the report keeps the usable rows and counts the others by reason (`dropped`)."""
    loaded = rows if isinstance(rows, Loaded) else Loaded(source, "row", [Row(i + 1, r) for i, r in enumerate(rows)])
    if format != "auto" and format not in FORMATS:
        raise UserError(f"data.format: unknown format {format!r} (allowed: auto, {', '.join(FORMATS)})")
    problems = list(loaded.problems)
    fmt = None if format == "auto" else format
    if fmt is None and loaded.rows:
        try:
            fmt = detect_format([r.data for r in loaded.rows])
        except UserError as exc:
            problems.append(Problem(loaded.source, None, None, str(exc)))
    good: list[Example] = []
    kept: list[Row] = []
    dropped: Counter[str] = Counter(drop_reason(p) for p in problems if p.line is not None)
    if fmt is not None:
        for row in loaded.rows:
            found = _unicode_problems(row.data) or check_row(row.data, fmt)
            row_problems = [Problem(loaded.source, row.line, name, msg, loaded.unit) for name, msg in found]
            problems += row_problems
            if row_problems:
                dropped[drop_reason(row_problems[0])] += 1
            else:
                good.append(to_example(row.data, fmt))
                kept.append(row)
    if not loaded.rows and not problems:
        problems.append(Problem(loaded.source, None, None, "no rows (only blank lines or an empty list)"))
    problems.sort(key=lambda p: (p.line is not None, p.line or 0))
    report = DataReport(
        loaded.source, fmt, len(loaded.rows), problems[:limit], len(problems), notes=list(loaded.notes), limit=limit,
        drop_invalid=drop_invalid, dropped=dict(dropped) if drop_invalid else {}, kept=kept if drop_invalid else [],
    )
    if fmt and loaded.rows:
        counts: dict[str, int] = {}
        for row in loaded.rows:
            own = row_format(row.data, fuzzy=False)
            counts[own or "unknown"] = counts.get(own or "unknown", 0) + 1
        if len(counts) > 1:
            report.notes.append(Note.warning("formats by row: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))))
    if with_stats and good:
        report.stats = token_stats(good, tokenizer, max_length)
        report.stats["valid_rows"] = len(good)
    return report


def _unicode_problems(value: Any, field: str | None = None, depth: int = 0) -> list[tuple[str | None, str]]:
    """A string that is not valid Unicode (a lone UTF-16 surrogate, as JSON's \\ud800 escapes
    allow): no tokenizer can encode it, so the row is refused here rather than in the run."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(value[exc.start])
            return [(field, f"text is not valid Unicode: a lone surrogate U+{code:04X} at character {exc.start + 1} "
                            "(a \\ud800-style escape without its pair); fix or remove it")]
        return []
    if depth > 20:
        return []
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unicode_problems(item, f"{field}.{key}" if field else str(key), depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _unicode_problems(item, f"{field}[{i}]" if field else f"[{i}]", depth + 1)
            if found:
                return found
    return []
_INDEX = re.compile(r"\[[1-9][0-9]*\]")
_DETAIL = re.compile(r" \(|; |: ")


def drop_reason(problem: Problem) -> str:
    """A problem without what varies from row to row: 'conversations[0].from: expected 'human' here,
    got 'gpt'', 'not valid JSON'; turns after the first are [n]. drop_invalid counts rows by it."""
    message = _DETAIL.split(problem.message, maxsplit=1)[0]
    return f"{_INDEX.sub('[n]', problem.field)}: {message}" if problem.field else message


# -- statistics ----------------------------------------------------------------------


def token_stats(examples: list[Example], tokenizer: Any = None, max_length: int | None = None) -> dict[str, Any]:
    """Token lengths (p50/p95/max), share truncated at max_length, a suggestion and a histogram.

    Without a tokenizer the counts are whitespace words, labelled as an estimate. Over
    STATS_SAMPLE rows, a seeded sample is counted and the stats say so.
    """
    sample = examples
    if len(examples) > STATS_SAMPLE:
        sample = random.Random(0).sample(examples, STATS_SAMPLE)
    if tokenizer is not None:
        lengths = _token_lengths(sample, tokenizer)
        counter = f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}".strip()
    else:
        lengths = [len(_plain_text(e).split()) for e in sample]
        counter = "whitespace words (estimate: no tokenizer given)"
    ordered = sorted(lengths)

    def pct(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]

    suggested = max(64, -(-pct(0.99) // 64) * 64)
    stats: dict[str, Any] = {
        "rows": len(examples),
        "counted_rows": len(sample),
        "sampled": len(sample) < len(examples),
        "token_counter": counter,
        "estimate": tokenizer is None,
        "p50": pct(0.5),
        "p95": pct(0.95),
        "max": ordered[-1],
        "mean": round(sum(ordered) / len(ordered), 1),
        "max_length": max_length,
        "truncated_rows": None,
        "truncated_share": None,
        "suggested_max_length": suggested,
        "suggested_reason": "smallest multiple of 64 that fits 99% of rows",
        "histogram": _histogram(ordered),
    }
    if max_length:
        cut = sum(length > max_length for length in ordered)
        stats["truncated_rows"] = cut
        stats["truncated_share"] = round(cut / len(ordered), 4)
    return stats


def _token_lengths(examples: list[Example], tokenizer: Any) -> list[int]:
    """Token counts of the full rendered rows: one template call per row, batched tokenizing."""
    template = getattr(tokenizer, "chat_template", None) or FALLBACK_CHAT_TEMPLATE
    templated = [e for e in examples if e.messages is not None]
    plain = [e for e in examples if e.messages is None]
    lengths = []
    if templated:
        texts = [tokenizer.apply_chat_template(e.messages, tokenize=False, chat_template=template) for e in templated]
        lengths += [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    if plain:
        texts = [_render_text(e, tokenizer)[0] for e in plain]
        lengths += [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    return lengths


def _histogram(ordered: list[int]) -> dict[str, list[int]]:
    top = max(ordered[-1], 1)
    width = max(1, -(-top // HISTOGRAM_BUCKETS))
    buckets = -(-top // width) + (1 if top % width == 0 else 0)
    edges = [i * width for i in range(buckets + 1)]
    counts = [0] * buckets
    for length in ordered:
        counts[min(length // width, buckets - 1)] += 1
    return {"edges": edges, "counts": counts}


def _plain_text(example: Example) -> str:
    if example.messages is not None:
        return "\n".join(m["content"] for m in example.messages)
    return "".join(text for text, _ in example.segments)


# -- tokenizer and rendering ---------------------------------------------------------------


def prepare_tokenizer(tokenizer: Any, chat: bool = True) -> list[Note]:
    """Give the tokenizer a pad token and a chat template when it lacks them; say what was done.

    The pad token chosen is an info note; the fallback chat template a warning (the model
    learns ftwiz's format, not its own) when the rows are chat rows (`chat`).

    Pad falls back to eos, then unk. Padding never carries loss: labels are built here, not
    from pad positions, so a pad equal to eos does not stop the model learning to end.
    """
    notes: list[Note] = []
    if tokenizer.pad_token is None:
        for name in ("eos_token", "unk_token"):
            token = getattr(tokenizer, name)
            if token is not None:
                tokenizer.pad_token = token
                notes.append(Note.info(f"the tokenizer has no pad token: using its {name.split('_')[0]} token {token!r} for padding"))
                break
        else:
            raise UserError("tokenizer: no pad, eos or unk token to pad with; add a pad token to the tokenizer")
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        if chat:  # prompt/completion and text rows never go through the template: nothing to warn about
            notes.append(Note.warning("the tokenizer has no chat template: using ftwiz's fallback (### User: / ### Assistant:)"))
    return notes


def render_example(
    row: dict[str, Any] | Example,
    tokenizer: Any = None,
    *,
    format: str = "auto",
    completion_only_loss: bool = True,
    max_length: int | None = None,
) -> RenderedExample:
    """One row exactly as the model sees it, with the tokens that carry loss marked.

    Uses the tokenizer's chat template (or the fallback) without changing the tokenizer.
    With no tokenizer, renders the fallback template and returns text pieces as spans.
    """
    example = row if isinstance(row, Example) else _example_from_row(row, format)
    if tokenizer is None:
        text, ranges = _render_text(example, None)
        spans = _piece_spans(text, ranges, completion_only_loss)
        return RenderedExample(text, spans, [], [], False, *_prompt_and_reference(text, ranges))
    ids, labels, spans, text, ranges = _encode(example, tokenizer, completion_only_loss, with_spans=True)
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, labels, spans = ids[:max_length], labels[:max_length], spans[:max_length]
        text = "".join(span.text for span in spans)
    return RenderedExample(text, spans, ids, labels, truncated, *_prompt_and_reference(text, ranges))


def _example_from_row(row: Any, format: str) -> Example:
    fmt = detect_format([row]) if format == "auto" else format
    problems = check_row(row, fmt)
    if problems:
        raise UserError("; ".join(f"{name}: {msg}" if name else msg for name, msg in problems))
    return to_example(row, fmt)


def _render_text(example: Example, tokenizer: Any) -> tuple[str, list[tuple[int, int]]]:
    """Full text and the character ranges that are completions (assistant turns)."""
    if example.messages is None:
        text, ranges = "", []
        for piece, is_completion in example.segments:
            if is_completion:
                ranges.append((len(text), len(text) + len(piece)))
            text += piece
        eos = getattr(tokenizer, "eos_token", None) if tokenizer is not None else None
        if eos and not text.endswith(eos):
            if ranges and ranges[-1][1] == len(text):  # the end token belongs to the completion
                ranges[-1] = (ranges[-1][0], len(text) + len(eos))
            else:
                ranges.append((len(text), len(text) + len(eos)))
            text += eos
        return text, ranges
    template = (getattr(tokenizer, "chat_template", None) if tokenizer is not None else None) or FALLBACK_CHAT_TEMPLATE

    def apply(messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
        if tokenizer is None:
            return _jinja_render(template, messages, generation_prompt)
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt, chat_template=template
        )

    messages = example.messages
    text = apply(messages)
    ranges: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, upto = apply(messages[:index], True), apply(messages[: index + 1])
        if upto.startswith(before) and text.startswith(upto):
            ranges.append((len(before), len(upto)))
        else:  # the template rewrites earlier turns: train on the answer text itself
            start = text.find(message["content"], ranges[-1][1] if ranges else 0)
            if start >= 0:
                ranges.append((start, start + len(message["content"])))
    return text, ranges


def _jinja_render(template: str, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment()
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=generation_prompt, bos_token="", eos_token=""
    )


def _piece_spans(text: str, ranges: list[tuple[int, int]], completion_only_loss: bool) -> list[TokenSpan]:
    cuts = sorted({0, len(text), *(p for r in ranges for p in r)})
    spans = []
    for start, end in zip(cuts, cuts[1:]):
        if end > start:
            trains = not completion_only_loss or any(a <= start and end <= b for a, b in ranges)
            spans.append(TokenSpan(text[start:end], trains))
    return spans


def _prompt_and_reference(text: str, ranges: list[tuple[int, int]]) -> tuple[str, str]:
    """The text before the last answer and the answer: what samples generate from and compare to."""
    if not ranges:
        return text, ""
    start, end = ranges[-1]
    return text[:start], text[start:end]


def _encode(example: Example, tokenizer: Any, completion_only_loss: bool, with_spans: bool = False):
    text, ranges = _render_text(example, tokenizer)
    templated = example.messages is not None
    try:
        encoding = tokenizer(text, add_special_tokens=not templated, return_offsets_mapping=True)
    except NotImplementedError:
        raise UserError(
            "tokenizer: this model only has a slow (Python) tokenizer; ftwiz needs a fast one "
            "(tokenizer.json) to mark which tokens carry loss"
        ) from None
    ids = list(encoding["input_ids"])
    offsets = encoding["offset_mapping"]
    trains = [
        not completion_only_loss or (end > start and any(start < b and end > a for a, b in ranges))
        for start, end in offsets
    ]
    labels = [token if train else -100 for token, train in zip(ids, trains)]
    if not with_spans:
        return ids, labels
    spans, previous = [], 0
    for token, (start, end), train in zip(ids, offsets, trains):
        if end <= start or end <= previous:
            piece = tokenizer.convert_ids_to_tokens(token) if end <= start else ""
        else:
            piece, previous = text[previous:end], end
        spans.append(TokenSpan(piece, train, token))
    if spans and previous < len(text):
        spans[-1].text += text[previous:]
    return ids, labels, spans, text, ranges


# -- datasets for the engine ----------------------------------------------------------------


def build_dataset(config: RunConfig, tokenizer: Any, notes: list[Note] | None = None, found: dict | None = None):
    """(train_ds, eval_ds) as datasets.Dataset; eval_ds is None when eval_fraction is 0.

    Columns: input_ids, attention_mask, labels (-100 where no loss), completion_mask (1 where
    loss; for TRL versions whose collator builds labels from it), all cut to
    training.max_length; eval_ds also has prompt_text and reference_text for samples.
    The tokenizer gets a pad token and a chat template if missing (see prepare_tokenizer);
    what was done is appended to `notes` as Note (the split sizes and the pad token are info;
    examples cut or left out, and the fallback template, are warnings); what was detected
    goes in `found` ("data_format"). Raises DataError, before any model work, when a row is bad.
    """
    import datasets

    data, training = config.data, config.training
    said = notes if notes is not None else []
    loaded = load_rows(data.path, data.subset, data.split, max_rows=data.max_rows)
    report = validate_rows(loaded, format=data.format, with_stats=False, drop_invalid=data.drop_invalid)
    if not report.ok:
        raise DataError(report.problems, report.problems_total - len(report.problems))
    said += prepare_tokenizer(tokenizer, chat=report.format not in ("prompt_completion", "text"))
    if found is not None:
        found["data_format"] = report.format
    rows = report.kept if data.drop_invalid else loaded.rows
    if report.dropped:
        said.append(Note.info(f"data.drop_invalid: {report.dropped_total:,} bad rows or lines left out, "
                              f"{len(rows):,} kept ({'; '.join(report.dropped_lines())})"))
    examples = [to_example(row.data, report.format) for row in rows]
    order = list(range(len(examples)))
    random.Random(training.seed).shuffle(order)
    n_eval = 0 if data.eval_fraction == 0 or len(examples) < 2 else max(1, round(len(examples) * data.eval_fraction))
    eval_ids, train_ids = sorted(order[:n_eval]), sorted(order[n_eval:])

    def columns(indices: list[int], with_text: bool) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "completion_mask": []}
        if with_text:
            out["prompt_text"], out["reference_text"] = [], []
        dropped = truncated = 0
        for index in indices:
            rendered = render_example(
                examples[index], tokenizer, completion_only_loss=data.completion_only_loss, max_length=training.max_length
            )
            truncated += rendered.truncated
            if all(label == -100 for label in rendered.labels):
                dropped += 1
                continue
            out["input_ids"].append(rendered.input_ids)
            out["attention_mask"].append([1] * len(rendered.input_ids))
            out["labels"].append(rendered.labels)
            out["completion_mask"].append([int(label != -100) for label in rendered.labels])
            if with_text:
                out["prompt_text"].append(rendered.prompt_text)
                out["reference_text"].append(rendered.reference_text)
        if truncated:
            said.append(Note.warning(f"{truncated} of {len(indices)} examples cut to max_length {training.max_length}"))
        if dropped:
            said.append(Note.warning(f"{dropped} examples left out: no answer token within max_length {training.max_length}"))
        return out

    train = columns(train_ids, with_text=False)
    if not train["input_ids"]:
        raise UserError(
            f"{data.path}: no training example keeps an answer within training.max_length "
            f"{training.max_length}; raise max_length"
        )
    train_ds = datasets.Dataset.from_dict(train)
    held_out = columns(eval_ids, with_text=True)
    eval_ds = datasets.Dataset.from_dict(held_out) if held_out["input_ids"] else None
    said.append(
        Note.info(f"{report.format} data: {len(train_ds)} training and {len(eval_ds) if eval_ds else 0} evaluation examples")
    )
    return train_ds, eval_ds
