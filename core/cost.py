"""How long a fine-tune takes and what it costs (the guide's exercise 3), from FLOPs.

time = tokens x FLOPs per token / (GPU peak x efficiency), cost = time x hourly price.
Every number that is an assumption rather than arithmetic is said so in the result's
`assumptions` list, so the user can see what to distrust.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftwiz.core.errors import UserError

METHODS = ("lora", "qlora", "full")


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures of one GPU model; memory is what NVML reports as total."""

    name: str
    peak_tflops: float  # dense bf16 tensor TFLOP/s with fp32 accumulate (fp16 where no bf16)
    memory_mib: int
    compute_capability: tuple[int, int]
    pattern: str  # regex matched against a normalised name ("nvidia geforce rtx 4090" -> "rtx 4090")

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def bf16(self) -> bool:
        return self.compute_capability >= (8, 0)


GPU_SPECS: dict[str, GpuSpec] = {
    spec.name: spec
    for spec in (
        GpuSpec("RTX 3090", 71.0, 24576, (8, 6), r"\b3090\b"),
        GpuSpec("RTX 4090", 165.2, 24564, (8, 9), r"\b4090\b"),
        GpuSpec("L4", 121.0, 23034, (8, 9), r"\bl4\b"),
        GpuSpec("A10", 125.0, 23028, (8, 6), r"\ba10\b"),
        GpuSpec("A100 40GB", 312.0, 40960, (8, 0), r"\ba100\b.*\b40\s?gb?\b"),
        GpuSpec("A100 80GB", 312.0, 81920, (8, 0), r"\ba100\b.*\b80\s?gb?\b"),
        GpuSpec("H100 80GB SXM", 989.0, 81559, (9, 0), r"\bh100\b(?!.*pcie)"),
        GpuSpec("H200", 989.0, 143771, (9, 0), r"\bh200\b"),
        GpuSpec("T4", 65.0, 15360, (7, 5), r"\bt4\b"),
    )
}
"""Peak dense tensor throughput from NVIDIA's datasheets (sparsity figures halved). The H200
measured ~790 TFLOP/s on a large bf16 matmul, i.e. 80% of this datasheet peak."""

GPU_PRICES: dict[str, float] = {
    "RTX 3090": 0.25,
    "RTX 4090": 0.40,
    "L4": 0.80,
    "A10": 0.75,
    "A100 40GB": 1.30,
    "A100 80GB": 1.80,
    "H100 80GB SXM": 2.50,
    "H200": 3.50,
    "T4": 0.35,
}
"""USD per GPU-hour, typical on-demand cloud prices; edit here or override per user in
$XDG_CONFIG_HOME/ftwiz/prices.yaml (a mapping of GPU name to price) or with --price."""

def _time_calibration() -> dict[str, Any]:
    """core/measured.json's `time_calibration` (bench/report.py writes it from bench/results)."""
    path = Path(__file__).resolve().parent / "measured.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(doc.get("time_calibration") or {}) if isinstance(doc, dict) else {}


TIME_CALIBRATION = _time_calibration()

DEFAULT_EFFICIENCY = TIME_CALIBRATION.get("efficiency", 0.38)
"""Model FLOPs utilisation against the datasheet peak: what `ftwiz train` reached with its own plan
on real chat data (H200, 8B LoRA, packed rows, no checkpointing; bench/results/real-chat-h200.json).
Checkpointing's extra forward is counted in the FLOPs per token, not here."""

QLORA_SLOWDOWN = TIME_CALIBRATION.get("qlora_slowdown", 1.0)
"""QLoRA's time relative to LoRA's for the same tokens: on real chat data through `ftwiz train`
QLoRA was not slower (its plan took a larger micro-batch), so 1.0 unless the results say more."""

SCALING_PER_DOUBLING = 0.9
"""Data-parallel efficiency: each doubling of GPUs keeps 90% of the ideal speed-up."""


def _normalise(name: str) -> str:
    text = name.lower().replace("nvidia", " ").replace("geforce", " ")
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(text.split())


def find_gpu_spec(name: str, memory_bytes: int | None = None) -> GpuSpec | None:
    """The spec for a GPU name as a user types it ("h200", "4090") or NVML reports it
    ("NVIDIA A100-SXM4-80GB"); None when unknown. A bare "A100" is told apart by memory."""
    text = _normalise(name)
    for spec in GPU_SPECS.values():
        if _normalise(spec.name) == text or re.search(spec.pattern, text):
            return spec
    if re.search(r"\ba100\b", text) and memory_bytes is not None:
        return GPU_SPECS["A100 80GB" if memory_bytes > 50 * 2**30 else "A100 40GB"]
    return None


def gpu_spec(name: str, memory_bytes: int | None = None) -> GpuSpec:
    """Like find_gpu_spec, but an unknown name is the user's error."""
    spec = find_gpu_spec(name, memory_bytes)
    if spec is None:
        raise UserError(f"--gpu: unknown GPU {name!r} (allowed: {', '.join(GPU_SPECS)})")
    return spec


def prices_path() -> Path:
    """$XDG_CONFIG_HOME/ftwiz/prices.yaml, ~/.config/ftwiz/prices.yaml when XDG is unset."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ftwiz" / "prices.yaml"


def load_prices(path: Path | None = None) -> tuple[dict[str, float], str]:
    """GPU_PRICES overlaid with the user's file, and where the prices came from."""
    path = path or prices_path()
    prices = dict(GPU_PRICES)
    if not path.is_file():
        return prices, "ftwiz's built-in table"
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", -1) + 1
        raise UserError(f"{path}:{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}:1: expected a mapping of GPU name to USD per hour")
    for name, price in data.items():
        spec = find_gpu_spec(str(name))
        if spec is None:
            raise UserError(f"{path}: {name}: unknown GPU (allowed: {', '.join(GPU_SPECS)})")
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            raise UserError(f"{path}: {name}: price must be a number >= 0 (USD per hour), got {price!r}")
        prices[spec.name] = float(price)
    return prices, str(path)


def flops_per_token(params: float, method: str, grad_ckpt: bool) -> float:
    """6N for full fine-tuning (forward 2N, backward 4N); 4N for LoRA/QLoRA (frozen weights need
    the activation gradient, 2N, but no weight gradient); checkpointing adds one forward, 2N."""
    _check_method(method)
    base = 6.0 if method == "full" else 4.0
    return (base + (2.0 if grad_ckpt else 0.0)) * params


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise UserError(f"--method: unknown method {method!r} (allowed: {', '.join(METHODS)})")


def scaling_factor(num_gpus: int) -> float:
    """Speed of n GPUs relative to one: n x 0.9 per doubling."""
    return num_gpus * SCALING_PER_DOUBLING ** math.log2(num_gpus)


@dataclass
class CostEstimate:
    gpu: str
    num_gpus: int
    method: str
    grad_ckpt: bool
    params: float
    tokens: float
    flops_per_token: float
    total_flops: float
    peak_tflops_per_gpu: float
    efficiency: float
    tokens_per_second: float
    seconds: float
    hours: float
    price_per_gpu_hour: float
    price_source: str
    cost_usd: float
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_time_cost(
    *,
    params: float,
    tokens: float,
    gpu: str | Any = "H200",
    num_gpus: int = 1,
    method: str = "lora",
    grad_ckpt: bool = True,
    efficiency: float | None = None,
    price_per_hour: float | None = None,
    prices: dict[str, float] | None = None,
    price_source: str | None = None,
) -> CostEstimate:
    """Training time and cost for `tokens` tokens (all epochs) of a `params`-parameter model.

    `gpu` is a name ("H200", "NVIDIA A100-SXM4-80GB") or a core.hardware.GPU.
    `price_per_hour` (per GPU) wins over `prices` (name -> USD/h), which defaults to the built-in
    table overlaid with the user's prices.yaml.
    """
    _check_method(method)
    if not params or params <= 0:
        raise UserError(f"--params: model size must be > 0, got {params}")
    if not tokens or tokens <= 0:
        raise UserError(f"--tokens: token count must be > 0, got {tokens}")
    if num_gpus < 1:
        raise UserError(f"--num-gpus: must be >= 1, got {num_gpus}")
    efficiency = DEFAULT_EFFICIENCY if efficiency is None else efficiency
    if not 0 < efficiency <= 1:
        raise UserError(f"--efficiency: must be in (0, 1], got {efficiency}")
    spec = gpu_spec(getattr(gpu, "name", gpu), getattr(gpu, "memory_total_bytes", None))
    if price_per_hour is not None:
        if price_per_hour < 0:
            raise UserError(f"--price: must be >= 0 USD per hour, got {price_per_hour}")
        price, source = price_per_hour, "--price"
    else:
        if prices is None:
            prices, price_source = load_prices()
        price, source = prices.get(spec.name, GPU_PRICES[spec.name]), price_source or "given table"

    per_token = flops_per_token(params, method, grad_ckpt)
    single_rate = spec.peak_tflops * 1e12 * efficiency / per_token
    if method == "qlora":
        single_rate /= QLORA_SLOWDOWN
    rate = single_rate * scaling_factor(num_gpus)
    seconds = tokens / rate
    hours = seconds / 3600

    kind = "full fine-tuning: 6N" if method == "full" else f"{method}: 4N (no weight gradients)"
    assumptions = [
        f"FLOPs per token = {kind}{' + 2N for the checkpointing re-forward' if grad_ckpt else ''}"
        f" = {per_token / params:.0f} x {params / 1e9:.2f}B; attention's sequence-length term ignored",
        f"efficiency {efficiency:.0%} of the datasheet peak {spec.peak_tflops:g} TFLOP/s "
        + (f"(`ftwiz train` on real chat data, H200 8B LoRA: {TIME_CALIBRATION['lora_tokens_per_s']:,.0f} tok/s, "
           f"{TIME_CALIBRATION['source']})" if TIME_CALIBRATION else "(not calibrated: no results file)"),
    ]
    if method == "qlora":
        assumptions.append(
            f"QLoRA at {QLORA_SLOWDOWN:g}x LoRA's time"
            + (f" (H200 8B: {TIME_CALIBRATION['qlora_tokens_per_s']:,.0f} vs {TIME_CALIBRATION['lora_tokens_per_s']:,.0f} "
               "tok/s for LoRA)" if TIME_CALIBRATION else "")
        )
    if num_gpus > 1:
        assumptions.append(
            f"{num_gpus} GPUs data-parallel at {SCALING_PER_DOUBLING:.0%} scaling per doubling "
            f"= {scaling_factor(num_gpus):.2f}x one GPU"
        )
    assumptions.append(f"price ${price:g}/GPU-hour from {source}")
    return CostEstimate(
        gpu=spec.name,
        num_gpus=num_gpus,
        method=method,
        grad_ckpt=grad_ckpt,
        params=float(params),
        tokens=float(tokens),
        flops_per_token=per_token,
        total_flops=per_token * tokens,
        peak_tflops_per_gpu=spec.peak_tflops,
        efficiency=efficiency,
        tokens_per_second=rate,
        seconds=seconds,
        hours=hours,
        price_per_gpu_hour=price,
        price_source=source,
        cost_usd=hours * num_gpus * price,
        assumptions=assumptions,
    )


def compare_scenarios(*, num_gpus: int = 1, **kwargs) -> list[CostEstimate]:
    """The exercise's comparison: QLoRA on one GPU, LoRA on one, LoRA and full on `num_gpus`
    (at least 2, so the multi-GPU line is always there)."""
    kwargs = {k: v for k, v in kwargs.items() if k != "method"}
    many = max(num_gpus, 2)
    return [
        estimate_time_cost(method="qlora", num_gpus=1, **kwargs),
        estimate_time_cost(method="lora", num_gpus=1, **kwargs),
        estimate_time_cost(method="lora", num_gpus=many, **kwargs),
        estimate_time_cost(method="full", num_gpus=many, **kwargs),
    ]
