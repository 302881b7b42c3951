"""The Chat step after Done: a prompt in, the fine-tuned answer beside the base model's, streamed.

The models load in a worker on the first prompt (core.chat.ChatSession); answers stream as
ChatPiece messages, the fine-tuned side first, then the base. Escape cancels a running answer
and leaves.
"""

from __future__ import annotations

import threading
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Log, Static

from ftwiz.core.runs import RunDir
from ftwiz.tui.run_messages import ChatPiece, ChatReady, ChatTurnDone

LABELS = {"tuned": "Fine-tuned", "base": "Base model"}


class ChatScreen(Screen):
    """Talk to a run's result and its base model side by side."""

    CSS_PATH = "../tui/chat.tcss"
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+r", "reset", "New conversation")]

    def __init__(self, run_dir: RunDir, session: Any = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.session = session
        """A core.chat.ChatSession; loaded on the first prompt unless a test passes one."""
        self.cancel = threading.Event()
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Static(f"Run {self.run_dir.name} · chat with the result", classes="run-title", markup=False)
        with Horizontal(id="chat-settings"):
            yield Label("Temperature")
            yield Input("0.7", id="chat-temperature", type="number")
            yield Label("Max new tokens")
            yield Input("128", id="chat-max-new-tokens", type="integer")
            yield Static("", id="chat-status", markup=False)
        with Horizontal(id="chat-panes"):
            for side in ("tuned", "base"):
                with Vertical(classes="chat-pane"):
                    yield Static(LABELS[side], classes="chat-heading")
                    yield Log(id=f"chat-{side}", max_lines=2000)
        yield Input(placeholder="Type a prompt, Enter to send (\\n for a newline)", id="chat-input")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#chat-input", Input).focus()
        self._status("Models load on the first prompt." if self.session is None else "Ready.")

    def _status(self, text: str) -> None:
        self.query_one("#chat-status", Static).update(text)

    def settings(self) -> Any:
        from ftwiz.core.chat import ChatSettings

        temperature = float(self.query_one("#chat-temperature", Input).value or 0)
        max_new = int(self.query_one("#chat-max-new-tokens", Input).value or 1)
        return ChatSettings(temperature=temperature, max_new_tokens=max_new)

    @on(Input.Submitted, "#chat-input")
    def _send(self, event: Input.Submitted) -> None:
        text = event.value.replace("\\n", "\n")
        if not text.strip() or self.busy:
            return
        try:
            settings = self.settings()
        except Exception as exc:  # noqa: BLE001 - a UserError or a bad number: shown, not raised
            self.notify(str(exc), severity="error", title="Settings")
            return
        event.input.value = ""
        self.busy = True
        self.cancel.clear()
        for side in ("tuned", "base"):
            self.query_one(f"#chat-{side}", Log).write(f"> {text}\n")
        self._status("Loading models…" if self.session is None else "Answering…")
        self._answer(text, settings)

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat", description="Chat: generating")
    def _answer(self, text: str, settings: Any) -> None:
        if self.session is None:
            from ftwiz.core.chat import ChatSession

            self.session = ChatSession.open(self.run_dir)
            self.post_message(ChatReady(source=self.session.source))
        error = None
        try:
            for side in ("tuned", "base"):
                for piece in self.session.stream(side, text, settings, self.cancel):
                    self.post_message(ChatPiece(side=side, text=piece))
                self.post_message(ChatPiece(side=side, text="\n"))
                if self.cancel.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - shown on the screen
            error = str(exc)
        self.post_message(ChatTurnDone(error=error))

    def on_chat_ready(self, message: ChatReady) -> None:
        self._status(f"Answering… ({message.source})")

    def on_chat_piece(self, message: ChatPiece) -> None:
        self.query_one(f"#chat-{message.side}", Log).write(message.text)

    def on_chat_turn_done(self, message: ChatTurnDone) -> None:
        self.busy = False
        if message.error:
            self._status(f"Failed: {message.error}")
            self.notify(message.error, severity="error", title="Chat failed")
        else:
            self._status("Ready.")

    def action_reset(self) -> None:
        if self.session is not None and not self.busy:
            self.session.reset()
            for side in ("tuned", "base"):
                self.query_one(f"#chat-{side}", Log).clear()
            self._status("New conversation.")

    def action_back(self) -> None:
        self.cancel.set()
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
