"""Run commands: train, runs, attach, stop, resume, rm, merge, sample.

They read and write run directories only (core.runs); the training itself is always its own
process (core.engine), so closing this terminal never stops a run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ftwiz.core.errors import UserError
from ftwiz.core.events import DownloadEvent, ErrorEvent, Event, FinishedEvent, StepEvent, parse_event, parse_events
from ftwiz.core.runs import STALLED, RunDir, kept_checkpoint_text, list_runs, open_run


def _runs_dir(ctx: click.Context) -> str:
    return (ctx.obj or {}).get("runs_dir", "runs")


@click.command()
@click.argument("config_path", required=False, type=click.Path(dir_okay=True))
@click.option("--demo", is_flag=True, help="The built-in demo: tiny model, generated data, ~1 minute on a CPU.")
@click.option("--detach/--foreground", default=True, show_default=True, help="Return at once, or wait for the run.")
@click.option("--name", default=None, help="Run name (default: the config's name, or a timestamp).")
@click.option("--json", "as_json", is_flag=True, help="Print the run directory as JSON.")
@click.option("--prepare-only", is_flag=True, help="Check and write the run directory, start nothing (multi-node).")
@click.pass_context
def train(
    ctx: click.Context, config_path: str | None, demo: bool, detach: bool, name: str | None, as_json: bool, prepare_only: bool
) -> None:
    """Start a training run from CONFIG_PATH (or --demo) in its own process."""
    from ftwiz.core.config import config_from_dict, load_config
    from ftwiz.core.engine.launch import start_run

    if demo == bool(config_path):
        raise UserError("train: give a CONFIG.yaml or --demo (one of them)")
    if demo:
        from ftwiz.core import demo as demo_module

        config = config_from_dict(demo_module.demo_config_dict(demo_module.ensure_demo_model()), "demo")
    else:
        config = load_config(config_path)
    run = start_run(config, _runs_dir(ctx), name=name, detach=detach, start=not prepare_only)
    if prepare_only:
        from ftwiz.core.engine.launch import launch_command

        if as_json:
            click.echo(json.dumps({"run": run.name, "path": str(run.path), "state": "prepared"}))
            return
        click.echo(f"prepared {run.name} in {run.path} (checked, config written, not started)")
        click.echo("  start it on this machine: ftwiz resume " + run.name)
        click.echo("  or on several machines, on each (see docs/engine.md): accelerate launch --multi_gpu "
                   "--num_machines M --machine_rank R --main_process_ip IP --num_processes N "
                   + " ".join(launch_command(run.path, 1)[1:]))
        if config.training.fsdp:
            click.echo("  FSDP (training.fsdp: true) is set by the config: the launch line is the same, "
                       "the model is sharded over all N processes")
        return
    if as_json:
        click.echo(json.dumps({"run": run.name, "path": str(run.path), "state": run.state()}))
    elif detach:
        click.echo(f"started {run.name} in {run.path} (training goes on if you close this terminal)")
        gpus = run.run_status().gpus or 0
        if gpus > 1:
            click.echo(f"  {'FSDP' if config.training.fsdp else 'DDP'} over {gpus} GPUs (accelerate launch)")
        click.echo(f"  follow: ftwiz attach {run.name}    stop: ftwiz stop {run.name}")
        from ftwiz.core.tracking import where_logs_go

        tracker = where_logs_go(run.path, config.training.report_to)
        if tracker:
            click.echo(f"  logs also go to {tracker}")
    else:
        _print_summary(run)
    if not detach and run.state() != "finished":
        ctx.exit(1)


def _last(run: RunDir, kind: type[Event]) -> Event | None:
    last = None
    for event in parse_events(run.iter_events()):
        if isinstance(event, kind):
            last = event
    return last


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_row(run: RunDir, now: float | None = None) -> dict:
    """One line of `ftwiz runs`: what a user needs to tell runs apart (damaged files read as
    far as they can be: a field that is not what it should be shows as unknown)."""
    now = now or time.time()
    status = run.run_status()
    step_event = _last(run, StepEvent)
    try:
        mtime = run.path.stat().st_mtime
    except OSError:
        mtime = now
    created = _number(status.created) or mtime
    heartbeat = _number(status.heartbeat)
    return {
        "name": run.name,
        "state": run.state(now),
        "step": status.step if isinstance(status.step, int) else 0,
        "max_steps": status.max_steps if isinstance(status.max_steps, int) else None,
        "loss": _number(step_event.loss) if step_event else None,
        "age_s": round(now - created, 1),
        "heartbeat_age_s": round(now - heartbeat, 1) if heartbeat else None,
        "path": str(run.path),
    }


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def runs(ctx: click.Context, as_json: bool) -> None:
    """Runs in the runs directory: state (running, stalled, finished, crashed, ...), progress, loss, age."""
    rows = []
    for run in list_runs(_runs_dir(ctx)):
        try:
            rows.append(run_row(run))
        except Exception as exc:  # noqa: BLE001 - one damaged run never takes the list down
            rows.append({"name": run.name, "state": "unreadable", "step": 0, "max_steps": None, "loss": None,
                         "age_s": 0.0, "heartbeat_age_s": None, "path": str(run.path), "error": str(exc)[:200]})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no runs in {_runs_dir(ctx)} (start one with `ftwiz train --demo`)")
        return
    click.echo(f"{'NAME':<28} {'STATE':<9} {'STEP':>11} {'LOSS':>8} {'AGE':>5}")
    for row in rows:
        steps = f"{row['step']}/{row['max_steps'] if row['max_steps'] not in (None, -1) else '?'}"
        loss = f"{row['loss']:.4f}" if isinstance(row["loss"], (int, float)) else "-"
        click.echo(f"{row['name']:<28} {row['state']:<9} {steps:>11} {loss:>8} {_age(row['age_s']):>5}")
    for row in rows:
        if row["state"] == STALLED:
            click.echo(
                f"{row['name']}: stalled: its process is alive but silent for {_age(row['heartbeat_age_s'] or 0)} "
                f"(hung?); `ftwiz stop {row['name']}` twice kills it, then `ftwiz resume {row['name']}`"
            )


def format_event(record: dict) -> str:
    """One line of `ftwiz attach`: steps in words, other events with every field as written (a
    step whose fields are damaged is shown as written too)."""
    event = parse_event(record)
    if isinstance(event, DownloadEvent):
        from ftwiz.core.monitor import download_text

        return download_text(event)
    if isinstance(event, StepEvent) and _number(event.loss) is not None:
        parts = [f"step {event.step}/{event.max_steps if event.max_steps not in (None, -1) else '?'}",
                 f"loss {event.loss:.4f}"]
        if _number(event.eta_s) is not None:
            parts.append(f"eta {_age(event.eta_s)}")
        if _number(event.tokens_per_s):
            parts.append(f"{event.tokens_per_s:.0f} tok/s")
        return "  ".join(parts)
    fields = {k: v for k, v in record.items() if k not in ("v", "t", "type")}
    return f"[{record.get('type')}] " + " ".join(
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in fields.items())


@click.command()
@click.argument("run_ref")
@click.option("--interval", default=0.5, show_default=True, help="Seconds between reads.")
@click.pass_context
def attach(ctx: click.Context, run_ref: str, interval: float) -> None:
    """Follow a run's events until it ends. Ctrl-C detaches; the run goes on."""
    run = open_run(run_ref, _runs_dir(ctx))
    offset, warned = 0, False
    try:
        while True:
            events, offset = run.read_events(offset)
            for event in events:
                click.echo(format_event(event))
            state = run.state()
            if state == STALLED and not warned:
                click.echo(f"run {run.name}: stalled (process alive, no heartbeat); still following")
            warned = state == STALLED
            if state not in ("starting", "running", "stopping", STALLED) and not events:
                click.echo(f"run {run.name}: {state}")
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo(f"\ndetached; {run.name} keeps running (ftwiz attach {run.name} to follow again)")


@click.command()
@click.argument("run_ref")
@click.option("--force", is_flag=True, help="Kill at once (loses the steps since the last checkpoint).")
@click.pass_context
def stop(ctx: click.Context, run_ref: str, force: bool) -> None:
    """Stop a run: first a graceful stop (checkpoint, then exit); a second stop kills it."""
    run = open_run(run_ref, _runs_dir(ctx))
    outcome = run.stop(force=force)
    messages = {
        "not-running": f"run {run.name} is not running ({run.state()})",
        "stopping": f"stopping {run.name}: it saves a checkpoint, then exits (stop again to kill it)",
        "killed": f"killed {run.name}; `ftwiz resume {run.name}` continues from its last checkpoint",
    }
    click.echo(messages[outcome])


@click.command()
@click.argument("run_ref")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def rm(ctx: click.Context, run_ref: str, yes: bool) -> None:
    """Delete a run directory (adapter, checkpoints, log); refuses a run that is still live."""
    from ftwiz.core.runs import delete_run

    run = open_run(run_ref, _runs_dir(ctx))
    if not yes and not click.confirm(f"Delete {run.path} with its adapter and checkpoints?", default=False):
        click.echo("not deleted")
        return
    delete_run(run)
    click.echo(f"deleted {run.name}")


@click.command()
@click.argument("run_ref")
@click.option("--detach/--foreground", default=True, show_default=True)
@click.option("--allow-data-change", is_flag=True,
              help="Resume although the data file differs from the one the run started with.")
@click.pass_context
def resume(ctx: click.Context, run_ref: str, detach: bool, allow_data_change: bool) -> None:
    """Continue a stopped, failed or crashed run from its newest complete checkpoint."""
    from ftwiz.core.engine.launch import resume_run
    from ftwiz.core.engine.checkpoints import latest_checkpoint

    run = open_run(run_ref, _runs_dir(ctx))
    last = latest_checkpoint(run.checkpoints_dir)
    resume_run(run, detach=detach, allow_data_change=allow_data_change)
    click.echo(f"resuming {run.name} from {last.name if last else 'the start (no complete checkpoint)'}")
    if not detach:
        _print_summary(run)


@click.command()
@click.argument("run_ref")
@click.pass_context
def merge(ctx: click.Context, run_ref: str) -> None:
    """Write merged/: the base model with the adapter merged in (loadable by from_pretrained)."""
    from ftwiz.core.engine.results import merge as merge_run

    run = open_run(run_ref, _runs_dir(ctx))
    path = merge_run(run)
    click.echo(f"merged model: {path}")


@click.command()
@click.argument("run_ref")
@click.option("--prompt", required=True, help="Text to continue.")
@click.option("--max-new-tokens", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def sample(ctx: click.Context, run_ref: str, prompt: str, max_new_tokens: int, as_json: bool) -> None:
    """Generate from PROMPT with the base model and with base + adapter, side by side."""
    from ftwiz.core.engine.results import sample as sample_run

    run = open_run(run_ref, _runs_dir(ctx))
    out = sample_run(run, prompt, max_new_tokens)
    if as_json:
        click.echo(json.dumps({"prompt": prompt, **out}))
        return
    click.echo(f"prompt: {prompt!r}")
    click.echo(f"base:       {out['base']!r}")
    click.echo(f"fine-tuned: {out['tuned']!r}")


def _print_summary(run: RunDir) -> None:
    finished = _last(run, FinishedEvent)
    error = _last(run, ErrorEvent)
    click.echo(f"run {run.name}: {run.state()} ({Path(run.path)})")
    if error and run.state() == "failed":
        click.echo(f"  error: {error.message}")
        if error.suggestion:
            click.echo(f"  try: {error.suggestion}")
    if finished:
        click.echo(f"  adapter: {run.path / finished.adapter}  final loss: {finished.final_loss}")
        kept = kept_checkpoint_text(finished)
        if kept:
            click.echo(f"  {kept}")
        score = finished.demo_score
        if score:
            before, after = score["before"]["format_match"], score["after"]["format_match"]
            click.echo(f"  demo: exact-format matches on {score['count']} held-out dates: {before:.0%} before, {after:.0%} after")
