"""Fault injection for the reliability tests; inert unless one of these variables is set.

    FTWIZ_FAULT_OOM_AT_STEP=N[,M] raise torch.cuda.OutOfMemoryError when step N (M, ...) begins,
                                  once per step and process
    FTWIZ_FAULT_OOM_IN_PROBE=N    raise torch.cuda.OutOfMemoryError in the first N attempts of the
                                  pre-flight probe (probe.py)
    FTWIZ_FAULT_NAN_AT_STEP=N     poison a trainable weight with NaN when step N begins
    FTWIZ_FAULT_SLOW_STEP_S=S     sleep S seconds in every step (gives kill tests a window)
    FTWIZ_FAULT_SLOW_SAVE_S=S     sleep S seconds inside a checkpoint write, before it is complete
    FTWIZ_FAULT_FSIZE_BYTES=B     RLIMIT_FSIZE for the run process: a write past B bytes fails
                                  like a full disk (EFBIG) ...
    FTWIZ_FAULT_FSIZE_AT_STEP=N   ... from step N on (default: from the start); the engine's
                                  freed reserve (disk_freed) lifts the limit again

The run process reads them from its environment; nothing here runs in a normal run, except
`is_oom`, which tells an out-of-memory error (injected or real) from every other failure.
"""

from __future__ import annotations

import os
import time
from typing import Any


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def _float(name: str) -> float:
    return float(os.environ.get(name) or 0.0)


def _steps(name: str) -> set[int]:
    return {int(part) for part in (os.environ.get(name) or "").split(",") if part.strip()}


def install_process_limits(step: int | None = None) -> None:
    """Apply the file-size limit (the 'disk full' fault) when its step is reached."""
    limit = _int("FTWIZ_FAULT_FSIZE_BYTES")
    at_step = _int("FTWIZ_FAULT_FSIZE_AT_STEP")
    due = (at_step is None and step is None) or (at_step is not None and step == at_step)
    if limit is not None and due:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
        # The soft limit only: disk_freed() lifts it again, as freeing the engine's reserve would.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def disk_freed() -> None:
    """The engine freed its reserve after a failed write: under the 'disk full' fault that
    space is simulated by lifting the file-size limit again (inert without the fault)."""
    if _int("FTWIZ_FAULT_FSIZE_BYTES") is not None:
        import resource

        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


def on_step_begin(step: int, model: Any, oom_fired: set[int]) -> None:
    """Called by the engine's callback as each optimizer step begins."""
    slow = _float("FTWIZ_FAULT_SLOW_STEP_S")
    if slow:
        time.sleep(slow)
    install_process_limits(step)
    if step in _steps("FTWIZ_FAULT_OOM_AT_STEP") and step not in oom_fired:
        oom_fired.add(step)
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by FTWIZ_FAULT_OOM_AT_STEP)")
    if _int("FTWIZ_FAULT_NAN_AT_STEP") == step:
        import torch

        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.fill_(float("nan"))
                    break


def in_probe(attempt: int) -> None:
    """Called by the pre-flight probe before each attempt's passes (attempt counts from 0)."""
    if attempt < (_int("FTWIZ_FAULT_OOM_IN_PROBE") or 0):
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by FTWIZ_FAULT_OOM_IN_PROBE)")


def in_checkpoint_write() -> None:
    slow = _float("FTWIZ_FAULT_SLOW_SAVE_S")
    if slow:
        time.sleep(slow)
