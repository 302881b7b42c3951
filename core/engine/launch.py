"""Start, resume and launch training runs; the run process itself is ftwiz.core.engine.process.

start_run checks everything it can (config, model files, data rows) before it writes a
single file, then creates the run directory, writes config.yaml and starts
`python -m ftwiz.core.engine RUN_DIR` detached: its own session (so SIGHUP from a dropped
SSH connection never reaches it), no shell, stdin from /dev/null, output to train.log.
With more than one visible GPU the same module runs under `accelerate launch`: DDP, or FSDP
when the config says `training.fsdp: true` (the Trainer builds accelerate's FSDP plugin from
its own `fsdp` / `fsdp_config` arguments, so the launch line is the same).
Nothing here imports torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ftwiz.core.config import RunConfig
from ftwiz.core.errors import UserError
from ftwiz.core.events import ResumedEvent, WarningEvent
from ftwiz.core.runs import LOCK_FD_ENV, RunDir, _write_private, create_run_dir, process_identity

__all__ = ["launch", "launch_command", "resume_run", "start_run", "validate_run"]

RUN_ENV = {
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # NVML and CUDA number GPUs alike
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",  # less fragmentation, fewer OOMs
    "PYTHONUNBUFFERED": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def launch_command(run_path: str | Path, gpu_count: int, python: str | None = None) -> list[str]:
    """The argv of the run process: plain Python on one device, accelerate on several.

    DDP and FSDP share it: with `fsdp` in its arguments, the Trainer hands accelerate a
    FullyShardedDataParallelPlugin, which switches accelerate's state to FSDP (no accelerate
    config file and no `--use_fsdp`; those would only set the same plugin from the environment).
    """
    python = python or sys.executable
    engine = ["-m", "ftwiz.core.engine", str(run_path)]
    if gpu_count > 1:
        return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpu_count), *engine]
    return [python, *engine]


def visible_gpu_count() -> int:
    from ftwiz.core.hardware import detect_hardware

    return len(detect_hardware().gpus)


def _prepare_demo_model(config: RunConfig) -> None:
    """The demo's model directory is built on first use (a few seconds, offline)."""
    from ftwiz.core import demo

    path = Path(config.model.name_or_path)
    if config.data.path == demo.DEMO_DATA and path.name == f"demo-model-v{demo.DEMO_VERSION}" and not path.exists():
        demo.ensure_demo_model(path.parent)


def validate_run(config: RunConfig) -> list[str]:
    """Everything checkable before a run dir exists; UserError on bad input, else warnings."""
    from ftwiz.core import checks, demo

    _prepare_demo_model(config)
    from ftwiz.core.models import load_model_info

    try:
        info = load_model_info(config.model.name_or_path)
    except UserError as exc:
        raise UserError(str(exc).replace("--model:", "model.name_or_path:", 1)) from None
    except Exception as exc:  # noqa: BLE001 - an unreadable model is the user's to fix
        raise UserError(f"model.name_or_path: {config.model.name_or_path}: {exc}") from None
    from ftwiz.core.hardware import detect_hardware

    # The one place for checks against the model and the hardware (the run process repeats none).
    warnings = checks.preflight(config, detect_hardware(path=config.output.runs_dir), info)
    if config.data.path != demo.DEMO_DATA:
        from ftwiz.core.data import validate

        report = validate(
            config.data.path, config.data.subset, config.data.split, format=config.data.format, max_rows=config.data.max_rows
        )
        if not report.ok:
            raise UserError("; ".join(report.problem_lines()[:5]) + ("" if len(report.problem_lines()) <= 5 else f" (and more; `ftwiz data {config.data.path}` lists them all)"))
    return warnings


def launch(
    run: RunDir, gpu_count: int | None = None, detach: bool = True, env: dict[str, str] | None = None, lock: int | None = None
) -> RunDir:
    """Start the run process for an existing run directory (`env`: extra variables for it).

    The callers (start_run, resume_run) check the launch against the GPUs first, before they
    write anything. The owner lock (taken here unless `lock` is already held) passes to the run
    process, which holds it for its whole life; a second launch is refused with a UserError.
    """
    count = visible_gpu_count() if gpu_count is None else gpu_count
    lock = run.hold_lock() if lock is None else lock
    from ftwiz.core.tracking import tracker_env

    report_to = (run.read_config().get("training") or {}).get("report_to", "none")
    try:
        env = {**os.environ, **RUN_ENV, **tracker_env(run.path, report_to), **(env or {}), LOCK_FD_ENV: str(lock)}
        run.write_status(state="starting", exit_code=None, launched=time.time(), gpus=count)
        log = os.open(run.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = subprocess.Popen(
                launch_command(run.path.resolve(), count),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                close_fds=True,
                pass_fds=(lock,),
            )
        finally:
            os.close(log)
        # The run process records the same identity itself; whichever write lands last agrees.
        run.write_status(pid=process.pid, **process_identity(process.pid))
    finally:
        os.close(lock)  # the run process keeps the lock through its inherited copy
    if not detach:
        try:
            process.wait()
        except KeyboardInterrupt:
            run.stop()
            process.wait()
    return run


def start_run(
    config: RunConfig,
    runs_dir: str | Path,
    name: str | None = None,
    detach: bool = True,
    env: dict[str, str] | None = None,
    start: bool = True,
) -> RunDir:
    """Validate, create runs_dir/<name> (never an existing one), write config.yaml, start the process.

    With start=False the run directory is left "prepared" for a launch by hand (several machines
    under `accelerate launch`, see docs/engine.md).
    """
    from ftwiz.core.runs import check_run_name, check_runs_dir

    check_runs_dir(runs_dir)
    wanted = check_run_name(name or config.name or time.strftime("run-%Y%m%d-%H%M%S"))
    warnings = validate_run(config)
    count = None
    if start:  # a run prepared for a launch by hand is checked when it is launched
        from ftwiz.core.checks import check_launch

        count = visible_gpu_count()
        check_launch(config, count)
    identity = data_identity(config.data.path)
    if identity is not None:  # resumed from any working directory, the run reads the same file
        config = config.model_copy(update={"data": config.data.model_copy(update={"path": identity["path"]})})
    run = create_run_dir(runs_dir, wanted)
    config = config.model_copy(update={"name": run.name})
    _write_private(run.config_path, config.to_yaml())
    run.write_status(state="starting", step=0, max_steps=config.training.max_steps, created=time.time(), data=identity)
    for message in warnings:
        run.emit(WarningEvent(message=message))
    if not start:
        run.write_status(state="prepared")
        return run
    return launch(run, gpu_count=count, detach=detach, env=env)


def data_identity(path: str) -> dict | None:
    """The data a run trains on, as recorded at its start: absolute path, size and SHA-256
    (None for the demo rows and Hub datasets)."""
    import hashlib

    from ftwiz.core import demo

    if path == demo.DEMO_DATA or not Path(path).expanduser().is_file():
        return None
    resolved = Path(path).expanduser().resolve()
    digest = hashlib.sha256()
    try:
        with open(resolved, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        size = resolved.stat().st_size
    except OSError as exc:
        raise UserError(f"data.path: {path}: cannot read it: {exc.strerror or exc}") from None
    return {"path": str(resolved), "size": size, "sha256": digest.hexdigest()}


def check_resume_data(run: RunDir, recorded: dict | None, data_path: str, allow_change: bool) -> dict | None:
    """Refuse to resume on data other than the run started with, unless asked to."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("path"), str):
        return None  # started before ftwiz recorded its data, or unreadable: nothing to compare
    current = data_identity(data_path) if Path(recorded["path"]).is_file() else None
    if current == recorded or allow_change:
        return current
    why = "is gone" if current is None else "has changed since the run started (size or SHA-256 differs)"
    raise UserError(
        f"run {run.name}: its data {recorded['path']} {why}; resuming would train on other data. "
        f"Restore the file, or pass --allow-data-change to resume on it as it is now"
    )


def resume_run(run: RunDir, detach: bool = True, allow_data_change: bool = False) -> RunDir:
    """A new process in the same run dir; it continues from the newest complete checkpoint."""
    from ftwiz.core.config import load_config

    state = run.state()
    if state in {"starting", "running", "stopping", "stalled"}:
        raise UserError(f"run {run.name}: still {state}; stop it first (`ftwiz stop {run.name}`)")
    if state == "finished":
        raise UserError(f"run {run.name}: already finished; start a new run to train further")
    from ftwiz.core.checks import check_launch

    count = visible_gpu_count()
    config = load_config(run.config_path)
    check_launch(config, count)
    lock = run.hold_lock()  # from here on no other ftwiz process can start this run
    try:
        recorded = run.read_status().get("data")
        current = check_resume_data(run, recorded, config.data.path, allow_data_change)
        if recorded and current != recorded:
            run.write_status(data=current)
            run.emit(WarningEvent(message=f"resumed on changed data (--allow-data-change): {recorded['path']}"))
        run.emit(ResumedEvent(previous_state=state))
    except BaseException:
        os.close(lock)
        raise
    return launch(run, gpu_count=count, detach=detach, lock=lock)
