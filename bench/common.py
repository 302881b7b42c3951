"""Pieces the benchmark's GPU processes share: model shapes, model building, memory readings.

Runs on the GPU machine under its own python3 (torch 2.11, transformers 5.17) and on the CPU
here for the dry run (tiny shapes). Imports torch lazily so the pure parts stay testable.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CATALOG = REPO / "core" / "catalog"
ATTENTION_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
RESULT_PREFIX = "BENCH_RESULT "
# A tiny Llama for the CPU dry run: every code path, seconds per config.
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 4096,
    "tie_word_embeddings": False, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
}


def model_config_dict(name: str) -> dict[str, Any]:
    """The HF config of a catalog model (ftwiz's own catalog), or the tiny dry-run shape."""
    if name == "tiny-llama":
        return dict(TINY_LLAMA)
    try:
        from ftwiz.core.models import load_model_info

        return dict(load_model_info(name).config)
    except ImportError:  # catalog reader not there: read the bundled file itself
        return dict(json.loads((CATALOG / f"{name}.json").read_text())["config"])


def hf_config(name: str):
    from transformers import AutoConfig

    cfg = dict(model_config_dict(name))
    cfg.pop("torch_dtype", None)
    cfg.pop("dtype", None)
    model_type = cfg.pop("model_type")
    cfg.pop("architectures", None)
    config = AutoConfig.for_model(model_type, **cfg)
    config.use_cache = False
    return config


def device_of(args_device: str):
    import torch

    return torch.device(args_device)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_model(name: str, dtype_name: str, device: str):
    """Random weights built directly on the device from the config (no Hub, no disk)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config(name), dtype=dtype)
    return model


def save_random_model(name: str, out_dir: str, device: str, with_tokenizer: bool = False) -> dict[str, Any]:
    """Write a random bf16 model to disk once, so QLoRA can load it through from_pretrained."""
    import torch

    t0 = time.time()
    torch.manual_seed(0)
    model = random_model(name, "bfloat16", device)
    built = time.time() - t0
    model.save_pretrained(out_dir, max_shard_size="50GB")
    if with_tokenizer:
        save_tokenizer(out_dir, model.config.vocab_size)
    return {"model": name, "dir": out_dir, "build_s": round(built, 1), "save_s": round(time.time() - t0 - built, 1)}


def save_tokenizer(out_dir: str, vocab_size: int) -> None:
    """A small byte-level BPE with a ChatML template, so `ftwiz train` can render chat rows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    corpus = [
        "Convert the date to ISO format. Output: 2024-03-15. The quick brown fox jumps over the lazy dog.",
        "user assistant system hello world 0123456789 January February March April May June July",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab_size, 2000), special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
    )
    tok.chat_template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
        "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    tok.save_pretrained(out_dir)


class NvmlPeak:
    """Samples NVML 'used' memory of one GPU every 50 ms in a thread; keeps the maximum."""

    def __init__(self, index: int = 0, period_s: float = 0.05):
        self.peak = None
        self._stop = threading.Event()
        self._period = period_s
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._read = lambda: pynvml.nvmlDeviceGetMemoryInfo(self._handle).used
        except Exception:  # no NVML (CPU dry run): peak stays None
            self._read = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            used = self._read()
            self.peak = used if self.peak is None else max(self.peak, used)
            self._stop.wait(self._period)

    def __enter__(self) -> "NvmlPeak":
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._read is not None:
            self._thread.join()
            self.peak = max(self.peak or 0, self._read())


def memory_readings(device, nvml: NvmlPeak | None = None) -> dict[str, Any]:
    import torch

    gib = 2**30
    if device.type != "cuda":
        return {"peak_allocated_gib": None, "peak_reserved_gib": None, "nvml_used_gib": None}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / gib, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / gib, 3),
        "nvml_used_gib": round(nvml.peak / gib, 3) if nvml and nvml.peak else None,
    }


def environment() -> dict[str, Any]:
    """GPU, driver and library versions, for every results file."""
    import importlib.metadata as md

    env: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "bitsandbytes", "trl", "liger-kernel", "accelerate", "datasets"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        env["gpu"] = name.decode() if isinstance(name, bytes) else name
        driver = pynvml.nvmlSystemGetDriverVersion()
        env["driver"] = driver.decode() if isinstance(driver, bytes) else driver
        env["gpu_count"] = pynvml.nvmlDeviceGetCount()
        env["gpu_memory_total_gib"] = round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30, 2)
    except Exception as exc:  # CPU dry run
        env["gpu"] = f"none ({type(exc).__name__})"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        env["git_commit"] = head if len(head) == 40 else None  # the GPU copy has no history
    except Exception:
        env["git_commit"] = None
    env["alloc_conf"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
    return env


def run_child(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one configuration in a fresh process; its last RESULT line is the answer."""
    t0 = time.time()
    child_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=child_env, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-1500:]
        return {"status": "timeout", "wall_s": round(time.time() - t0, 1),
                "error": f"timed out after {timeout_s:.0f} s", "stderr_tail": tail.decode(errors="replace") if isinstance(tail, bytes) else tail}
    result = parse_result(proc.stdout)
    if result is None:
        return {"status": "crashed", "wall_s": round(time.time() - t0, 1), "returncode": proc.returncode,
                "stderr_tail": proc.stderr[-2500:]}
    result.setdefault("status", "ok")
    result["wall_s"] = round(time.time() - t0, 1)
    return result


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The last line starting with RESULT_PREFIX, decoded; None when the child printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                return json.loads(line[len(RESULT_PREFIX):])
            except ValueError:
                return None
    return None


def emit_result(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def write_json(path: str | Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
