"""`ftwiz gpus`, `ftwiz cost`, `ftwiz decide`: what this machine has, what a run costs, and
whether to fine-tune at all. Fast commands: nothing here imports torch."""

from __future__ import annotations

import math

import json

import click

from ftwiz.core.errors import UserError
from ftwiz.core.memory import gib_text


def _or(value: object, unit: str = "") -> str:
    if value is None:
        return "?"
    return f"{value:g}{unit}" if isinstance(value, (int, float)) else f"{value}{unit}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print Hardware.to_dict() (the recording format).")
@click.option("--path", default=".", show_default=True, help="Measure free disk where runs will be written.")
def gpus(as_json: bool, path: str) -> None:
    """The GPUs training will see (through NVML), CPU, RAM and free disk. Without a GPU: CPU only."""
    from ftwiz.core.hardware import detect_hardware

    hardware = detect_hardware(path=path)
    if as_json:
        click.echo(json.dumps(hardware.to_dict(), indent=2))
        return
    click.echo(hardware.message)
    for gpu in hardware.gpus:
        cc = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else "?"
        mig = {True: "on", False: "off"}.get(gpu.mig_mode, "n/a")
        power = None if gpu.power_w is None else round(gpu.power_w)
        limit = None if gpu.power_limit_w is None else round(gpu.power_limit_w)
        click.echo(
            f"GPU {gpu.index}  {gpu.name}  {gib_text(gpu.memory_used_bytes)} used of "
            f"{gib_text(gpu.memory_total_bytes)} ({gib_text(gpu.memory_free_bytes)} free)"
        )
        click.echo(
            f"      driver {_or(gpu.driver_version)}  CUDA {_or(gpu.cuda_version)}  compute {cc}"
            f"  bf16 {'yes' if gpu.bf16 else 'no (use fp16)'}  MIG {mig}"
        )
        click.echo(
            f"      utilization {_or(gpu.utilization_pct, '%')}  temperature {_or(gpu.temperature_c, ' C')}"
            f"  power {_or(power, ' W')} of {_or(limit, ' W')}"
        )
        for proc in gpu.processes:
            click.echo(f"      pid {proc['pid']} {proc.get('name') or '?'}: {gib_text(proc.get('used_bytes'))}")
    if hardware.cpu_only:
        click.echo("No GPU: training runs on the CPU (the built-in demo works); plan for a GPU with --gpu NAME.")
    click.echo(f"CPU   {hardware.cpu_name} ({_or(hardware.cpu_count)} threads)")
    click.echo(f"RAM   {gib_text(hardware.ram_available_bytes)} available of {gib_text(hardware.ram_total_bytes)}")
    click.echo(f"Disk  {gib_text(hardware.disk_free_bytes)} free at {hardware.disk_path}")


def _parse_params(text: str) -> float:
    """'8', '8B', '8.03b' are billions; a plain big number ('8030261248') is a count."""
    raw = text.strip().lower().removesuffix("b")
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"--params: {text!r} is not a size (e.g. 8, 8B, 0.5B or 8030261248)") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"--params: must be > 0 and finite, got {text}")
    return value * 1e9 if value < 1e5 else value


def _on_off(option: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("on", "off"):
        raise UserError(f"{option}: {value!r} (allowed: on, off)")
    return lowered == "on"


def _positive(option: str, value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise UserError(f"{option}: must be > 0 and finite, got {value:g}")


def _tokens(tokens, examples, avg_tokens, epochs) -> tuple[float, str]:
    if tokens is not None:
        if examples is not None or avg_tokens is not None:
            raise UserError("--tokens: give either --tokens or --examples with --avg-tokens, not both")
        _positive("--tokens", tokens)
        return tokens, f"{tokens:,.0f} tokens"
    if examples is None or avg_tokens is None:
        raise UserError("--tokens: say how much data: --tokens N, or --examples N --avg-tokens L [--epochs E]")
    for option, value in (("--examples", examples), ("--avg-tokens", avg_tokens), ("--epochs", epochs)):
        _positive(option, value)
    return examples * avg_tokens * epochs, f"{examples:,} examples x {avg_tokens:g} tokens x {epochs:g} epochs"


def _model_params(model: str) -> float:
    try:
        from ftwiz.core.models import load_model_info
    except ImportError:
        raise UserError("--model: model lookup is not available in this build; pass --params instead") from None
    return float(load_model_info(model).total_params)


def _default_gpu() -> tuple[str, int]:
    """The GPU here and how many of them, for when --gpu is not given."""
    from ftwiz.core.cost import GPU_SPECS, find_gpu_spec
    from ftwiz.core.hardware import detect_hardware

    hardware = detect_hardware()
    if hardware.cpu_only:
        raise UserError(f"--gpu: no GPU here ({hardware.message.rstrip('.')}); name one (allowed: {', '.join(GPU_SPECS)})")
    first = hardware.gpus[0]
    spec = find_gpu_spec(first.name, first.memory_total_bytes)
    if spec is None:
        raise UserError(f"--gpu: this GPU ({first.name}) is not in the table; name the closest (allowed: {', '.join(GPU_SPECS)})")
    return spec.name, sum(1 for g in hardware.gpus if g.name == first.name)


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@click.command()
@click.option("--params", "--model-params", "params", help="Model size: 8, 8B, 0.5B or an exact count.")
@click.option("--model", help="Model (catalog name, local dir or Hub id) instead of --params.")
@click.option("--tokens", type=float, help="Tokens to train on, all epochs together.")
@click.option("--examples", type=int, help="Number of training examples (with --avg-tokens).")
@click.option("--avg-tokens", type=float, help="Average tokens per example.")
@click.option("--epochs", type=float, default=1, show_default=True, help="Passes over the examples.")
@click.option("--gpu", help="GPU model (default: the one here), e.g. H200, 'A100 80GB', 4090.")
@click.option("--num-gpus", type=int, help="GPUs used data-parallel (default: those here, else 1).")
@click.option("--method", default="lora", show_default=True, help="lora, qlora or full.")
@click.option("--grad-ckpt", default="on", show_default=True, help="Gradient checkpointing: on or off.")
@click.option("--price", type=float, help="USD per GPU-hour (default: table or prices.yaml).")
@click.option("--efficiency", type=float, help="Share of the GPU's peak FLOP/s reached (default 0.38).")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def cost(params, model, tokens, examples, avg_tokens, epochs, gpu, num_gpus, method, grad_ckpt, price,
         efficiency, as_json) -> None:
    """Training time and cost from FLOPs, with the assumptions stated, and the comparison of
    single-GPU QLoRA/LoRA against multi-GPU LoRA and full fine-tuning."""
    from ftwiz.core.cost import compare_scenarios, estimate_time_cost, gpu_spec, load_prices

    if (params is None) == (model is None):
        raise UserError("--params: give the model size with --params B or --model M (one of them)")
    n_params = _parse_params(params) if params is not None else _model_params(model)
    total_tokens, data_text = _tokens(tokens, examples, avg_tokens, epochs)
    ckpt = _on_off("--grad-ckpt", grad_ckpt)
    if price is not None and (not math.isfinite(price) or price < 0):
        raise UserError(f"--price: must be >= 0 and finite, got {price:g}")
    if efficiency is not None and not 0 < efficiency <= 1:
        raise UserError(f"--efficiency: must be in (0, 1], got {efficiency:g}")
    if gpu is None:
        gpu, here = _default_gpu()
        num_gpus = here if num_gpus is None else num_gpus
    gpu = gpu_spec(gpu).name
    prices, source = load_prices()
    common = dict(params=n_params, tokens=total_tokens, gpu=gpu, grad_ckpt=ckpt, efficiency=efficiency,
                  price_per_hour=price, prices=prices, price_source=source)
    num_gpus = 1 if num_gpus is None else num_gpus
    main = estimate_time_cost(method=method.strip().lower(), num_gpus=num_gpus, **common)
    scenarios = compare_scenarios(num_gpus=num_gpus, **common)
    if as_json:
        click.echo(json.dumps({**main.to_dict(), "data": data_text,
                               "scenarios": [s.to_dict() for s in scenarios]}, indent=2))
        return
    click.echo(f"{main.method.upper()} on {main.num_gpus} x {main.gpu}, checkpointing {'on' if ckpt else 'off'}: "
               f"{n_params / 1e9:.2f}B parameters, {data_text}")
    click.echo(f"  ~{main.tokens_per_second:,.0f} tokens/s, {_duration(main.seconds)}, "
               f"${main.cost_usd:,.2f} at ${main.price_per_gpu_hour:g}/GPU-hour")
    click.echo("Compare:")
    for s in scenarios:
        click.echo(f"  {s.method:<6} {s.num_gpus} x {s.gpu:<14} {s.tokens_per_second:>10,.0f} tok/s "
                   f"{_duration(s.seconds):>10} {'$' + format(s.cost_usd, ',.2f'):>12}")
    click.echo("Assumptions:")
    for line in main.assumptions:
        click.echo(f"  - {line}")
    click.echo("  - memory fit is not checked here: `ftwiz plan` checks it")


def _decide_options(command):
    """One option per decision question, so the CLI and the wizard ask the same things."""
    from ftwiz.core.decision import QUESTIONS

    for question in reversed(QUESTIONS):
        allowed = ", ".join(value for value, _ in question.choices) or "a number"
        flag = "--" + question.id.replace("_", "-")
        command = click.option(flag, question.id, help=f"{question.text} ({allowed})")(command)
    return command


@click.command()
@_decide_options
@click.option("--json", "as_json", is_flag=True, help="Print answers and ranked methods as JSON.")
def decide(as_json: bool, **answers) -> None:
    """Should you fine-tune, and how? Answers as options; GPU memory defaults to this machine's."""
    from ftwiz.core.decision import normalize_answers, recommend_method
    from ftwiz.core.hardware import detect_hardware

    given = {key: value for key, value in answers.items() if value is not None}
    hardware = detect_hardware()
    ranked = recommend_method(given, hardware)
    if as_json:
        click.echo(json.dumps({"answers": normalize_answers(given, hardware),
                               "recommendations": [r.to_dict() for r in ranked]}, indent=2))
        return
    for rec in ranked:
        quality = f", quality: {rec.quality}" if rec.quality and rec.method != "full" else ""
        click.echo(f"{rec.rank}. {rec.title} [{rec.verdict}]: {rec.cost_band}, {rec.time_band}{quality}")
        click.echo(f"   needs: {rec.hardware}")
        for reason in rec.reasons:
            click.echo(f"   - {reason}")
