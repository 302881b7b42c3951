"""The Done step's "Push to the Hub": the form (repository, merged or adapter, private by default),
what will go (files, sizes, the card's first lines), the push in a worker, its result or its one
line of error. The Hub is a stand-in at HfApi's HTTP calls (helpers_after.stub_hub), as in the
CLI's push tests; ftwiz's push and huggingface_hub's token lookup run for real."""

from __future__ import annotations

from textual.widgets import Button, Input

from helpers_after import fake_merged, no_token, stub_hub
from helpers_engine import FAKE_TOKEN
from helpers_runs import HostApp, wait_for, write_fixed_run

from ftwiz.core.export import size_text
from ftwiz.screens.done import DoneScreen
from ftwiz.tui.widgets.on_off import OnOff
from ftwiz.tui.widgets.push_dialog import PushDialog


def _text(screen, selector: str) -> str:
    return str(screen.query_one(selector).content)


async def _open_form(pilot) -> PushDialog:
    await pilot.press("p")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, PushDialog))
    return pilot.app.screen


async def test_done_screen_pushes_the_adapter_and_card_private_by_default(tmp_path, monkeypatch):
    hub = stub_hub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    run = write_fixed_run(tmp_path / "runs").run
    (run.adapter_dir / "training_args.bin").write_bytes(b"pickle")  # never uploaded
    config_size = (run.adapter_dir / "adapter_config.json").stat().st_size
    screen = DoneScreen(run)
    async with HostApp(screen).run_test(size=(100, 34)) as pilot:
        form = await _open_form(pilot)
        assert form.query_one("#push-private", OnOff).value is True  # private unless unticked
        assert form.query_one("#push-merged", OnOff).disabled  # no merged/ yet
        await pilot.press(*"me/dates")
        preview = _text(form, "#push-preview")
        assert f"adapter_config.json  {size_text(config_size)}" in preview
        assert "README.md (model card)" in preview and "training_args.bin" not in preview
        assert "# dates" in preview and "| Base model | `ftwiz-demo-tiny` |" in preview  # the card's first lines
        await pilot.click("#push-go")
        await wait_for(pilot, lambda: pilot.app.screen is screen and not screen.pushing)
        status = _text(screen, "#done-push-status")
        assert status == "Pushed 2 files to https://huggingface.co/me/dates (private)"
        assert not screen.query_one("#done-push", Button).disabled
        shown = pilot.app.export_screenshot()
    (_, repo, repo_kwargs), (_, commit_repo, commit) = hub.calls
    assert repo == commit_repo == "me/dates"
    assert repo_kwargs["private"] is True and repo_kwargs["token"] == FAKE_TOKEN
    assert set(commit["files"]) == {"adapter_config.json", "README.md"}
    card = commit["files"]["README.md"].decode()
    assert "library_name: peft" in card and "| Base model | `ftwiz-demo-tiny` |" in card
    assert "| learning_rate |" in card and "ftwiz train config.yaml" in card
    assert FAKE_TOKEN not in card and FAKE_TOKEN not in shown
    for path in run.path.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


async def test_push_form_sends_the_merged_model_public_when_asked(tmp_path, monkeypatch):
    hub = stub_hub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    run = write_fixed_run(tmp_path / "runs").run
    fake_merged(run)
    screen = DoneScreen(run)
    async with HostApp(screen).run_test(size=(100, 34)) as pilot:
        form = await _open_form(pilot)
        form.query_one("#push-repo", Input).value = "me/dates-merged"
        form.query_one("#push-merged", OnOff).value = True
        form.query_one("#push-private", OnOff).value = False
        await pilot.pause()
        assert "from merged model" in _text(form, "#push-preview")
        assert "model.safetensors" in _text(form, "#push-preview")
        await pilot.press("enter")  # in the repository field: submits
        await wait_for(pilot, lambda: pilot.app.screen is screen and not screen.pushing and hub.calls)
        assert _text(screen, "#done-push-status").endswith("me/dates-merged")
    (_, _, repo_kwargs), (_, _, commit) = hub.calls
    assert repo_kwargs["private"] is False
    assert {"model.safetensors", "config.json", "README.md"} == set(commit["files"])
    assert "library_name: transformers" in commit["files"]["README.md"].decode()


async def test_push_form_names_the_field_of_a_bad_repository(tmp_path, monkeypatch):
    hub = stub_hub(monkeypatch)
    run = write_fixed_run(tmp_path / "runs").run
    screen = DoneScreen(run)
    async with HostApp(screen).run_test(size=(100, 34)) as pilot:
        form = await _open_form(pilot)
        await pilot.press(*"dates", "enter")
        await pilot.pause()
        error = _text(form, "#push-error")
        assert error.startswith("Repository dates: use ORG/NAME") and "\n" not in error
        assert pilot.app.screen is form and hub.calls == []
        await pilot.press("escape")
        await wait_for(pilot, lambda: pilot.app.screen is screen)
        assert _text(screen, "#done-push-status") == "" and hub.calls == []


async def test_done_screen_push_without_a_token_says_how_to_log_in(tmp_path, monkeypatch):
    hub = stub_hub(monkeypatch)
    no_token(monkeypatch, tmp_path / "hf")
    run = write_fixed_run(tmp_path / "runs").run
    screen = DoneScreen(run)
    async with HostApp(screen).run_test(size=(100, 34)) as pilot:
        await _open_form(pilot)
        await pilot.press(*"me/dates", "enter")
        await wait_for(pilot, lambda: pilot.app.screen is screen and not screen.pushing
                       and _text(screen, "#done-push-status").startswith("Push failed"))
        status = _text(screen, "#done-push-status")
        assert "\n" not in status and "hf auth login" in status and "HF_TOKEN" in status
    assert hub.calls == []


async def test_done_screen_push_offline_is_one_line(tmp_path, monkeypatch):
    import ftwiz.core.hub

    hub = stub_hub(monkeypatch)
    monkeypatch.setattr(ftwiz.core.hub, "hub_reachable", lambda: False)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    run = write_fixed_run(tmp_path / "runs").run
    screen = DoneScreen(run)
    async with HostApp(screen).run_test(size=(100, 34)) as pilot:
        await _open_form(pilot)
        await pilot.press(*"me/dates", "enter")
        await wait_for(pilot, lambda: _text(screen, "#done-push-status").startswith("Push failed"))
        status = _text(screen, "#done-push-status")
        assert "\n" not in status and "not reachable" in status
    assert hub.calls == []
