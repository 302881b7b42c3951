"""The Done step's "Push to the Hub" form: repository, merged or adapter, private; what will go.

It only asks and shows: the files, their sizes and the card's first lines come from
core.push.upload_plan; the push itself runs on the Done screen, in a worker. No token is asked
for, read or shown here (huggingface_hub finds HF_TOKEN or `hf auth login`'s).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from ftwiz.core.errors import UserError
from ftwiz.core.push import check_repo_id, upload_plan
from ftwiz.core.runs import RunDir
from ftwiz.tui.widgets.on_off import OnOff

REPO_FIELD = "Repository"


@dataclass(frozen=True)
class PushRequest:
    repo_id: str
    merged: bool
    private: bool


class PushDialog(ModalScreen["PushRequest | None"]):
    """Asks for ORG/NAME, merged or adapter, private (on by default); dismisses with a PushRequest."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run: RunDir, *, can_merge: bool, full: bool) -> None:
        super().__init__()
        self.run = run
        self.can_merge = can_merge
        self.full = full

    def compose(self) -> ComposeResult:
        with Vertical(id="push-box"):
            yield Static("Push to the Hugging Face Hub", classes="push-title")
            yield Label(f"{REPO_FIELD} (ORG/NAME, created if missing)")
            yield Input(placeholder="your-name/my-model", id="push-repo")
            with Horizontal(id="push-options"):
                if not self.full:
                    yield OnOff("merged model (else the adapter)", value=False, id="push-merged",
                                disabled=not self.can_merge, compact=True)
                yield OnOff("private", value=True, id="push-private", compact=True)
            with VerticalScroll(id="push-preview-box"):
                yield Static("", id="push-preview", markup=False)
            yield Static("", id="push-error", markup=False)
            yield Static("Token: HF_TOKEN or `hf auth login`'s; ftwiz never stores or shows it.",
                         classes="push-hint", markup=False)
            with Horizontal(id="push-buttons"):
                yield Button("Cancel", id="push-cancel")
                yield Button("Push", id="push-go", variant="primary")

    def on_mount(self) -> None:
        self._preview()
        self.query_one("#push-repo", Input).focus()

    def _merged(self) -> bool:
        found = self.query("#push-merged")
        return bool(found and found.first(OnOff).value)

    @on(Input.Changed, "#push-repo")
    @on(OnOff.Changed, "#push-merged")
    def _preview(self) -> None:
        repo = self.query_one("#push-repo", Input).value.strip() or "ORG/NAME"
        self.query_one("#push-error", Static).update("")
        try:
            plan = upload_plan(self.run, repo, self._merged())
        except UserError as exc:
            self.query_one("#push-preview", Static).update(str(exc))
            return
        lines = ["Will upload " + plan.summary_lines()[0], *plan.summary_lines()[1:], "", "Model card:",
                 *(f"  {line}" for line in plan.card_preview())]
        self.query_one("#push-preview", Static).update("\n".join(lines))

    @on(Input.Submitted, "#push-repo")
    @on(Button.Pressed, "#push-go")
    def action_push(self) -> None:
        try:
            repo = check_repo_id(self.query_one("#push-repo", Input).value, field=REPO_FIELD)
        except UserError as exc:
            self.query_one("#push-error", Static).update(str(exc))
            return
        self.dismiss(PushRequest(repo_id=repo, merged=self._merged(),
                                 private=self.query_one("#push-private", OnOff).value))

    @on(Button.Pressed, "#push-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
