"""`ftwiz plan`: method, hyperparameters, memory, fit, time and cost for a model on a GPU.

Fast by design (no torch import): planning reads shapes, never weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ftwiz.core.errors import UserError
from ftwiz.core.methods import METHOD_NAMES


def _gib(x: float) -> str:
    return f"{x:6.2f} GiB"


def _hours(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{max(1, round(hours * 60))} min"


def _render(d: dict) -> str:
    gpu = d["gpu"]
    count = gpu.get("count", 1)
    gpu_line = (
        "none here (CPU only): plan for one with --gpu NAME or --vram GIB" if gpu["source"] == "cpu"
        else f"{gpu['name']}: {gpu['free_gib']:.1f} of {gpu['total_gib']:.1f} GiB free ({gpu['source']})" if count == 1
        else f"{count} x {gpu['name']}: {gpu['free_gib']:.1f} of {gpu['total_gib']:.1f} GiB free on each ({gpu['source']})"
    )
    lines = [
        f"Model    {d['model']['name']} ({d['model']['total_params'] / 1e9:.2f}B parameters)",
        f"GPU      {gpu_line}",
        f"Method   {d['method_reason']}",
    ]
    if count > 1 and gpu["source"] != "cpu":
        dist = d["distribution"]
        lines.append(f"Launch   {dist['label']}: {dist['reason']}")
    if d["method"] == "qlora":
        lines.append(f"         fp32 upcast of embeddings/head/norms: {'yes' if d['qlora_upcast'] else 'no (base only frozen)'}")
    if d["method"] != "full":
        lines.append(f"LoRA     r={d['rank']} on {', '.join(d['targets'])}")
    batch = d["batch"]
    steps = "" if batch["steps"] is None else f"; {batch['steps_per_epoch']} steps an epoch, {batch['steps']} in all"
    examples = "" if batch["examples_per_step"] is None else f"~{batch['examples_per_step']:g} examples a step: "
    lines.append(f"Batch    {examples}{batch['reason']}{steps}")
    lines.append("")
    lines.append("Hyperparameters")
    for name, item in d["hyperparameters"].items():
        lines.append(f"  {name:<28} {str(item['value']):<14} {item['reason']}")
    lines.append("")
    each = " on each GPU" if count > 1 else ""
    lines.append(f"Memory   estimated peak GPU memory{each}, reached at the {d['peak_phase']}")
    for name, gib in d["breakdown"].items():
        if gib:
            lines.append(f"  {name:<28} {_gib(gib)}")
    lines.append(f"  {'peak allocated':<28} {_gib(d['peak_gib'])}")
    lines.append(f"  {'reserved (allocator)':<28} {_gib(d['reserved_gib'])}")
    lines.append(f"  {'nvidia-smi would show':<28} {_gib(d['nvidia_smi_gib'])}")
    fit = d["fit"]
    lines.append(f"Fits     {'yes' if d['fits'] else 'NO'}: {fit['reasons'][0]}")
    if fit["suggestion"]:
        lines.append(f"         {fit['suggestion']}")
    if d["time"]:
        lines.append(
            f"Time     {_hours(d['time']['hours'])} at ~{d['time']['tokens_per_second']:,} tokens/s; "
            f"cost ${d['cost']['usd']:.2f} at ${d['cost']['price_per_gpu_hour']:g}/h"
        )
        for line in d["time_cost_assumptions"]:
            lines.append(f"         {line}")
    ev = d.get("evaluation")
    if ev:
        every = f", every {ev['every_steps']} steps" if ev["every_steps"] else ""
        stop = (f"early stopping after {ev['early_stopping_patience']} evaluations without improvement"
                if ev["early_stopping_patience"] else "early stopping off (--early-stopping N)")
        lines.append(f"Eval     {ev['evaluations']} times on the held-out 10%{every}, a checkpoint each; the one with "
                     f"the lowest evaluation loss is the result; {stop}")
    if d.get("data"):
        lines.append(f"Data     {d['data']['kept']:,} usable rows; "
                     f"{sum(d['data']['dropped'].values()):,} bad rows or lines left out (data.drop_invalid)")
    if d.get("disk"):
        disk = d["disk"]
        free = f" of {disk['free_gib']:.1f} GiB free" if disk["free_gib"] is not None else ""
        parts = ", ".join(f"{item['what']}: {item['gib']:.1f} GiB" for item in disk["items"])
        lines.append(f"Disk     {disk['total_gib']:.1f} GiB{free}{'' if disk['fits'] is not False else ': does NOT fit'} "
                     f"({parts}; {disk['reasons'][0]}); base model download {disk['base_model_download_gib']:.1f} GiB "
                     "if not cached")
    for note in d["notes"]:
        if note != f"does not fit: {fit['suggestion']}":  # already under Fits
            lines.append(f"Note     {note}")
    if d.get("written"):
        lines.append(f"Wrote    {d['written']}")
    lines.append(f"Next     {_next_step(d)}")
    return "\n".join(lines)


def _next_step(d: dict) -> str:
    """What a first-timer does after reading the plan."""
    if not d["fits"]:
        return "change what the Fits line suggests (or --method qlora, --seq, a smaller model), then plan again"
    written = d.get("written")
    if not written:
        return "add --write run.yaml to save this plan as a run config, then: ftwiz train run.yaml"
    if d.get("data_placeholder"):
        return f"put your training data in data.jsonl (or edit data.path in {written}), check it with ftwiz data, then: ftwiz train {written}"
    return f"ftwiz train {written}"



def _evaluation(d: dict, patience: int | None) -> dict:
    """How the run evaluates: ten times (a tenth of its steps apart), a checkpoint each, the best kept."""
    from ftwiz.core.defaults import EVALUATIONS_PER_RUN

    steps = (d.get("batch") or {}).get("steps")
    return {"evaluations": EVALUATIONS_PER_RUN, "every_steps": None if steps is None else -(-steps // EVALUATIONS_PER_RUN),
            "best_checkpoint_kept": True, "early_stopping_patience": patience}


def _on_off(value: str | None) -> bool | None:
    return None if value is None else value == "on"


@click.command()
@click.option("--model", "model", required=True, help="Catalog name, local directory with config.json, or Hub id.")
@click.option("--data", "data", type=str, default=None, help="Dataset file: examples and lengths come from it.")
@click.option("--examples", type=int, default=None, help="Number of training examples (without --data).")
@click.option("--gpu", type=str, default=None, help="Plan for this GPU (e.g. H200, 'A100 80GB', 4090).")
@click.option("--vram", type=float, default=None, help="Plan for a GPU with this many GiB.")
@click.option("--gpus", type=int, default=None,
              help="How many of the --gpu/--vram GPUs (default 1; detected: this machine's count).")
@click.option("--method", type=click.Choice(["auto", *METHOD_NAMES]), default="auto", show_default=True)
@click.option("--batch", type=int, default=None, help="Micro-batch per GPU (per_device_train_batch_size).")
@click.option("--seq", type=int, default=None, help="Maximum tokens per example.")
@click.option("--rank", type=int, default=None, help="LoRA rank.")
@click.option("--targets", type=str, default=None, help="minimal | attention | all-linear | q_proj,v_proj,...")
@click.option("--grad-ckpt", type=click.Choice(["on", "off"]), default=None, help="Force gradient checkpointing.")
@click.option("--packing", type=click.Choice(["on", "off"]), default=None,
              help="Padding-free packing of examples into rows (default: on for a GPU).")
@click.option("--qlora-upcast", type=click.Choice(["on", "off"]), default="off", show_default=True,
              help="QLoRA: peft's fp32 upcast of embeddings, head and norms (off: base only frozen, as TRL).")
@click.option("--optim", type=str, default=None, help="adamw_torch, adamw_8bit, paged_adamw_8bit, ...")
@click.option("--drop-invalid", is_flag=True,
              help="With --data: plan on the usable rows and leave the bad ones out in the run (data.drop_invalid).")
@click.option("--early-stopping", "patience", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop when the evaluation loss has not improved for N evaluations.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--write", "write", type=click.Path(dir_okay=False), default=None, help="Write the run config YAML here.")
@click.option("--force", is_flag=True, help="Let --write replace an existing file.")
def plan(model, data, examples, gpu, vram, gpus, method, batch, seq, rank, targets, grad_ckpt, packing, qlora_upcast,
         optim, drop_invalid, patience, as_json, write, force):
    """Plan a fine-tune: method, hyperparameters, memory, fit, time and cost."""
    from ftwiz.core.plan import make_plan

    if gpu is not None and vram is not None:
        raise UserError("--gpu/--vram: give one of them, not both")
    if data is not None and examples is not None:
        raise UserError("--data/--examples: give one of them, not both")
    if write and Path(write).exists() and not force:
        raise UserError(f"{write}: exists; not overwritten (add --force to replace it)")
    data_stats, data_format = None, None
    if drop_invalid and data is None:
        raise UserError("--drop-invalid: needs --data FILE")
    if data is not None:
        from ftwiz.cli.data_cmds import local_tokenizer
        from ftwiz.core.data import validate

        # Token counts from the model's own tokenizer when it is here (lengths set max_length and
        # the memory plan); a word count x1.3 otherwise, labelled as such in the plan.
        report = validate(data, drop_invalid=drop_invalid, tokenizer=local_tokenizer(model))
        if not report.ok:
            first = report.problem_lines()[0] if report.problems else "no usable rows"
            hint = "" if drop_invalid else "; --drop-invalid leaves bad rows out"
            raise UserError(f"{first} ({report.problems_total} problem(s); see ftwiz data {data}{hint})")
        data_stats, data_format = report.stats, report.format
    target = vram if vram is not None else gpu
    result = make_plan(
        model, examples=examples, data_stats=data_stats, gpu=target, method=method, batch=batch, seq=seq,
        rank=rank, targets=targets, grad_ckpt=_on_off(grad_ckpt), qlora_upcast=qlora_upcast == "on", optim=optim,
        gpus=gpus, data_format=data_format, packing=_on_off(packing),
    )
    d = result.to_dict()
    d["evaluation"] = _evaluation(d, patience)
    if drop_invalid:
        d["data"] = {"drop_invalid": True, "kept": len(report.kept), "dropped": report.dropped}
    if write:
        config = result.to_config(data_path=data or "data.jsonl")
        config.data.drop_invalid = drop_invalid
        config.training.early_stopping_patience = patience
        try:
            config.save(write)
        except OSError as exc:
            raise UserError(f"--write: {write}: cannot write ({exc.strerror})") from None
        d["written"] = str(write)
        d["data_placeholder"] = data is None
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(_render(d))
