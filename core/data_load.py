"""Reading datasets into rows that remember where they came from (file and line, or row number).

Local JSONL is read line by line here, in bounded memory, so every problem names its line and
byte offset; JSON arrays are walked element by element for the same reason. CSV, Parquet and
Hub datasets go through `datasets` (row numbers, 1-based, are their location).

Encodings: UTF-8 with or without BOM; UTF-16 and UTF-32 when a byte-order mark says so for sure.
Anything else that does not decode is a problem naming the line and the byte offset. NUL bytes
without such a mark mean binary data, reported once for the file.

One row may be at most `MAX_ROW_BYTES`: a longer line (say a 50 MB single line) is skipped in
1 MiB chunks and reported, never held in memory whole.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from ftwiz.core.errors import UserError
from ftwiz.core.hub import hub_reachable

MAX_ROW_BYTES = 8 * 1024 * 1024
DEMO_DATA = "demo"  # data.path of the built-in demo dataset (core/demo.py), unless a file has that name
_SNIFF_BYTES = 8192
_SKIP_CHUNK = 1024 * 1024
JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSON_SUFFIXES = (".json",)
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
ALL_SUFFIXES = JSONL_SUFFIXES + JSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES
_JSON_CONTAINER_KEYS = ("data", "rows", "examples", "train")
_SPACE = re.compile(r"[ \t\r\n]*")  # JSON's white space
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong, printed as `file:line: field: what is wrong`.

    `line` is the 1-based line for text files, or the 1-based row number when `unit` is "row"
    (CSV, Parquet, Hub, JSON objects); None when the problem concerns the whole source.
    """

    file: str
    line: int | None
    field: str | None
    message: str
    unit: str = "line"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" if self.unit == "line" else f":row {self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": str(self)}


NoteKind = Literal["info", "warning"]
NOTE_KINDS: tuple[NoteKind, ...] = ("info", "warning")


@dataclass(frozen=True)
class Note:
    """Something said while reading or preparing data, typed where it is said.

    `info`: a fact (how a file was read, the train/evaluation split, the pad token chosen);
    `warning`: something the user should look at (examples cut or left out, the fallback chat
    template). The engine sends each note as an event of its kind (docs/events.md), so
    rewording a message never changes how it is shown. `str(note)` is the message.
    """

    kind: NoteKind
    message: str

    def __post_init__(self) -> None:
        if self.kind not in NOTE_KINDS:
            raise ValueError(f"note kind {self.kind!r}: expected one of {', '.join(NOTE_KINDS)}")

    def __str__(self) -> str:
        return self.message

    @classmethod
    def info(cls, message: str) -> Note:
        return cls("info", message)

    @classmethod
    def warning(cls, message: str) -> Note:
        return cls("warning", message)


class DataError(UserError):
    """Data that cannot be used; carries every problem found (up to the report's limit)."""

    def __init__(self, problems: list[Problem], more: int = 0):
        self.problems = list(problems)
        self.more = more
        shown = "; ".join(str(p) for p in self.problems[:3])
        hidden = len(self.problems) - 3 + more
        if hidden > 0:
            shown += f" (and {hidden} more; `ftwiz data` lists them)"
        super().__init__(shown)


@dataclass
class Row:
    line: int
    data: Any


@dataclass
class Loaded:
    """Rows of one source plus the problems met while reading it (bad lines are left out)."""

    source: str
    unit: str
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


def load_rows(
    path_or_hub: str | Path,
    subset: str | None = None,
    split: str = "train",
    *,
    max_rows: int | None = None,
    max_row_bytes: int = MAX_ROW_BYTES,
) -> Loaded:
    """Read a local file, the built-in demo rows, or a Hub dataset. Whole-source failures raise DataError."""
    spec = str(path_or_hub)
    if not spec.strip():
        _fail(spec, "empty dataset path (give a file or a Hub dataset id)")
    path = Path(spec).expanduser()
    if path.is_dir():
        _fail(spec, f"is a directory, expected a file ({', '.join(ALL_SUFFIXES)}) or a Hub dataset id")
    if not path.exists():
        if spec == DEMO_DATA:
            from ftwiz.core.demo import train_rows

            rows = train_rows()[:max_rows] if max_rows else train_rows()
            return Loaded(source=spec, unit="row", rows=[Row(i + 1, r) for i, r in enumerate(rows)])
        if looks_like_hub_id(spec):
            hub = _load_hub(spec, subset, split, max_rows)
            _drop_oversized(hub, max_row_bytes)
            return hub
        _fail(spec, "no such file (and not a Hub dataset id such as 'org/name')")
    _check_regular(path, spec)
    try:
        loaded = _load_local(path, spec, max_rows, max_row_bytes)
    except OSError as exc:  # unreadable (permissions), vanished, an I/O error: one line
        _fail(spec, f"cannot read it: {exc.strerror or _first_line(exc)}")
    if loaded.unit == "row":  # rows that were not read line by line: their size is checked here
        _drop_oversized(loaded, max_row_bytes)
    return loaded


def _check_regular(path: Path, spec: str) -> None:
    """Only regular files are read as data: a named pipe could block forever, /dev/zero never ends."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        _fail(spec, f"cannot read it: {exc.strerror or exc}")
    if not stat.S_ISREG(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
        _fail(spec, f"is {kind}; only regular files are read as data")


def _row_bytes(value: Any, budget: int) -> int:
    """About how many bytes a row holds (UTF-8 text, numbers as text), counting stops past budget."""
    total, stack = 0, [value]
    while stack and total <= budget:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (bytes, bytearray)):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
            total += sum(len(str(k)) for k in item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            total += 8
    return total


def _drop_oversized(loaded: Loaded, max_row_bytes: int) -> None:
    kept = []
    for row in loaded.rows:
        size = _row_bytes(row.data, max_row_bytes)
        if size > max_row_bytes:
            loaded.problems.append(Problem(
                loaded.source, row.line, None,
                f"row is over {max_row_bytes:,} bytes, the limit per row; no training example is that long: "
                "split it or remove it", loaded.unit))
        else:
            kept.append(row)
    loaded.rows = kept


def _load_local(path: Path, spec: str, max_rows: int | None, max_row_bytes: int) -> Loaded:
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _load_tabular(path, "parquet", max_rows)
    if suffix not in ALL_SUFFIXES:
        _fail(spec, f"unsupported file type {suffix or '(none)'!r} (allowed: {', '.join(ALL_SUFFIXES)})")
    encoding, head = _sniff(path)
    if suffix in CSV_SUFFIXES:
        if encoding not in ("utf-8", "utf-8-sig"):
            _fail(spec, f"CSV must be UTF-8; this file has a {encoding.upper()} byte-order mark")
        return _load_tabular(path, "csv", max_rows)
    loaded = Loaded(source=spec, unit="line")
    if encoding.startswith(("utf-16", "utf-32")):
        loaded.notes.append(Note.info(f"read as {encoding.upper()} (byte-order mark found)"))
    if suffix in JSON_SUFFIXES and head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] != b"{":
        return _load_json_document(path, encoding, loaded, max_rows, max_row_bytes=max_row_bytes)
    if suffix in JSONL_SUFFIXES and _first_char(path, encoding) == "[":
        loaded.notes.append(Note.warning(f"a JSON array, not one object per line: read as a JSON array "
                                         f"(rename the file to {path.stem}.json)"))
        return _load_json_document(path, encoding, loaded, max_rows, max_row_bytes=max_row_bytes)
    if suffix in JSON_SUFFIXES:
        document = _load_json_document(path, encoding, loaded, max_rows, lines_fallback=True, max_row_bytes=max_row_bytes)
        if document is not None:
            return document
        loaded.notes.append(Note.info("a .json file with one object per line: read as JSON lines"))
    _read_json_lines(path, encoding, loaded, max_rows, max_row_bytes)
    return loaded


def looks_like_hub_id(spec: str) -> bool:
    """'org/name' or 'name' without a data-file suffix; local-looking paths never are."""
    return bool(_HUB_ID.match(spec)) and not spec.lower().endswith(ALL_SUFFIXES)


def _fail(source: str, message: str) -> None:
    raise DataError([Problem(source, None, None, message)])


def _sniff(path: Path) -> tuple[str, bytes]:
    """Encoding from the byte-order mark; refuse empty, binary and compressed files."""
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    source = str(path)
    if not head:
        _fail(source, "empty file (no rows)")
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, head
    if head.startswith(b"\x1f\x8b"):
        _fail(source, "gzip-compressed data; decompress it first (gunzip)")
    if head.startswith(b"PAR1"):
        _fail(source, "this is a Parquet file; rename it to .parquet")
    nul = head.find(b"\x00")
    if nul >= 0:
        _fail(
            source,
            f"binary data, not text (NUL byte at byte offset {nul}); expected UTF-8 text "
            "(UTF-16 is read only with a byte-order mark)",
        )
    return "utf-8", head


def _decode_problem(source: str, line: int, raw: bytes, exc: UnicodeDecodeError, line_start: int) -> Problem:
    bad = raw[exc.start : exc.start + 1].hex()
    return Problem(
        source,
        line,
        None,
        f"not valid UTF-8: byte 0x{bad} at byte offset {line_start + exc.start} "
        f"(column {exc.start + 1}); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
    )


def _physical_lines(
    path: Path, encoding: str, loaded: Loaded, max_row_bytes: int
) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, in bounded memory; bad lines become problems."""
    source = loaded.source
    if encoding.startswith(("utf-16", "utf-32")):
        # Decoded by Python: the byte-order mark told us the encoding for sure.
        max_chars = max_row_bytes // 2
        with open(path, encoding=encoding, newline="") as handle:
            number = 0
            while True:
                try:
                    text = handle.readline(max_chars + 1)
                except UnicodeDecodeError as exc:
                    loaded.problems.append(
                        Problem(source, number + 1, None, f"not valid {encoding.upper()}: {exc.reason}; reading stopped")
                    )
                    return
                if not text:
                    return
                number += 1
                if len(text) > max_chars and not text.endswith("\n"):
                    total = len(text)
                    while text and not text.endswith("\n"):
                        text = handle.readline(_SKIP_CHUNK)
                        total += len(text)
                    loaded.problems.append(_too_long(source, number, total, "characters", max_chars))
                    continue
                yield number, text
        return
    with open(path, "rb") as handle:
        number = 0
        offset = 0
        while True:
            raw = handle.readline(max_row_bytes + 1)
            if not raw:
                return
            number += 1
            line_start = offset
            offset += len(raw)
            if len(raw) > max_row_bytes and not raw.endswith(b"\n"):
                total = len(raw)
                while raw and not raw.endswith(b"\n"):
                    raw = handle.readline(_SKIP_CHUNK)
                    total += len(raw)
                offset = line_start + total
                loaded.problems.append(_too_long(source, number, total, "bytes", max_row_bytes))
                continue
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
                line_start += len(codecs.BOM_UTF8)
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                loaded.problems.append(_decode_problem(source, number, raw, exc, line_start))


def _too_long(source: str, line: int, size: int, unit: str, limit: int, what: str = "line") -> Problem:
    return Problem(
        source,
        line,
        None,
        f"{what} is {size:,} {unit} long, over the limit of {limit:,} per row; "
        "no training example is that long: split it or remove it",
    )


def _parse_json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, "not valid JSON for ftwiz: nested too deeply"
    except ValueError as exc:  # e.g. an integer literal past Python's 4300-digit limit
        return None, f"not valid JSON for ftwiz: {str(exc).splitlines()[0][:120]}"


def _read_json_lines(path: Path, encoding: str, loaded: Loaded, max_rows: int | None, max_row_bytes: int) -> None:
    for number, text in _physical_lines(path, encoding, loaded, max_row_bytes):
        if not text.strip():
            continue
        value, error = _parse_json(text)
        if error:
            loaded.problems.append(Problem(loaded.source, number, None, error))
            continue
        loaded.rows.append(Row(number, value))
        if max_rows is not None and len(loaded.rows) >= max_rows:
            return


def _read_text(path: Path, encoding: str, source: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        if encoding.startswith("utf-8"):
            raise DataError([_decode_problem(source, line, raw[line_start:], _shift(exc, line_start), line_start)]) from None
        raise DataError([Problem(source, line, None, f"not valid {encoding.upper()}: {exc.reason}")]) from None


def _shift(exc: UnicodeDecodeError, by: int) -> UnicodeDecodeError:
    return UnicodeDecodeError(exc.encoding, exc.object, exc.start - by, exc.end - by, exc.reason)


def _load_json_document(
    path: Path, encoding: str, loaded: Loaded, max_rows: int | None, lines_fallback: bool = False,
    max_row_bytes: int = MAX_ROW_BYTES,
) -> Loaded | None:
    """A JSON array of objects (rows keep their line), or {"data": [...]} (rows numbered).

    With `lines_fallback`, a document followed by more documents returns None: it is JSON lines.
    """
    source = loaded.source
    if _first_char(path, encoding) == "[":
        try:
            with open(path, encoding=encoding, newline="") as handle:
                _walk_array(handle, loaded, max_rows, max_row_bytes)
        except UnicodeDecodeError:
            _read_text(path, encoding, source)  # raises the DataError that names the line and byte
            raise
        return loaded
    text = _read_text(path, encoding, source).lstrip("\ufeff")
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    if not text.strip():
        _fail(source, "empty file (no rows)")
    try:
        document, end = decoder.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise DataError([Problem(source, exc.lineno, None, f"not valid JSON: {exc.msg} (column {exc.colno})")]) from None
    except RecursionError:
        _fail(source, "not valid JSON for ftwiz: nested too deeply")
    except ValueError as exc:  # e.g. an integer literal past Python's 4300-digit limit
        _fail(source, f"not valid JSON for ftwiz: {str(exc).splitlines()[0][:120]}")
    if text[end:].strip():
        if lines_fallback and text[end:].lstrip().startswith("{"):
            return None
        line = text.count("\n", 0, end) + 1
        raise DataError([Problem(source, line, None, "not valid JSON: extra data after the document")])
    lists = [key for key in _JSON_CONTAINER_KEYS if isinstance(document, dict) and isinstance(document.get(key), list)]
    if not lists:
        _fail(
            source,
            'expected a JSON array of objects, or {"data": [...]}; for one object per line use a .jsonl file',
        )
    loaded.unit = "row"
    loaded.notes.append(Note.info(f'rows read from the "{lists[0]}" list; locations are row numbers'))
    items = document[lists[0]][:max_rows] if max_rows else document[lists[0]]
    loaded.rows.extend(Row(i + 1, item) for i, item in enumerate(items))
    return loaded


def _first_char(path: Path, encoding: str) -> str:
    """The document's first character past a byte-order mark and white space ("" if none)."""
    with open(path, encoding=encoding, errors="replace") as handle:
        while chunk := handle.read(_SNIFF_BYTES):
            text = chunk.lstrip("\ufeff \t\r\n")
            if text:
                return text[0]
    return ""


def _decode_at(decoder: json.JSONDecoder, buffer: str, position: int) -> tuple[Any, int]:
    """One JSON value of `buffer` from `position` (a seam: the linear-time test counts its work)."""
    return decoder.raw_decode(buffer, position)


def _newlines(buffer: str, start: int, end: int) -> int:
    """Line breaks in buffer[start:end] (a seam: the linear-time test counts the characters scanned)."""
    return buffer.count("\n", start, end)


class _ArrayReader:
    """A top-level JSON array read from a text handle one element at a time, in linear time.

    The buffer holds the unread rest of the current chunk plus at most one element (a row over
    MAX_ROW_BYTES is a problem, not a reason to read on); line numbers are counted once over
    each stretch of text as the position moves past it, never again from the start (counting
    from the start for every row made a 125 MB export take minutes).
    """

    def __init__(self, handle: Any, loaded: Loaded):
        self.handle, self.loaded = handle, loaded
        self.buffer, self.position, self.line, self.eof = "", 0, 1, False

    def more(self) -> bool:
        """Append the next chunk (as large as what is already buffered: each retry doubles it)."""
        if self.eof:
            return False
        chunk = self.handle.read(max(_SKIP_CHUNK, len(self.buffer) - self.position))
        if not chunk:
            self.eof = True
            return False
        self.buffer = self.buffer[self.position :] + chunk
        self.position = 0
        return True

    def advance(self, to: int) -> None:
        self.line += _newlines(self.buffer, self.position, to)
        self.position = to

    def next_char(self) -> str:
        """The next character past white space ("" at the end of the file), not consumed."""
        while True:
            self.advance(_SPACE.match(self.buffer, self.position).end())
            if self.position < len(self.buffer):
                return self.buffer[self.position]
            if not self.more():
                return ""

    def problem(self, at: int, message: str) -> None:
        line = self.line + _newlines(self.buffer, self.position, at)
        self.loaded.problems.append(Problem(self.loaded.source, line, None, message))

    def value(self, decoder: json.JSONDecoder, max_chars: int) -> tuple[bool, Any]:
        """(True, value) for the element at the position, or (False, None) once a problem is recorded."""
        while True:
            try:
                value, end = _decode_at(decoder, self.buffer, self.position)
            except json.JSONDecodeError as exc:
                if len(self.buffer) - self.position <= max_chars and self.more():
                    continue  # the element may go on in the next chunk
                if len(self.buffer) - self.position > max_chars:
                    self.loaded.problems.append(_too_long(self.loaded.source, self.line, len(self.buffer) - self.position,
                                                          "characters", max_chars, "the row starting here"))
                    return False, None
                column = exc.pos - (self.buffer.rfind("\n", 0, exc.pos) + 1) + 1
                self.problem(exc.pos, f"not valid JSON: {exc.msg} (column {column}); reading stopped")
                return False, None
            except RecursionError:
                self.problem(self.position, "nested too deeply; reading stopped")
                return False, None
            except ValueError as exc:  # e.g. an integer literal past Python's 4300-digit limit
                self.problem(self.position, f"not valid JSON for ftwiz: {str(exc).splitlines()[0][:120]}; reading stopped")
                return False, None
            if end == len(self.buffer) and self.more():
                continue  # a number may go on in the next chunk
            start = self.line
            too_long = end - self.position > max_chars
            self.advance(end)
            if too_long:
                self.loaded.problems.append(_too_long(self.loaded.source, start, max_chars + 1, "characters", max_chars,
                                                      "the row starting here"))
                return True, None
            return True, Row(start, value)


def _walk_array(handle: Any, loaded: Loaded, max_rows: int | None, max_row_bytes: int = MAX_ROW_BYTES) -> None:
    """Decode a top-level array one element at a time, so each row keeps its line number."""
    reader = _ArrayReader(handle, loaded)
    decoder = json.JSONDecoder()
    reader.next_char()  # the "[" (the codec has taken any byte-order mark)
    reader.advance(reader.position + 1)
    if reader.next_char() == "]":
        return _after_array(reader)
    while True:
        ok, row = reader.value(decoder, max_row_bytes)
        if not ok:
            return
        if row is not None:  # None: a row over the size limit, recorded as a problem
            loaded.rows.append(row)
        if max_rows is not None and len(loaded.rows) >= max_rows:
            return
        following = reader.next_char()
        if following == ",":
            reader.advance(reader.position + 1)
            reader.next_char()
            continue
        if following == "]":
            return _after_array(reader)
        where = "the file ends" if not following else "expected ',' or ']' after a row"
        reader.problem(reader.position, f"not valid JSON: {where}; reading stopped")
        return


def _after_array(reader: _ArrayReader) -> None:
    reader.advance(reader.position + 1)  # the "]"
    if reader.next_char():
        reader.problem(reader.position, "not valid JSON: extra data after the array")


def _quiet_datasets():
    import datasets

    if datasets.is_progress_bar_enabled():
        datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    import huggingface_hub

    huggingface_hub.utils.logging.set_verbosity_error()  # no retry chatter on stderr
    return datasets


def _load_tabular(path: Path, kind: str, max_rows: int | None) -> Loaded:
    """CSV (every column read as text, so "42" stays "42") and Parquet, through `datasets`."""
    datasets = _quiet_datasets()
    source = str(path)
    kwargs: dict[str, Any] = {}
    if kind == "csv":
        header = _csv_header(path)
        kwargs["features"] = datasets.Features({name: datasets.Value("string") for name in header})
    # A throwaway cache: checking a file must not leave copies of it behind.
    with tempfile.TemporaryDirectory(prefix="ftwiz-data-") as cache_dir:
        try:
            dataset = datasets.load_dataset(
                kind, data_files=str(path), split="train", cache_dir=cache_dir, keep_in_memory=True, **kwargs
            )
        except Exception as exc:  # any reader failure is the file's fault here: report it, no traceback
            _fail(source, f"could not read as {kind.upper()}: {_first_line(exc)}")
        if max_rows is not None:
            dataset = dataset.select(range(min(max_rows, len(dataset))))
        rows = dataset.to_list()
    return Loaded(source=source, unit="row", rows=[Row(i + 1, r) for i, r in enumerate(rows)])


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
    except (UnicodeDecodeError, csv.Error) as exc:
        _fail(str(path), f"could not read the CSV header: {exc}")
    if not header or not any(name.strip() for name in header):
        _fail(str(path), "CSV has no header row (expected column names such as instruction,output)")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError([Problem(str(path), 1, None, f"duplicate column names: {', '.join(duplicates)}")])
    return header


def _load_hub(dataset_id: str, subset: str | None, split: str, max_rows: int | None) -> Loaded:
    from huggingface_hub import constants

    datasets = _quiet_datasets()
    what = f"Hub dataset {dataset_id!r} (subset={subset!r}, split={split!r})"
    if not constants.HF_HUB_OFFLINE and not hub_reachable():
        _fail(dataset_id, f"could not load the {what}: the Hub is unreachable (offline); give a local file, "
                          "or set HF_HUB_OFFLINE=1 to use a copy in the Hub cache")
    try:
        dataset = datasets.load_dataset(dataset_id, subset, split=split)
    except Exception as exc:  # offline, unknown id, gated, bad split: all user-facing
        hint = ""
        import os

        if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
            hint = " (offline mode is on: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE; use a local file or go online)"
        _fail(dataset_id, f"could not load the {what}: {_first_line(exc)}{hint}")
    if max_rows is not None:
        dataset = dataset.select(range(min(max_rows, len(dataset))))
    return Loaded(
        source=dataset_id, unit="row", rows=[Row(i + 1, r) for i, r in enumerate(dataset.to_list())]
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
