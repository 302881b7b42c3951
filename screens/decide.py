"""Step 2: should you fine-tune at all, and how? The guide's decision framework as questions."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widgets import DataTable, Input, Select, Static

from ftwiz.core.errors import UserError
from ftwiz.core.methods import METHOD_NAMES
from ftwiz.tui.steps import StepScreen

TRAINABLE = METHOD_NAMES
"""Methods ftwiz can run; the others are advice (prompting, continued pre-training)."""


class DecideScreen(StepScreen):
    STEP = "decide"

    def compose_top(self) -> ComposeResult:
        # The ranking stays in view while the questions below it scroll: each answer re-ranks it.
        yield Static("Should you fine-tune? Answer a few questions; the ranking follows", id="decide-title",
                     classes="title")
        yield DataTable(id="ranking", cursor_type="row")

    def compose_body(self) -> ComposeResult:
        from ftwiz.core.decision import questions_for

        self.questions = questions_for(self.state.hardware)
        yield Static("", id="assumed", classes="hint")
        with Horizontal(id="decide-cols"):
            with Vertical(id="advice"):
                yield Static("", id="reasons")
                yield Static(
                    "Move to a method with up/down in the table to read why; Next takes the highlighted one. "
                    "Memory here is rough, from the model size alone; the Model step gives the figure "
                    "for the model you pick.",
                    classes="hint",
                )
            with Vertical(id="questions"):
                for question in self.questions:
                    yield Static(question.text, classes="question")
                    if question.kind == "number":
                        answer = self.state.answers.get(question.id, question.default)
                        yield Input(
                            "" if answer is None else str(answer), id=f"q-{question.id}",
                            type="number", compact=True, tooltip=question.help,
                        )
                    else:  # unanswered until the user answers: no answer is assumed silently
                        answer = self.state.answers.get(question.id)
                        yield Select(
                            [(label, value) for value, label in question.choices],
                            value=Select.NULL if answer is None else answer, allow_blank=True,
                            prompt="(not answered)", id=f"q-{question.id}",
                            compact=True, tooltip=question.help,
                        )
                    yield Static("", id=f"e-{question.id}", classes="bad answer-error")

    def on_mount(self) -> None:
        self.query_one("#ranking", DataTable).add_columns("method", "verdict", "cost", "time", "quality")
        keep = self.state.method if self.state.answers else None
        self.recommend()
        rows = [i for i, rec in enumerate(self.ranking) if rec.method == keep]
        if rows:
            self.query_one("#ranking", DataTable).move_cursor(row=rows[0])

    def _answers(self) -> dict:
        answers = {}
        for question in self.questions:
            value = self.query_one(f"#q-{question.id}").value
            answers[question.id] = None if value is Select.NULL or value == "" else value
        return answers

    @on(Select.Changed)
    @on(Input.Changed)
    def recommend(self) -> None:
        """Every answer re-ranks the methods at once (core.decision is plain, fast logic)."""
        from ftwiz.core.decision import AnswerError, assumed_answers, recommend_method

        table = self.query_one("#ranking", DataTable)
        reasons = self.query_one("#reasons", Static)
        self.state.answers = self._answers()
        for error in self.query(".answer-error"):
            error.update("")
            error.remove_class("-shown")
        try:
            self.ranking = recommend_method(self.state.answers, self.state.hardware)
        except AnswerError as exc:  # said under its question, in the question's words
            self.ranking = []
            table.clear()
            marked = self.query_one(f"#e-{exc.question}", Static)
            marked.update(f"↑ {escape(exc.problem)}")
            marked.add_class("-shown")
            reasons.update("")
            self.query_one("#assumed", Static).update(f"[red]Fix the answer marked below: {escape(exc.problem)}[/]")
            return
        except UserError as exc:
            self.ranking = []
            table.clear()
            reasons.update(f"[red]{escape(str(exc))}[/]")
            return
        assumed = assumed_answers(self.state.answers, self.state.hardware)
        self.query_one("#assumed", Static).update(
            "[b]Not answered yet[/b], so the ranking assumes: "
            + "; ".join(f"{topic}: {escape(label)}" for topic, label in assumed)
            if assumed else "Ranked on your answers."
        )
        table.clear()
        for rec in self.ranking:
            quality = rec.quality or ""
            verdict = {"recommended": "[green]recommended[/]", "not advised": "[dim]not advised[/]"}.get(
                rec.verdict, rec.verdict
            )
            table.add_row(rec.title, verdict, rec.cost_band, rec.time_band, quality)
        trainable = [i for i, rec in enumerate(self.ranking) if rec.method in TRAINABLE]
        if trainable:
            table.move_cursor(row=trainable[0])
        self._show_reasons(table.cursor_row)

    @on(DataTable.RowHighlighted, "#ranking")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_reasons(event.cursor_row)

    def _show_reasons(self, row: int) -> None:
        if not 0 <= row < len(self.ranking):
            return
        rec = self.ranking[row]
        lines = [f"[b]{rec.title}[/b]: {rec.verdict}. Needs: {rec.hardware}"]
        if any("GiB" in text for text in (rec.hardware, *rec.reasons)):
            from ftwiz.core.decision import ROUGH_MEMORY_NOTE

            lines.append(f"[dim]{ROUGH_MEMORY_NOTE}[/dim]")  # under the first figure it qualifies
        lines += [f"• {reason}" for reason in rec.reasons]
        self.query_one("#reasons", Static).update("\n".join(lines))

    def commit(self) -> bool:
        table = self.query_one("#ranking", DataTable)
        if not self.ranking:
            self.notify("Fix the answers first", severity="warning")
            return False
        rec = self.ranking[table.cursor_row]
        if rec.method not in TRAINABLE:
            self.notify(
                f"{rec.title} needs no training run from ftwiz. To fine-tune, highlight LoRA, QLoRA or "
                "Full fine-tuning in the table.", severity="warning", timeout=8,
            )
            return False
        if rec.method != self.state.method:
            self.state.config = None
        self.state.method = rec.method
        return True

    def commit_quietly(self) -> None:
        self.state.answers = self._answers()
