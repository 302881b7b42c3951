"""Step 4: the training data: format, problems with file:line, token lengths, one example as
the model sees it (prompt tokens that carry no loss dimmed)."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Button, Input, Sparkline, Static

from ftwiz.tui.messages import DataValidated
from ftwiz.tui.state import DEMO
from ftwiz.tui.steps import StepScreen


class DataScreen(StepScreen):
    STEP = "data"
    BINDINGS = [Binding("ctrl+o", "demo_data", "Demo data"), Binding("ctrl+l", "drop_invalid", "Leave out bad rows", show=False)]

    def compose_body(self) -> ComposeResult:
        yield Static("Your training data", classes="title")
        with Horizontal(id="data-row"):
            yield Input(placeholder="a file, a Hub dataset id, or demo + enter", id="data-input")
            yield Button("Demo data (ctrl+o)", id="demo-data")
        yield Static(
            "Rows like {\"prompt\", \"completion\"}, {\"instruction\", \"input\", \"output\"} (alpaca), "
            "{\"messages\": [{\"role\", \"content\"}]} (chat) or {\"text\"}.",
            id="data-status", classes="hint",
        )
        yield Static("", id="problems", classes="bad")
        yield Button("Leave out the bad rows (ctrl+l)", id="drop-invalid")
        yield Static("", id="stats")
        yield Sparkline([], id="histogram")
        yield Static("", id="histogram-axis", classes="hint")
        yield Static("", id="example-title", classes="title")
        yield Static("", id="example", classes="panel")

    def on_mount(self) -> None:
        self.query_one("#histogram", Sparkline).display = False
        self.query_one("#example", Static).display = False
        self.query_one("#drop-invalid", Button).display = False
        if self.state.data_spec:
            self.query_one("#data-input", Input).value = self.state.data_spec
            self.check(self.state.data_spec)
        self.query_one("#data-input", Input).focus()

    @on(Input.Submitted, "#data-input")
    def _typed(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.check(event.value.strip())

    @on(Button.Pressed, "#demo-data")
    def action_demo_data(self) -> None:
        self.query_one("#data-input", Input).value = DEMO
        self.check(DEMO)

    def check(self, spec: str) -> None:
        self.state.data_spec = spec
        self.state.n_examples = None
        self.state.drop_invalid = False
        self.state.data_stats = None
        self.query_one("#data-status", Static).update(f"Reading {spec} ...")
        self.validate(spec)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data",
          description="Checking the dataset")
    def validate(self, spec: str) -> None:
        from ftwiz.core.data import render_example, validate, validate_rows

        from ftwiz.core.wizard import tokenizer_for

        tokenizer = tokenizer_for(self.state.model_spec, self.state.trust_remote_code)
        if spec == DEMO:
            from ftwiz.core.demo import train_rows

            rows = train_rows()
            report = validate_rows(rows, source=DEMO, tokenizer=tokenizer, drop_invalid=True)
            first = rows[0]
        else:
            report = validate(spec, tokenizer=tokenizer, drop_invalid=True)  # bad rows counted, offered to leave out
            first = report.kept[0].data if report.kept else None
        example = None
        if first is not None and report.format:
            example = render_example(first, tokenizer, format=report.format)
        self.post_message(DataValidated(spec, report, example))

    def on_data_validated(self, message: DataValidated) -> None:
        if message.spec != self.state.data_spec:
            return
        self.report = report = message.report
        self._show_verdict()
        self._show_stats(report.stats)
        self._show_example(message.example)

    @on(Button.Pressed, "#drop-invalid")
    def action_drop_invalid(self) -> None:
        """Train on the usable rows only (data.drop_invalid), or back to refusing the file."""
        report = getattr(self, "report", None)
        if report is None or not report.ok or report.problems_total == 0:
            return
        self.state.drop_invalid = not self.state.drop_invalid
        self._show_verdict()

    def _show_verdict(self) -> None:
        report, dropping = self.report, self.state.drop_invalid
        clean = report.problems_total == 0 and report.rows > 0
        status = self.query_one("#data-status", Static)
        if clean:
            verdict = ("ready to train", "green")
        elif dropping:
            verdict = (f"ready to train on {len(report.kept):,}; {report.dropped_total:,} bad rows or lines left out "
                       f"({'; '.join(report.dropped_lines()[:3])})", "green")
        else:
            verdict = (f"{report.problems_total} problem(s)", "red")
        # Plain text, not markup: a path or a token such as [PAD] keeps its brackets. Warnings stand out.
        notes = [part for note in report.notes for part in ("\n", (note.message, "yellow" if note.kind == "warning" else ""))]
        status.update(Content.assemble(
            (report.source, "bold"), f": {report.rows:,} rows, format ", (report.format or "?", "bold"), ", ", verdict, *notes
        ))
        status.set_classes("")
        self.query_one("#problems", Static).update("\n".join(report.problem_lines()))
        button = self.query_one("#drop-invalid", Button)
        button.display = report.ok and not clean
        button.label = ("Keep every row: fix the file instead (ctrl+l)" if dropping
                        else f"Leave out the bad rows, train on {len(report.kept):,} (ctrl+l)")
        usable = clean or (dropping and report.ok)
        self.state.n_examples = (len(report.kept) if dropping else report.rows) if usable else None
        self.state.data_stats = (report.stats or None) if usable else None
        self.state.data_format = report.format if usable else None

    def _show_stats(self, stats: dict) -> None:
        histogram = self.query_one("#histogram", Sparkline)
        axis = self.query_one("#histogram-axis", Static)
        if not stats:
            self.query_one("#stats", Static).update("")
            histogram.display = False
            axis.update("")
            return
        unit = "tokens" if not stats["estimate"] else "words (estimate)"
        self.query_one("#stats", Static).update(
            f"Length in {unit}: median {stats['p50']}, p95 {stats['p95']}, max {stats['max']}. "
            f"Suggested max_length {stats['suggested_max_length']} ({stats['suggested_reason']})."
        )
        edges = stats["histogram"]["edges"]
        histogram.data = stats["histogram"]["counts"]
        histogram.display = True
        label = f" {unit.split()[0]} per row "
        axis.update(f"{edges[0]:<6}{label.center(42 - 12, '─')}{edges[-1]:>6}")

    def _show_example(self, example) -> None:
        box = self.query_one("#example", Static)
        title = self.query_one("#example-title", Static)
        if example is None:
            box.display = False
            title.update("")
            return
        text = Text()
        for span in example.spans:
            text.append(span.text, style="" if span.trains else "dim")
        box.update(text)
        box.display = True
        title.update("One example as the model sees it (dimmed: no loss, the model is not graded on it)")

    def commit(self) -> bool:
        if self.state.data_spec is None:
            self.notify("Give a dataset first (a file, a Hub id, or ctrl+o for the demo)", severity="warning")
            return False
        if self.state.n_examples is None:
            self.notify("The dataset is not checked yet, or has problems to fix first", severity="warning")
            return False
        self.state.config = None
        return True
