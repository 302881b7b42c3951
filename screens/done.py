"""The end of a run: where the result is, what it learned (before/after), how to use it, merge."""

from __future__ import annotations

import subprocess
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalScroll, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Static

from ftwiz.core.engine.results import (
    load_samples,
    merge_command,
    run_data_format,
    sample_match,
    usage_snippets,
)
from ftwiz.core import demo
from ftwiz.core.export import export_command
from ftwiz.core.runs import RunDir, kept_checkpoint_text
from ftwiz.tui.run_messages import ExportFinished, MergeFinished

CELL_WIDTH = 20
"""Sample texts are cut to this many characters in the table; samples.json has them whole."""
SHOWN_SAMPLES = 8
"""Rows in the samples table: the page scrolls, the table never does; samples.json has them all."""


def _cut(value: Any) -> str:
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def _pct(value: float | None) -> str:
    return "--" if value is None else f"{value:.0%}"


class DoneScreen(Screen):
    """Results of a finished run."""

    CSS_PATH = "../tui/run.tcss"
    BINDINGS = [Binding("m", "merge", "Merge"), Binding("c", "chat", "Chat"), Binding("g", "export", "GGUF"),
                Binding("escape", "back", "Back")]

    def __init__(self, run_dir: RunDir, *, merge_argv: list[str] | None = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.config = run_dir.read_config()
        self.samples = load_samples(run_dir.samples_path)
        self.merge_argv = merge_argv or merge_command(run_dir)
        self.demo = demo.is_demo_run(self.config)
        self.merging = False
        self.exporting = False

    def compose(self) -> ComposeResult:
        full = self.config.get("method") == "full"
        state = self.run_dir.state()
        yield Static(f"Run {self.run_dir.name} · {state} · results", classes="run-title", markup=False)
        with VerticalScroll(id="done-body"):
            what = "Model" if full else "Adapter"
            yield Static(f"{what}: {self.run_dir.adapter_dir.resolve()}", id="done-adapter", markup=False)
            finished = [e for e in self.run_dir.iter_events() if e.get("type") == "finished"]
            kept = kept_checkpoint_text(finished[-1] if finished else None)
            if kept:
                yield Static(kept, id="done-kept", markup=False)
            yield Static(self._merged_text(), id="done-merged", markup=False)
            with Horizontal(id="done-actions"):
                if not full:
                    yield Button("Merge into one model (m)", id="done-merge", variant="primary")
                yield Static("", id="done-merge-status", markup=False)
            with Horizontal(id="done-after"):
                yield Button("Chat with it (c)", id="done-chat")
                yield Button("Export GGUF + Ollama (g)", id="done-export")
                yield Static("", id="done-export-status", markup=False)
            count = self.samples.count or len(self.samples.examples)
            yield Static(f"Before / after on {count or ''} held-out examples".replace("  ", " "),
                         classes="done-heading")
            if self.demo:
                yield Static(demo.lesson(self.samples.scores), id="done-lesson", classes="done-lesson",
                             markup=False)
            elif self.samples.metric:
                yield Static(f"Metric: {self.samples.metric}", id="done-metric", markup=False)
            if self.samples.scores:
                yield Static(
                    "    ".join(f"{m}: {_pct(b)} → {_pct(a)}" for m, b, a in self.samples.scores),
                    id="done-score",
                    markup=False,
                )
            if self.samples.examples:
                yield DataTable(id="done-samples", cursor_type="row", zebra_stripes=True)
                if len(self.samples.examples) > SHOWN_SAMPLES:
                    yield Static(f"{SHOWN_SAMPLES} of {len(self.samples.examples)} shown; all in "
                                 f"{self.run_dir.samples_path.resolve()}", classes="run-hint", markup=False)
            else:
                yield Static("No samples.json in this run (it stopped before the end, or "
                             "output.samples is 0).", id="done-no-samples", markup=False)
            yield Static("Use it from Python", classes="done-heading")
            snippets = usage_snippets(self.run_dir, self.config, self._prompt(),
                                      run_data_format(self.run_dir, self.config))
            # Code never wraps (a wrapped line is not valid Python): a long line scrolls sideways.
            with HorizontalScroll(classes="done-code-box"):
                yield Static(snippets["load"], id="done-code-load", classes="done-code", markup=False)
            yield Static("From the shell", classes="done-heading")
            with HorizontalScroll(classes="done-code-box"):
                yield Static(snippets["commands"], id="done-code-commands", classes="done-code", markup=False)
            if "merged" in snippets:
                yield Static("After merging (no peft needed)", classes="done-heading")
                with HorizontalScroll(classes="done-code-box"):
                    yield Static(snippets["merged"], id="done-code-merged", classes="done-code", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        if self.samples.examples:
            table = self.query_one("#done-samples", DataTable)
            # The demo grades the format (an ISO date), not the exact date: its column says so.
            verdict = (lambda row: demo.row_verdict({"after": row.after})) if self.demo else sample_match
            table.add_columns("prompt", "before", "after", "expected", "format" if self.demo else "match")
            for row in self.samples.examples[:SHOWN_SAMPLES]:
                table.add_row(_cut(row.prompt), _cut(row.before), _cut(row.after), _cut(row.reference), verdict(row))

    def _prompt(self) -> str:
        for row in self.samples.examples:
            if isinstance(row.prompt, str):
                return row.prompt
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

    # -- chat, export (issue 15) -----------------------------------------------------------
    @on(Button.Pressed, "#done-chat")
    def action_chat(self) -> None:
        from ftwiz.screens.chat import ChatScreen

        self.app.push_screen(ChatScreen(self.run_dir))

    @on(Button.Pressed, "#done-export")
    def action_export(self) -> None:
        if self.exporting:
            return
        self.exporting = True
        self.query_one("#done-export", Button).disabled = True
        self.query_one("#done-export-status", Static).update(
            "Exporting: merge if needed, then llama.cpp's converter (f16)… the UI stays usable.")
        self._export(export_command(self.run_dir))

    @work(thread=True, exclusive=True, exit_on_error=False, group="export", description="ftwiz export --gguf")
    def _export(self, argv: list[str]) -> None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            self.post_message(ExportFinished(ok=False, output=str(exc)))
            return
        lines = done.stdout.strip().splitlines() if done.returncode == 0 else done.stderr.strip().splitlines()
        self.post_message(ExportFinished(ok=done.returncode == 0, output="\n".join(lines[-4:])))

    def on_export_finished(self, message: ExportFinished) -> None:
        self.exporting = False
        self.query_one("#done-export", Button).disabled = False
        self.query_one("#done-merged", Static).update(self._merged_text())
        self.query_one("#done-export-status", Static).update(
            message.output if message.ok else f"Export failed: {message.output}")
        if not message.ok:
            self.notify(message.output or "export failed", severity="error", title="Export failed")

    def action_back(self) -> None:
        leave = getattr(self.app, "leave_screen", None)  # the wizard: never down to a blank screen
        if leave is not None:
            leave()
        elif len(self.app.screen_stack) > 1:
            self.app.pop_screen()
