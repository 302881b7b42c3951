"""`ftwiz params` and `ftwiz explore`: LoRA parameter counts, answered without importing torch."""

from __future__ import annotations

import json

import click

from ftwiz.core.models import DEFAULT_TARGETS, TARGET_PRESETS, ModelInfo, load_model_info
from ftwiz.core.parameters import EXPLORE_RANKS, adapter_text, check_rank, count_summary, explore_table

TARGETS_HELP = f"{' | '.join(TARGET_PRESETS)} or module names, comma separated (q_proj,v_proj)"


def _header(info: ModelInfo) -> str:
    line = f"{info.name}: {info.architecture}, {info.total_params:,} parameters ({info.source})"
    if info.gated:
        line += f"\n  gated on the Hub: {info.license}"
    if info.note:
        line += f"\n  note: {info.note}"
    return line


@click.command()
@click.option("--model", "model", required=True, help="Catalog name, Hub id, or a directory holding config.json.")
@click.option("--rank", "rank", type=int, default=16, show_default=True, help="LoRA rank r.")
@click.option("--targets", default=DEFAULT_TARGETS, show_default=True, help=TARGETS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: trainable, total, percent and more.")
def params(model: str, rank: int, targets: str, as_json: bool) -> None:
    """Trainable parameters of a LoRA adapter, as peft's print_trainable_parameters reports them."""
    check_rank(rank)
    info = load_model_info(model)
    summary = count_summary(info, rank, targets)
    if as_json:
        click.echo(json.dumps({"model": info.name, **summary}))
        return
    click.echo(_header(info))
    click.echo(f"LoRA r={rank} on {', '.join(summary['targets'])}")
    click.echo(
        f"trainable params: {summary['trainable']:,} || all params: {summary['total']:,} "
        f"|| trainable%: {summary['percent']:.4f}"
    )
    click.echo(f"adapter file: {adapter_text(summary['adapter_bytes'])} (fp32, as peft saves it)")


@click.command()
@click.option("--model", "model", required=True, help="Catalog name, Hub id, or a directory holding config.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as a JSON list of rows.")
def explore(model: str, as_json: bool) -> None:
    """Compare LoRA ranks 8/16/32/64 against the target presets."""
    info = load_model_info(model)
    rows = explore_table(info, EXPLORE_RANKS)
    if as_json:
        click.echo(json.dumps({"model": info.name, "total_params": info.total_params, "rows": rows}))
        return
    click.echo(_header(info))
    for preset in TARGET_PRESETS:
        targets = next(r["targets"] for r in rows if r["preset"] == preset)
        click.echo(f"  {preset:10} {TARGET_PRESETS[preset]}: {', '.join(targets)}")
    click.echo("")
    click.echo(f"{'rank':>4}  {'targets':10}  {'trainable':>14}  {'% of all':>8}  {'adapter MB (fp32)':>17}")
    for row in rows:
        click.echo(
            f"{row['rank']:>4}  {row['preset']:10}  {row['trainable']:>14,}  "
            f"{row['percent']:>7.3f}%  {row['adapter_mb_fp32']:>17,.1f}"
        )
