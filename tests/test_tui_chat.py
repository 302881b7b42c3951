"""The Chat step: a prompt in, both answers streamed into their panes; Done offers chat and export."""

from __future__ import annotations

import threading

from textual.widgets import Button, Input, Log

from helpers_after import fake_merged
from helpers_runs import HostApp, wait_for, write_fixed_run

from ftwiz.screens.chat import ChatScreen


class FakeSession:
    """core.chat.ChatSession's surface: stream() yields pieces per side; records the settings."""

    source = "fake"

    def __init__(self):
        self.calls = []
        self.release = threading.Event()
        self.reset_count = 0

    def stream(self, side, text, settings, cancel=None):
        self.calls.append((side, text, settings.temperature, settings.max_new_tokens))
        for piece in (f"{side}-", "answer"):
            self.release.wait(5)
            yield piece

    def reset(self):
        self.reset_count += 1


def _chat(tmp_path) -> tuple[FakeSession, ChatScreen]:
    """The Chat step on a recorded run, answering through a FakeSession."""
    session = FakeSession()
    return session, ChatScreen(write_fixed_run(tmp_path / "runs").run, session=session)


async def test_chat_streams_both_answers_with_the_settings(tmp_path):
    session, screen = _chat(tmp_path)
    async with HostApp(screen).run_test(size=(100, 30)) as pilot:
        screen.query_one("#chat-temperature", Input).value = "0"
        screen.query_one("#chat-max-new-tokens", Input).value = "16"
        screen.query_one("#chat-input", Input).value = "Date: 1 May 2001\\nISO:"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.busy)
        session.release.set()
        await wait_for(pilot, lambda: not screen.busy)
        tuned = "\n".join(screen.query_one("#chat-tuned", Log).lines)
        base = "\n".join(screen.query_one("#chat-base", Log).lines)
        assert "tuned-answer" in tuned and "base-answer" in base
        assert session.calls == [("tuned", "Date: 1 May 2001\nISO:", 0.0, 16), ("base", "Date: 1 May 2001\nISO:", 0.0, 16)]
        assert str(screen.query_one("#chat-status").content) == "Ready."
        await pilot.press("ctrl+r")
        assert session.reset_count == 1 and not screen.query_one("#chat-tuned", Log).lines


async def test_bad_settings_are_a_notice_not_a_crash(tmp_path):
    session, screen = _chat(tmp_path)
    async with HostApp(screen).run_test(size=(100, 30)) as pilot:
        screen.query_one("#chat-temperature", Input).value = "9"
        screen.query_one("#chat-input", Input).value = "hi"
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert session.calls == [] and not screen.busy


async def test_done_screen_offers_chat_and_export(tmp_path, monkeypatch):
    from ftwiz.screens.done import DoneScreen

    run = write_fixed_run(tmp_path / "runs").run
    fake_merged(run)
    screen = DoneScreen(run)
    started = []
    monkeypatch.setattr(DoneScreen, "_export", lambda self, argv: started.append(argv))
    async with HostApp(screen).run_test(size=(120, 40)) as pilot:
        assert screen.query_one("#done-chat", Button) and screen.query_one("#done-export", Button)
        await pilot.press("g")
        assert len(started) == 1 and started[0][-5:] == ["--gguf", "--quant", "f16", "--ollama", "--progress-json"]
        assert "export" in started[0] and run.name in started[0]
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ChatScreen))


async def test_done_screen_refuses_an_export_the_disk_cannot_hold(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from ftwiz.screens.done import DoneScreen

    run = write_fixed_run(tmp_path / "runs").run
    fake_merged(run, parameters=4000)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    screen = DoneScreen(run)
    started = []
    monkeypatch.setattr(DoneScreen, "_export", lambda self, argv: started.append(argv))
    async with HostApp(screen).run_test(size=(120, 40)) as pilot:
        await pilot.press("g")
        await pilot.pause()
        status = str(screen.query_one("#done-export-status").content)
        assert status == f"Export refused: not enough disk: needs about 8.0 kB, 1.0 kB free on {run.path.resolve()}"
        assert started == [] and not screen.exporting
