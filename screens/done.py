"""The end of a run: where the result is, what it learned (before/after), how to use it, merge."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Static

from ftwiz.core.runs import RunDir
from ftwiz.screens.train import read_run_config
from ftwiz.tui.run_messages import MergeFinished

CELL_WIDTH = 20
"""Sample texts are cut to this many characters in the table; samples.json has them whole."""
SHOWN_SAMPLES = 8
"""Rows in the samples table: the page scrolls, the table never does; samples.json has them all."""
CHAT_FORMATS = frozenset({"chat", "sharegpt", "alpaca"})
"""Data formats the engine renders through the chat template (core/data.py's docstring)."""


@dataclass
class Samples:
    rows: list[dict[str, Any]] = field(default_factory=list)
    scores: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    metric: str | None = None
    """The engine's description of its main metric."""
    count: int | None = None


def load_samples(path: Path) -> Samples:
    """samples.json as the engine writes it: {"metric", "count", "before": {metric: v}, "after": {...},
    "examples": [{"prompt", "reference", "before", "after"}]} ("samples"/"expected" also read).

    Tolerant of a bare list of rows and of missing parts: a run that stopped early has none.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Samples()
    if isinstance(data, list):
        return Samples(rows=[row for row in data if isinstance(row, dict)])
    if not isinstance(data, dict):
        return Samples()
    rows = data.get("samples") or data.get("examples") or []
    before, after = data.get("before"), data.get("after")
    scores = []
    if isinstance(before, dict) or isinstance(after, dict):
        before, after = before or {}, after or {}
        for metric in dict.fromkeys([*before, *after]):
            scores.append((metric, before.get(metric), after.get(metric)))
    count = data.get("count")
    return Samples(rows=[row for row in rows if isinstance(row, dict)], scores=scores,
                   metric=data.get("metric") if isinstance(data.get("metric"), str) else None,
                   count=count if isinstance(count, int) and not isinstance(count, bool) else None)


def expected_text(row: dict[str, Any]) -> Any:
    """The reference answer: the engine writes "reference"; "expected" is read too."""
    return row.get("reference", row.get("expected"))


def sample_match(row: dict[str, Any]) -> str:
    """The engine's own verdict when it gives one; else exact match against the expected text."""
    for key in ("match", "match_after", "after_match"):
        if isinstance(row.get(key), bool):
            return "✓" if row[key] else "✗"
    expected, after = expected_text(row), row.get("after")
    if isinstance(expected, str) and isinstance(after, str):
        return "✓" if after.strip() == expected.strip() else "✗"
    return ""


def _cut(value: Any) -> str:
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def _pct(value: float | None) -> str:
    return "--" if value is None else f"{value:.0%}"


def shell_quote(text: str) -> str:
    """One shell word on one line: plain quoting, or bash's $'...' when the text has a newline or
    another control character (a prompt like "Date: ...\\nISO:")."""
    if all(ch.isprintable() for ch in text):
        return shlex.quote(text)
    escapes = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    body = "".join(escapes.get(ch) or (ch if ch.isprintable() else f"\\x{ord(ch):02x}") for ch in text)
    return f"$'{body}'"


def run_data_format(run_dir: RunDir, config: dict[str, Any]) -> str | None:
    """The data format the run trained on: config.yaml's when set, else what the engine reported
    (a "started" event's data_format, or its "<format> data: N training ..." note)."""
    configured = (config.get("data") or {}).get("format")
    if configured and configured != "auto":
        return configured
    for event in run_dir.iter_events():
        if event.get("type") == "started" and isinstance(event.get("data_format"), str):
            return event["data_format"]
        message = event.get("message")
        if isinstance(message, str) and " data: " in message and "training and" in message:
            return message.split(" data: ", 1)[0]
    return None


def run_ref(run_dir: RunDir) -> str:
    """How to name the run on the command line: its name if ./runs holds it, else its path."""
    if run_dir.path.resolve().parent == (Path.cwd() / "runs").resolve():
        return run_dir.name
    return str(run_dir.path.resolve())


def usage_snippets(run_dir: RunDir, config: dict[str, Any], prompt: str,
                   data_format: str | None = None) -> dict[str, str]:
    """The exact code and commands for this run, with its real paths, prompting as training did:
    the chat template for chat data, the plain prompt text for prompt/completion and text data."""
    base = (config.get("model") or {}).get("name_or_path", "BASE_MODEL")
    adapter = str(run_dir.adapter_dir.resolve())
    merged = str(run_dir.merged_dir.resolve())
    ref = shlex.quote(run_ref(run_dir))
    if data_format is None or data_format in CHAT_FORMATS:
        # The run saved its tokenizer with the template it trained with (ftwiz's fallback
        # included) next to the adapter: load the tokenizer from there.
        tokenizer_path = adapter
        prompt_code = (
            f"messages = [{{\"role\": \"user\", \"content\": {json.dumps(prompt)}}}]\n"
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,\n"
            "                                       return_dict=True, return_tensors=\"pt\")\n"
        )
    else:
        tokenizer_path = base
        prompt_code = (
            f"# {data_format} data: trained on the plain prompt, no chat template\n"
            f"inputs = tokenizer({json.dumps(prompt)}, return_tensors=\"pt\")\n"
        )
    generate = (
        prompt_code
        + "output = model.generate(**inputs, max_new_tokens=64)\n"
        "new_tokens = output[0][inputs[\"input_ids\"].shape[1]:]\n"
        "print(tokenizer.decode(new_tokens, skip_special_tokens=True))"
    )
    if config.get("method") == "full":
        load = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"model = AutoModelForCausalLM.from_pretrained({json.dumps(adapter)}, dtype=\"auto\")\n"
            f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(tokenizer_path)})\n"
        )
        return {"load": load + generate, "commands": f"ftwiz sample {ref} --prompt {shell_quote(prompt)}"}
    load = (
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"base = AutoModelForCausalLM.from_pretrained({json.dumps(base)}, dtype=\"auto\")\n"
        f"model = PeftModel.from_pretrained(base, {json.dumps(adapter)})\n"
        f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(tokenizer_path)})\n"
    )
    merged_code = (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"model = AutoModelForCausalLM.from_pretrained({json.dumps(merged)}, dtype=\"auto\")\n"
        f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(merged)})"
    )
    commands = (
        "# the base model and base + adapter, side by side\n"
        f"ftwiz sample {ref} --prompt {shell_quote(prompt)}\n"
        "# base + adapter as one standalone model, in merged/\n"
        f"ftwiz merge {ref}"
    )
    return {"load": load + generate, "commands": commands, "merged": merged_code}


def merge_command(run_dir: RunDir) -> list[str]:
    """`ftwiz merge RUN` in a fresh interpreter: merging loads the whole model (GBs, minutes)."""
    return [sys.executable, "-m", "ftwiz.cli", "merge", str(run_dir.path.resolve())]


class DoneScreen(Screen):
    """Results of a finished run."""

    CSS_PATH = "../tui/run.tcss"
    BINDINGS = [Binding("m", "merge", "Merge"), Binding("escape", "back", "Back")]

    def __init__(self, run_dir: RunDir, *, merge_argv: list[str] | None = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.config = read_run_config(run_dir)
        self.samples = load_samples(run_dir.samples_path)
        self.merge_argv = merge_argv or merge_command(run_dir)
        self.merging = False

    def compose(self) -> ComposeResult:
        full = self.config.get("method") == "full"
        state = self.run_dir.state()
        yield Static(f"Run {self.run_dir.name} · {state} · results", classes="run-title", markup=False)
        with VerticalScroll(id="done-body"):
            what = "Model" if full else "Adapter"
            yield Static(f"{what}: {self.run_dir.adapter_dir.resolve()}", id="done-adapter", markup=False)
            yield Static(self._merged_text(), id="done-merged", markup=False)
            with Horizontal(id="done-actions"):
                if not full:
                    yield Button("Merge into one model (m)", id="done-merge", variant="primary")
                yield Static("", id="done-merge-status", markup=False)
            count = self.samples.count or len(self.samples.rows)
            yield Static(f"Before / after on {count or ''} held-out examples".replace("  ", " "),
                         classes="done-heading")
            if self.samples.metric:
                yield Static(f"Metric: {self.samples.metric}", id="done-metric", markup=False)
            if self.samples.scores:
                yield Static(
                    "    ".join(f"{m}: {_pct(b)} → {_pct(a)}" for m, b, a in self.samples.scores),
                    id="done-score",
                    markup=False,
                )
            if self.samples.rows:
                yield DataTable(id="done-samples", cursor_type="row", zebra_stripes=True)
                if len(self.samples.rows) > SHOWN_SAMPLES:
                    yield Static(f"{SHOWN_SAMPLES} of {len(self.samples.rows)} shown; all in "
                                 f"{self.run_dir.samples_path.resolve()}", classes="run-hint", markup=False)
            else:
                yield Static("No samples.json in this run (it stopped before the end, or "
                             "output.samples is 0).", id="done-no-samples", markup=False)
            yield Static("Use it from Python", classes="done-heading")
            snippets = usage_snippets(self.run_dir, self.config, self._prompt(),
                                      run_data_format(self.run_dir, self.config))
            yield Static(snippets["load"], id="done-code-load", classes="done-code", markup=False)
            yield Static("From the shell", classes="done-heading")
            yield Static(snippets["commands"], id="done-code-commands", classes="done-code", markup=False)
            if "merged" in snippets:
                yield Static("After merging (no peft needed)", classes="done-heading")
                yield Static(snippets["merged"], id="done-code-merged", classes="done-code", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        if self.samples.rows:
            table = self.query_one("#done-samples", DataTable)
            table.add_columns("prompt", "before", "after", "expected", "match")
            for row in self.samples.rows[:SHOWN_SAMPLES]:
                table.add_row(*(_cut(row.get(k)) for k in ("prompt", "before", "after")),
                              _cut(expected_text(row)), sample_match(row))

    def _prompt(self) -> str:
        for row in self.samples.rows:
            if isinstance(row.get("prompt"), str):
                return row["prompt"]
        return "Hello!"

    def _merged_text(self) -> str:
        if (self.run_dir.merged_dir / "config.json").exists():
            return f"Merged model: {self.run_dir.merged_dir.resolve()}"
        if self.config.get("method") == "full":
            return "Full fine-tune: the model above is complete; nothing to merge."
        return "Merged model: not yet (press m: base + adapter into one model, for serving)"

    # -- merge --------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "merge":
            return self.config.get("method") != "full" and not self.merging
        return True

    @on(Button.Pressed, "#done-merge")
    def _merge_pressed(self) -> None:
        self.action_merge()

    def action_merge(self) -> None:
        if self.merging:
            return
        self.merging = True
        self.query_one("#done-merge", Button).disabled = True
        self.query_one("#done-merge-status", Static).update(
            f"Merging… ({' '.join(self.merge_argv[-2:])}); the UI stays usable."
        )
        self.refresh_bindings()
        self._merge()

    @work(thread=True, exclusive=True, exit_on_error=False, group="merge", description="ftwiz merge")
    def _merge(self) -> None:
        try:
            done = subprocess.run(self.merge_argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            self.post_message(MergeFinished(ok=False, output=str(exc)))
            return
        output = (done.stdout + done.stderr).strip().splitlines()
        self.post_message(MergeFinished(ok=done.returncode == 0, output="\n".join(output[-3:])))

    def on_merge_finished(self, message: MergeFinished) -> None:
        self.merging = False
        self.query_one("#done-merge", Button).disabled = False
        self.refresh_bindings()
        self.query_one("#done-merged", Static).update(self._merged_text())
        status = self.query_one("#done-merge-status", Static)
        if message.ok:
            status.update(f"Merged. {message.output}".strip())
            self.notify(f"Merged model written to {self.run_dir.merged_dir.resolve()}", title="Merge done")
        else:
            status.update(f"Merge failed: {message.output}")
            self.notify(message.output or "merge failed", severity="error", title="Merge failed")

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
