"""The end of a run: where the result is, what it learned (before/after), how to use it, merge."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalScroll, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Log, Select, Static

from ftwiz.core.engine.results import (
    load_samples,
    merge_command,
    run_data_format,
    sample_match,
    usage_snippets,
)
from ftwiz.core import demo
from ftwiz.core import export as core_export
from ftwiz.core.errors import UserError
from ftwiz.core.runs import RunDir, kept_checkpoint_text
from ftwiz.tui.run_messages import ExportFinished, ExportProgressed, MergeFinished, PushFinished
from ftwiz.tui.widgets.confirm import ConfirmScreen
from ftwiz.tui.widgets.push_dialog import PushDialog, PushRequest

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
                Binding("p", "push", "Push"), Binding("escape", "back", "Back")]

    def __init__(self, run_dir: RunDir, *, merge_argv: list[str] | None = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.config = run_dir.read_config()
        self.samples = load_samples(run_dir.samples_path)
        self.merge_argv = merge_argv or merge_command(run_dir)
        self.demo = demo.is_demo_run(self.config)
        self.merging = False
        self.exporting = False
        self.pushing = False
        self.export_files: list[tuple[str, int]] = []

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
                yield Button("GGUF + Ollama (g)", id="done-export")
                yield Select([(q, q) for q in core_export.available_quants()], value="f16", allow_blank=False,
                             id="done-quant", compact=True,
                             tooltip="GGUF type: f16 keeps the trained weights; q8_0 is half the size")
                yield Button("Push to Hub (p)", id="done-push")
            yield Static("", id="done-export-status", markup=False)
            yield Log(id="done-export-log", max_lines=200, auto_scroll=True)
            yield Static("", id="done-push-status", markup=False)
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

    def _quant(self) -> str:
        return str(self.query_one("#done-quant", Select).value)

    @on(Button.Pressed, "#done-export")
    def action_export(self) -> None:
        """Size and free disk first (core), a confirmation before overwriting, then the export."""
        if self.exporting:
            return
        status = self.query_one("#done-export-status", Static)
        quant = self._quant()
        try:
            estimate = core_export.estimate_export(self.run_dir, quant)
        except UserError as exc:
            status.update(f"Export: {exc}")
            return
        if not estimate.fits:
            status.update(f"Export refused: {estimate.refusal()}")
            return
        status.update(f"Export: {estimate.line()}")
        existing = core_export.existing_outputs(self.run_dir, quant, ollama=True)
        if not existing:
            self._start_export(quant, force=False)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._start_export(quant, force=True)
            else:
                status.update("Export: not started (the existing files are kept).")

        names = " and ".join(path.name for path in existing)
        self.app.push_screen(ConfirmScreen(f"{names} already exist{'s' if len(existing) == 1 else ''} in "
                                           f"{existing[0].parent}. Overwrite?"), answered)

    def _start_export(self, quant: str, force: bool) -> None:
        self.exporting = True
        self.export_files = []
        self.query_one("#done-export", Button).disabled = True
        log = self.query_one("#done-export-log", Log)
        log.clear()
        log.add_class("-visible")
        log.write_line(str(self.query_one("#done-export-status", Static).content))
        self._export(core_export.export_command(self.run_dir, quant, force=force))

    @work(thread=True, exclusive=True, exit_on_error=False, group="export", description="ftwiz export --gguf")
    def _export(self, argv: list[str]) -> None:
        """`ftwiz export ... --progress-json` in its own process (it loads the model); each JSON line
        is a core.export.ExportProgress, posted to the screen as it comes."""
        other: list[str] = []
        try:
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       stdin=subprocess.DEVNULL)
        except OSError as exc:
            self.post_message(ExportFinished(ok=False, output=str(exc)))
            return
        assert process.stdout is not None
        for line in process.stdout:
            line = line.strip()
            if line.startswith("{"):
                try:
                    step = core_export.ExportProgress.from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    other = (other + [line])[-20:]
                else:
                    self.post_message(ExportProgressed(step))
            elif line:
                other = (other + [line])[-20:]
        ok = process.wait() == 0
        errors = [line for line in other if line.startswith("ftwiz:")] or other[-1:]
        self.post_message(ExportFinished(ok=ok, output="" if ok else (errors[-1] if errors else "no output")))

    def on_export_progressed(self, message: ExportProgressed) -> None:
        step = message.progress
        self.query_one("#done-export-log", Log).write_line(step.line())
        if step.stage == "done":
            self.export_files = list(step.files)
        elif not step.end:
            self.query_one("#done-export-status", Static).update(
                f"Export: {core_export.STAGE_TITLES.get(step.stage, step.stage)}… {step.text}")

    def on_export_finished(self, message: ExportFinished) -> None:
        self.exporting = False
        self.query_one("#done-export", Button).disabled = False
        self.query_one("#done-merged", Static).update(self._merged_text())
        status = self.query_one("#done-export-status", Static)
        if message.ok:
            sizes = "; ".join(f"{path} ({core_export.size_text(size)})" for path, size in self.export_files)
            status.update(f"Exported: {sizes}. ollama create {self.run_dir.name} -f "
                          f"{self.run_dir.path.resolve() / 'gguf' / 'Modelfile'}")
        else:
            status.update(f"Export failed: {message.output}")
            self.notify(message.output or "export failed", severity="error", title="Export failed")

    # -- push (issue 15) ------------------------------------------------------------------------
    @on(Button.Pressed, "#done-push")
    def action_push(self) -> None:
        if self.pushing:
            return
        full = self.config.get("method") == "full"
        can_merge = (self.run_dir.merged_dir / "config.json").exists()
        self.app.push_screen(PushDialog(self.run_dir, can_merge=can_merge, full=full), self._push_answered)

    def _push_answered(self, request: PushRequest | None) -> None:
        if request is None:
            return
        self.pushing = True
        self.query_one("#done-push", Button).disabled = True
        what = "merged model" if request.merged else "adapter"
        self.query_one("#done-push-status", Static).update(
            f"Pushing the {what} to {request.repo_id} ({'private' if request.private else 'public'})… "
            "the UI stays usable.")
        self._push(request)

    @work(thread=True, exclusive=True, exit_on_error=False, group="push", description="push to the Hub")
    def _push(self, request: PushRequest) -> None:
        from ftwiz.core.push import push

        try:
            result = push(self.run_dir, request.repo_id, merged=request.merged, private=request.private)
        except UserError as exc:
            self.post_message(PushFinished(ok=False, output=str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - one line on screen, never a traceback
            self.post_message(PushFinished(ok=False, output=f"push: {type(exc).__name__}: {str(exc)[:200]}"))
            return
        self.post_message(PushFinished(ok=True, output=f"Pushed {len(result.files)} files to {result.url}"
                                                      f"{' (private)' if result.private else ''}"))

    def on_push_finished(self, message: PushFinished) -> None:
        self.pushing = False
        self.query_one("#done-push", Button).disabled = False
        status = self.query_one("#done-push-status", Static)
        if message.ok:
            status.update(message.output)
            self.notify(message.output, title="Pushed")
        else:
            status.update(f"Push failed: {message.output}")
            self.notify(message.output, severity="error", title="Push failed")

    def action_back(self) -> None:
        leave = getattr(self.app, "leave_screen", None)  # the wizard: never down to a blank screen
        if leave is not None:
            leave()
        elif len(self.app.screen_stack) > 1:
            self.app.pop_screen()
