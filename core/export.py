"""GGUF export through llama.cpp's own converter, and an Ollama Modelfile beside it.

Where the converter comes from: llama.cpp's `convert_hf_to_gguf.py` is not in the `gguf`
wheel. ftwiz takes it, with the `conversion/` package it imports and the `gguf-py` of the same
llama.cpp commit, from the llama-cpp-python source distribution on PyPI (it vendors llama.cpp
under vendor/llama.cpp/), pinned by version and sha256 (CONVERTER below). The sdist is
downloaded once (77 MB) and only those files (about 2 MB) are kept in the ftwiz cache. The
converter runs with its own gguf-py: PyPI's `gguf` release lags the converter (0.19.0 lacks
LazyChunkedTensor); PyPI's `gguf` is what transformers reads GGUF files with (`gguf_file=`).
FTWIZ_LLAMA_CPP=DIR uses a llama.cpp checkout of your own instead.

Quantization: f32, f16, bf16 and q8_0 are written by the converter itself; the k-quants and
the other llama.cpp types go through llama.cpp's `llama-quantize` (on PATH, or in
FTWIZ_LLAMA_CPP's build/bin) from an f16 file.

The Modelfile's TEMPLATE is derived from the tokenizer that training used: its Jinja chat
template is rendered on marker conversations, split into a prefix and suffix per role, and
written as a Go template that Ollama renders the same way (checked on several conversations
before it is written; a template this cannot express leaves TEMPLATE out, and Ollama falls back
to the chat template stored in the GGUF file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftwiz.core.errors import UserError
from ftwiz.core.runs import RunDir, private_files

CONVERTER = {
    "package": "llama-cpp-python",
    "version": "0.3.36",
    "filename": "llama_cpp_python-0.3.36.tar.gz",
    "sha256": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
}
"""The pinned source of llama.cpp's converter (llama.cpp as vendored by this llama-cpp-python)."""
_KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "gguf-py/pyproject.toml", "LICENSE")
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
"""Written by convert_hf_to_gguf.py itself."""
QUANTIZE_TYPES = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_0", "q4_1", "q4_k_s", "q4_k_m", "q5_0", "q5_1",
                  "q5_k_s", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs")
"""Made from an f16 file by llama.cpp's llama-quantize."""
QUANT_TYPES = CONVERTER_TYPES + QUANTIZE_TYPES
PYPI_SIMPLE = "https://pypi.org/simple/{package}/"
"""The package index's JSON API (PEP 691), as pip reads it."""


def converter_home() -> Path:
    """Where the pinned converter is unpacked: the ftwiz cache, one folder per version."""
    from ftwiz.core.demo import cache_dir

    return cache_dir() / f"llama.cpp-converter-{CONVERTER['version']}"


def find_converter() -> Path | None:
    """convert_hf_to_gguf.py: FTWIZ_LLAMA_CPP's, else the cached pinned copy; None if neither."""
    own = os.environ.get("FTWIZ_LLAMA_CPP")
    if own:
        script = Path(own) / "convert_hf_to_gguf.py"
        if not script.is_file():
            raise UserError(f"FTWIZ_LLAMA_CPP={own}: no convert_hf_to_gguf.py there (expected a llama.cpp checkout)")
        return script
    script = converter_home() / "convert_hf_to_gguf.py"
    return script if script.is_file() else None


def fetch_converter(log: Callable[[str], None] = lambda line: None) -> Path:
    """Download the pinned sdist from PyPI (sha256 checked), keep the converter's files only."""
    import urllib.request

    script = find_converter()
    if script is not None:
        return script
    home = converter_home()
    try:
        request = urllib.request.Request(PYPI_SIMPLE.format(**CONVERTER),
                                         headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            files = json.load(response)["files"]
        url = next(f["url"] for f in files if f["filename"] == CONVERTER["filename"])
        log(f"downloading llama.cpp's converter: {CONVERTER['filename']} (77 MB, once) from PyPI")
        home.parent.mkdir(parents=True, exist_ok=True)
        archive = home.parent / f".{CONVERTER['filename']}.{os.getpid()}.part"
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise UserError(
            f"export: llama.cpp's converter is not cached and could not be downloaded from PyPI ({exc}); "
            "run `ftwiz export --fetch-converter` where PyPI is reachable, or set FTWIZ_LLAMA_CPP to a llama.cpp checkout"
        ) from None
    try:
        if digest.hexdigest() != CONVERTER["sha256"]:
            raise UserError(f"export: {CONVERTER['filename']} from PyPI has sha256 {digest.hexdigest()}, "
                            f"expected {CONVERTER['sha256']}; not used")
        _unpack(archive, home)
    finally:
        archive.unlink(missing_ok=True)
    log(f"llama.cpp's converter: {home}")
    return home / "convert_hf_to_gguf.py"


def _unpack(archive: Path, home: Path) -> None:
    prefix = CONVERTER["filename"].removesuffix(".tar.gz") + "/vendor/llama.cpp/"
    staging = home.with_name(f".{home.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            rel = member.name.removeprefix(prefix)
            if member.name.startswith(prefix) and member.isfile() and rel.startswith(_KEEP) and ".." not in rel:
                member.name = rel
                members.append(member)
        tar.extractall(staging, members=members, filter="data")
    try:
        os.replace(staging, home)
    except OSError:  # another process unpacked the same files first
        shutil.rmtree(staging, ignore_errors=True)


def quantize_tool() -> str | None:
    """llama.cpp's llama-quantize: on PATH, or built in FTWIZ_LLAMA_CPP."""
    found = shutil.which("llama-quantize")
    own = os.environ.get("FTWIZ_LLAMA_CPP")
    if not found and own:
        candidate = Path(own) / "build" / "bin" / "llama-quantize"
        found = str(candidate) if candidate.is_file() else None
    return found


def check_quant(quant: str) -> str:
    """The quant type in llama.cpp's spelling, or a one-line error naming what is possible."""
    quant = quant.lower()
    if quant not in QUANT_TYPES:
        raise UserError(f"export --quant {quant}: use one of {', '.join(QUANT_TYPES)}")
    if quant in QUANTIZE_TYPES and quantize_tool() is None:
        raise UserError(
            f"export --quant {quant}: needs llama.cpp's llama-quantize on PATH (build llama.cpp, or set "
            "FTWIZ_LLAMA_CPP to a built checkout); f16, bf16 and q8_0 need nothing more"
        )
    return quant


def available_quants() -> tuple[str, ...]:
    """The quant types this machine can write: the converter's, and the k-quants when llama-quantize is here."""
    return CONVERTER_TYPES + (QUANTIZE_TYPES if quantize_tool() else ())


def gguf_extra_missing() -> str | None:
    """What `pip install 'ftwiz[gguf]'` would add that is not installed (None: all there)."""
    import importlib.util

    missing = [name for name in ("gguf", "sentencepiece") if importlib.util.find_spec(name) is None]
    return ", ".join(missing) or None


def size_text(size: int | float) -> str:
    """Bytes as a file manager shows them (decimal units): every export and push size shown."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


# -- progress -----------------------------------------------------------------------------------
STAGES = ("check", "merge", "convert", "quantize", "modelfile", "done")
"""In this order; merge, quantize and modelfile only when they apply."""
STAGE_TITLES = {
    "check": "size and free disk",
    "merge": "merging the adapter into the base",
    "convert": "converting to GGUF (llama.cpp's convert_hf_to_gguf.py)",
    "quantize": "quantising (llama.cpp's llama-quantize)",
    "modelfile": "writing the Ollama Modelfile",
    "done": "done",
}


@dataclass(frozen=True)
class ExportProgress:
    """One line of an export's progress. The CLI prints `line()`; `ftwiz export --progress-json`
    writes `to_dict()` as a JSON line, which the Done screen reads back with `from_dict`."""

    stage: str
    text: str
    elapsed_s: float = 0.0
    """Seconds since this stage began."""
    done: int | None = None
    total: int | None = None
    """Tensors (convert), or percent of the bytes written (convert's writing, quantize)."""
    end: bool = False
    """The stage finished."""
    files: tuple[tuple[str, int], ...] = ()
    """Stage "done": every file written, with its size in bytes (as on disk)."""

    def line(self) -> str:
        return f"[{self.stage} {self.elapsed_s:5.1f}s] {self.text}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "files": [list(f) for f in self.files]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportProgress:
        return cls(stage=str(data["stage"]), text=str(data["text"]), elapsed_s=float(data.get("elapsed_s", 0.0)),
                   done=data.get("done"), total=data.get("total"), end=bool(data.get("end", False)),
                   files=tuple((str(p), int(n)) for p, n in data.get("files") or ()))


Progress = Callable[[ExportProgress], None]


class _Stage:
    """Reports a stage's start, its progress and its end, each with the seconds since it began."""

    def __init__(self, stage: str, progress: Progress, clock: Callable[[], float]) -> None:
        self.stage, self.progress, self.clock = stage, progress, clock
        self.started = clock()

    def say(self, text: str, done: int | None = None, total: int | None = None, end: bool = False,
            files: tuple[tuple[str, int], ...] = ()) -> None:
        self.progress(ExportProgress(self.stage, text, round(self.clock() - self.started, 2), done, total, end, files))


# -- the size before starting -------------------------------------------------------------------
QUANT_BITS = {"f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q6_k": 6.56, "q5_k_m": 5.69, "q5_k_s": 5.54,
              "q5_1": 6.0, "q5_0": 5.5, "q4_k_m": 4.89, "q4_k_s": 4.58, "q4_1": 5.0, "q4_0": 4.5, "iq4_nl": 4.5,
              "iq4_xs": 4.25, "q3_k_l": 4.27, "q3_k_m": 3.91, "q3_k_s": 3.5, "q2_k": 3.35}
"""Bits per weight of each type as llama.cpp stores it (block scales included; k-quant mixes as
llama.cpp reports them for 7B-8B models). Norms stay f32 and the vocabulary adds a little: an estimate."""
MERGED_BYTES = 4
"""Bytes per weight of merged/ as `ftwiz merge` may write it: fp32 on a CPU (16-bit on a GPU)."""


def _tensor_shapes(folder: Path) -> list[list[int]]:
    """The shape of every tensor in a folder's safetensors files, from their headers (safetensors'
    own reader; no tensor is read, and torch is not imported)."""
    from safetensors import safe_open

    shapes = []
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as f:  # shapes only: no torch import
            shapes += [f.get_slice(name).get_shape() for name in f.keys()]
    return shapes


def _safetensors_params(folder: Path) -> int | None:
    """Weights in a folder's safetensors files (None: there are none)."""
    import math

    return sum(math.prod(shape) for shape in _tensor_shapes(folder)) or None


def model_parameters(run: RunDir) -> int:
    """The exported model's weights: merged/ (or a full run's adapter/) if written, else the base's."""
    config = run.read_config()
    for folder in (run.merged_dir, run.adapter_dir if config.get("method") == "full" else None):
        if folder is not None and (folder / "config.json").exists():
            found = _safetensors_params(folder)
            if found:
                return found
    from ftwiz.core.engine.model_source import model_source

    base = model_source(str((config.get("model") or {}).get("name_or_path", "")))
    if Path(base).expanduser().is_dir():
        found = _safetensors_params(Path(base).expanduser())
        if found:
            return found
    from ftwiz.core.models import load_model_info

    return load_model_info(base).total_params


@dataclass
class ExportEstimate:
    """The export's files before it starts: parameters x bits of the quant, against the free disk."""

    parameters: int
    quant: str
    gguf_bytes: int
    need_bytes: int
    """The GGUF, plus merged/ when the export merges first, plus the f16 file a k-quant is made from."""
    free_bytes: int
    where: Path
    merge: bool

    @property
    def fits(self) -> bool:
        return self.need_bytes <= self.free_bytes

    def refusal(self) -> str:
        """Why the export does not start (one line), when it does not fit."""
        return (f"not enough disk: needs about {size_text(self.need_bytes)}, "
                f"{size_text(self.free_bytes)} free on {self.where}")

    def line(self) -> str:
        extra = []
        if self.merge:
            extra.append("the merged model")
        if self.quant in QUANTIZE_TYPES:
            extra.append("an f16 file while quantising")
        needs = f"; needs {size_text(self.need_bytes)} with {' and '.join(extra)}" if extra else ""
        return (f"expected GGUF: about {size_text(self.gguf_bytes)} ({self.parameters / 1e6:,.1f}M parameters x "
                f"{QUANT_BITS[self.quant]:g} bits, {self.quant}){needs}; {size_text(self.free_bytes)} free on {self.where}")


def needs_merge(run: RunDir) -> bool:
    """An adapter run without merged/: GGUF holds a whole model, so export merges first."""
    return run.read_config().get("method") != "full" and not (run.merged_dir / "config.json").exists()


def estimate_export(run: RunDir, quant: str, merge: bool | None = None) -> ExportEstimate:
    quant = quant.lower()
    merge = needs_merge(run) if merge is None else merge
    parameters = model_parameters(run)
    gguf_bytes = int(parameters * QUANT_BITS[quant] / 8)
    need = gguf_bytes + (parameters * MERGED_BYTES if merge else 0) + (parameters * 2 if quant in QUANTIZE_TYPES else 0)
    where = run.path.resolve()
    return ExportEstimate(parameters, quant, gguf_bytes, need, shutil.disk_usage(where).free, where, merge)


def outputs(run: RunDir, quant: str, ollama: bool) -> list[Path]:
    """The files an export writes (and would overwrite)."""
    target = gguf_path(run, quant.lower())
    return [target] + ([target.parent / "Modelfile"] if ollama else [])


def existing_outputs(run: RunDir, quant: str, ollama: bool) -> list[Path]:
    return [path for path in outputs(run, quant, ollama) if path.exists()]


# -- the export ---------------------------------------------------------------------------------
@dataclass
class Exported:
    gguf: Path
    size_bytes: int
    quant: str
    modelfile: Path | None = None
    template_note: str | None = None
    files: list[tuple[Path, int]] = field(default_factory=list)
    """Every file written, with its size on disk."""


def model_dir_for_export(run: RunDir) -> Path:
    """merged/ (LoRA, QLoRA) or adapter/ (full fine-tuning: that is the whole model)."""
    config = run.read_config()
    if config.get("method") == "full":
        if (run.adapter_dir / "config.json").exists():
            return run.adapter_dir
        raise UserError(f"run {run.name}: no model yet (state {run.state()}); wait for it to finish")
    if (run.merged_dir / "config.json").exists():
        return run.merged_dir
    raise UserError(f"run {run.name}: no merged model; run `ftwiz merge {run.name}` first (or export --merge)")


def gguf_path(run: RunDir, quant: str) -> Path:
    return run.path / "gguf" / f"{run.name}-{quant}.gguf"


def _tool_lines(argv: list[str], what: str) -> Iterator[str]:
    """The tool's output lines as they come (tqdm's carriage returns end lines too); a failure is
    one line with the tool's last error."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use the gguf-py of its own commit
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               stdin=subprocess.DEVNULL, env=env)
    tail: list[str] = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            line = line.rstrip()
            if line:
                tail = (tail + [line])[-20:]
                yield line
    except BaseException:  # the caller stopped reading (an error, or the generator closed): no orphan
        process.kill()
        process.wait()
        raise
    if process.wait() != 0:
        last = next((t for t in reversed(tail) if "Error" in t or "error" in t), tail[-1] if tail else "no output")
        raise UserError(f"export: {what} failed (exit {process.returncode}): {last[:300]}")


_TENSOR_LINE = re.compile(r"^INFO:hf-to-gguf:(\S+),\s+\S+\s+-->\s+(\w+), shape")
_WRITING = re.compile(r"^Writing:\s*(\d+)%")
_QUANTIZE_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")


def _convert(script: Path, source: Path, staged: Path, outtype: str, stage: _Stage,
             log: Callable[[str], None]) -> None:
    """convert_hf_to_gguf.py, its tensor lines counted against the safetensors' tensors, its
    "Writing" bar read in tenths."""
    total = _tensor_count(source)
    seen, shown_tenth, written_tenth = 0, -1, -1
    argv = [sys.executable, str(script), str(source), "--outfile", str(staged), "--outtype", outtype]
    for line in _tool_lines(argv, "llama.cpp's convert_hf_to_gguf.py"):
        log(line)
        tensor = _TENSOR_LINE.match(line)
        if tensor:
            seen += 1
            tenth = seen * 10 // total if total else 0
            if total and tenth != shown_tenth:
                shown_tenth = tenth
                stage.say(f"tensors {min(seen, total)}/{total} planned ({tensor.group(1)} -> {tensor.group(2)})",
                          min(seen, total), total)
            continue
        writing = _WRITING.match(line)
        if writing:
            percent = int(writing.group(1))
            if percent // 10 != written_tenth:
                written_tenth = percent // 10
                stage.say(f"writing tensors: {percent}%", percent, 100)


def _tensor_count(folder: Path) -> int | None:
    return len(_tensor_shapes(folder)) or None


def export_gguf(run: RunDir, quant: str = "f16", ollama: bool = False, *, merge_first: bool = True,
                force: bool = False, progress: Progress = lambda p: None,
                log: Callable[[str], None] = lambda line: None,
                clock: Callable[[], float] = time.monotonic) -> Exported:
    """gguf/<run>-<quant>.gguf from the merged model (merged first if needed), and gguf/Modelfile
    with ollama; each stage reported through `progress`, the converter's raw lines through `log`."""
    quant = check_quant(quant)
    missing = gguf_extra_missing()
    if missing:
        raise UserError(f"export --gguf: {missing} not installed; pip install 'ftwiz[gguf]'")
    merge = needs_merge(run)
    if merge and not merge_first:
        model_dir_for_export(run)  # raises: no merged model
    if run.read_config().get("method") == "full":
        model_dir_for_export(run)  # raises: no model yet
    if merge:
        from ftwiz.core.engine.results import _adapter_ready

        _adapter_ready(run)
    existing = existing_outputs(run, quant, ollama)
    if existing and not force:
        raise UserError(f"export: {existing[0]} exists; add --force to overwrite it")
    check = _Stage("check", progress, clock)
    estimate = estimate_export(run, quant, merge)
    if not estimate.fits:
        raise UserError(f"export: {estimate.refusal()}")
    check.say(estimate.line(), end=True)
    script = fetch_converter(lambda line: check.say(line))
    if merge:
        from ftwiz.core.engine.results import merge as merge_run

        stage = _Stage("merge", progress, clock)
        stage.say(f"{STAGE_TITLES['merge']}: loading the base and the adapter")
        merged = merge_run(run)
        stage.say(f"merged: {merged} ({size_text(_folder_bytes(merged))})", end=True)
    source = model_dir_for_export(run)
    target = gguf_path(run, quant)
    with private_files():
        target.parent.mkdir(parents=True, exist_ok=True)
    outtype = quant if quant in CONVERTER_TYPES else "f16"
    staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with private_files():
            stage = _Stage("convert", progress, clock)
            stage.say(f"{STAGE_TITLES['convert']}: {source} -> {outtype}")
            _convert(script, source, staged, outtype, stage, log)
            stage.say(f"converted: {outtype}, {size_text(staged.stat().st_size)}", end=True)
            if quant in QUANTIZE_TYPES:
                stage = _Stage("quantize", progress, clock)
                stage.say(f"quantising to {quant.upper()} with llama-quantize")
                quantized = staged.with_name(staged.name + ".q")
                shown = -1
                for line in _tool_lines([str(quantize_tool()), str(staged), str(quantized), quant.upper()],
                                        "llama-quantize"):
                    log(line)
                    tensor = _QUANTIZE_LINE.match(line)
                    if tensor and int(tensor.group(1)) * 10 // int(tensor.group(2)) != shown:
                        shown = int(tensor.group(1)) * 10 // int(tensor.group(2))
                        stage.say(f"tensors {tensor.group(1)}/{tensor.group(2)}", int(tensor.group(1)),
                                  int(tensor.group(2)))
                os.replace(quantized, staged)
                stage.say(f"quantised: {quant}, {size_text(staged.stat().st_size)}", end=True)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
        staged.with_name(staged.name + ".q").unlink(missing_ok=True)
    result = Exported(gguf=target, size_bytes=target.stat().st_size, quant=quant)
    if ollama:
        from ftwiz.core.engine.results import run_data_format

        stage = _Stage("modelfile", progress, clock)
        stage.say(STAGE_TITLES["modelfile"])
        tokenizer = _load_tokenizer(source)
        text, note = modelfile(tokenizer, f"./{target.name}", run_data_format(run, run.read_config()))
        path = target.parent / "Modelfile"
        with private_files():
            path.write_text(text, encoding="utf-8")
        result.modelfile, result.template_note = path, note
        stage.say(f"Modelfile: {path}" + (f" (note: {note})" if note else ""), end=True)
    result.files = [(path, path.stat().st_size) for path in (result.gguf, result.modelfile) if path is not None]
    _Stage("done", progress, clock).say(
        "; ".join(f"{path.name} {size_text(size)}" for path, size in result.files), end=True,
        files=tuple((str(path), size) for path, size in result.files))
    return result


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


# -- the Ollama Modelfile ---------------------------------------------------------------------
_MARK = {"system": "\x02SYSTEM\x03", "u1": "\x02USER1\x03", "a1": "\x02ASSISTANT1\x03", "u2": "\x02USER2\x03"}
ROLES = ("system", "user", "assistant")


@dataclass
class TemplateParts:
    """A chat template as head + (prefix, content, suffix) per message + generation prompt."""

    head: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        out = self.head + "".join(self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]] for m in messages)
        return out + (self.generation if add_generation_prompt else "")


def _split_once(text: str, marker: str) -> tuple[str, str]:
    if text.count(marker) != 1:
        raise ValueError(marker)
    before, after = text.split(marker)
    return before, after


def _strip_prefix(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise ValueError(prefix)
    return text[len(prefix):]


def template_parts(tokenizer: Any, drop_bos: bool = True) -> TemplateParts | None:
    """The tokenizer's chat template as TemplateParts, or None when it is not of that shape.

    drop_bos: leave the template's leading BOS out (llama.cpp adds BOS itself when tokenizing).
    """
    m = _MARK

    def render(messages: list[tuple[str, str]], gen: bool) -> str:
        text = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages], tokenize=False,
                                             add_generation_prompt=gen)
        bos = tokenizer.bos_token
        if drop_bos and bos and text.startswith(bos):
            text = text[len(bos):]
        return text

    try:
        t_u = render([("user", m["u1"])], False)
        generation = _strip_prefix(render([("user", m["u1"])], True), t_u)
        head_pre_u, post_u = _split_once(t_u, m["u1"])
        post_a = _split_once(render([("user", m["u1"]), ("assistant", m["a1"])], False), m["a1"])[1]
        t_uau = render([("user", m["u1"]), ("assistant", m["a1"]), ("user", m["u2"])], False)
        between_ua = _split_once(_split_once(t_uau, m["u1"])[1], m["a1"])[0]
        pre_a = _strip_prefix(between_ua, post_u)
        pre_u = _strip_prefix(_split_once(_split_once(t_uau, m["a1"])[1], m["u2"])[0], post_a)
        if not head_pre_u.endswith(pre_u):
            return None
        head = head_pre_u[: len(head_pre_u) - len(pre_u)]
        t_su = render([("system", m["system"]), ("user", m["u1"])], False)
        before_s, after_s = _split_once(t_su, m["system"])
        pre_s = _strip_prefix(before_s, head)
        between_su = _split_once(after_s, m["u1"])[0]
        if not between_su.endswith(pre_u):
            return None
        post_s = between_su[: len(between_su) - len(pre_u)]
    except ValueError:
        return None
    except Exception:  # noqa: BLE001 - templates raise their own errors (e.g. "roles must alternate")
        return None
    parts = TemplateParts(head, {"system": pre_s, "user": pre_u, "assistant": pre_a},
                          {"system": post_s, "user": post_u, "assistant": post_a}, generation)
    return parts if _agrees(parts, render) else None


CHECK_CONVERSATIONS = [
    [("user", "Hi")],
    [("system", "Be brief."), ("user", "What is 2+2?")],
    [("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "A date:\nMarch 5, 2021")],
    [("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")],
]


def _agrees(parts: TemplateParts, render: Callable[[list[tuple[str, str]], bool], str]) -> bool:
    for conversation in CHECK_CONVERSATIONS:
        messages = [{"role": r, "content": c} for r, c in conversation]
        for gen in (False, True):
            try:
                if parts.render(messages, gen) != render(conversation, gen):
                    return False
            except Exception:  # noqa: BLE001
                return False
    return True


def _go_text(text: str) -> str:
    """Literal text inside a Go template: only '{{' needs escaping."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(parts: TemplateParts) -> str:
    """Ollama's Go template for the parts: no trim markers, so every literal is kept as is."""
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq $m.Role "{role}" }}}}'
        f"{_go_text(parts.prefix[role])}{{{{ $m.Content }}}}{_go_text(parts.suffix[role])}"
        for i, role in enumerate(ROLES)
    )
    return (
        f"{_go_text(parts.head)}{{{{ range $i, $m := .Messages }}}}{branches}{{{{ end }}}}"
        f'{{{{ if and (eq (len (slice $.Messages $i)) 1) (ne $m.Role "assistant") }}}}'
        f"{_go_text(parts.generation)}{{{{ end }}}}{{{{ end }}}}"
    )


def stop_tokens(tokenizer: Any, parts: TemplateParts | None) -> list[str]:
    """The strings that end a turn: eos, and the special tokens the assistant's turn ends with."""
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    if parts is not None:
        for token in getattr(tokenizer, "all_special_tokens", []) or []:
            if token and token in parts.suffix["assistant"] and token not in stops:
                stops.append(token)
    return stops


def modelfile(tokenizer: Any, from_path: str, data_format: str | None) -> tuple[str, str | None]:
    """Modelfile text and a note when the TEMPLATE is not the chat template.

    Chat data (chat, sharegpt, alpaca) was trained through the chat template; prompt/completion
    and text data on the plain prompt, so Ollama gets the prompt as is.
    """
    from ftwiz.core.engine.results import CHAT_FORMATS

    lines = [f"FROM {from_path}"]
    note = None
    parts = None
    if data_format is not None and data_format not in CHAT_FORMATS:
        lines.append('TEMPLATE """{{ .Prompt }}"""')
        note = f"{data_format} data was trained without a chat template: the Modelfile sends the prompt as is"
    elif getattr(tokenizer, "chat_template", None):
        parts = template_parts(tokenizer)
        if parts is None:
            note = ("the chat template has a shape ftwiz cannot write as a Go template; "
                    "Ollama uses the template stored in the GGUF file")
        elif '"""' in go_template(parts):
            parts, note = None, 'the chat template contains """, which a Modelfile cannot quote; Ollama uses the GGUF\'s'
        else:
            lines.append(f'TEMPLATE """{go_template(parts)}"""')
    else:
        note = "the tokenizer has no chat template; Ollama uses its default"
    for stop in stop_tokens(tokenizer, parts):
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    return "\n".join(lines) + "\n", note


def export_command(run: RunDir, quant: str = "f16", force: bool = False) -> list[str]:
    """`ftwiz export RUN --gguf --ollama --progress-json` in a fresh interpreter (it loads the model,
    minutes): one ExportProgress a line on stdout, for the Done screen."""
    return [sys.executable, "-m", "ftwiz.cli", "--runs-dir", str(run.path.parent.resolve()), "export",
            run.name, "--gguf", "--quant", quant, "--ollama", "--progress-json"] + (["--force"] if force else [])
