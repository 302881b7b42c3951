"""Apps with fixed data for the TUI tests and snapshots: recorded hardware, a fixed clock.

The recordings have the shape `ftwiz gpus --json` prints (Hardware.to_dict()), CPU, RAM and
disk included, so nothing on the test machine leaks into a snapshot.
"""

from __future__ import annotations

import time
from pathlib import Path

from ftwiz.core.hardware import RecordedBackend
from ftwiz.tui.app import FtwizApp, make_app

GIB = 1024**3
FIXED_TIME = 1_760_000_000.0

H200 = {
    "nvml_state": "ok",
    "message": "1 GPU(s): NVIDIA H200",
    "driver_version": "570.124.06",
    "cuda_version": "12.8",
    "cpu_count": 16,
    "cpu_name": "Intel(R) Xeon(R) Platinum 8480+",
    "ram_total_bytes": 128 * GIB,
    "ram_available_bytes": 120 * GIB,
    "disk_free_bytes": 60 * GIB,
    "gpus": [
        {
            "index": 0,
            "name": "NVIDIA H200",
            "uuid": "GPU-00000000-0000-0000-0000-000000000000",
            "memory_total_bytes": 150_754_820_096,
            "memory_used_bytes": 552_337_408,
            "memory_free_bytes": 150_202_482_688,
            "driver_version": "570.124.06",
            "cuda_version": "12.8",
            "compute_capability": [9, 0],
            "bf16": True,
            "utilization_pct": 0.0,
            "temperature_c": 31.0,
            "power_w": 75.0,
            "power_limit_w": 700.0,
            "processes": [],
            "mig_mode": False,
        }
    ],
}

CPU_ONLY = {
    "nvml_state": "no-library",
    "message": "NVML library not found: no NVIDIA driver on this machine",
    "cpu_count": 2,
    "cpu_name": "AMD EPYC 7B13",
    "ram_total_bytes": 8 * GIB,
    "ram_available_bytes": 6 * GIB,
    "disk_free_bytes": 40 * GIB,
    "gpus": [],
}


def fixed_app(runs_dir: str | Path, recording: dict = H200) -> FtwizApp:
    """The wizard on recorded hardware with a fixed clock; runs_dir should be a tmp dir."""
    return make_app(runs_dir=runs_dir, hardware_backend=RecordedBackend(recording), clock=lambda: FIXED_TIME)


async def settle(pilot) -> None:
    """Wait until no worker is left running (workers may start others) and messages landed."""
    for _ in range(20):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in pilot.app.workers):
            return


def screen_name(app) -> str:
    return type(app.screen).__name__


async def wait_for_screen(pilot, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while screen_name(pilot.app) != name and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert screen_name(pilot.app) == name


async def wait_until(pilot, predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert predicate(), what


async def open_step(pilot, step: str, **state) -> None:
    """Straight to a wizard step with these WizardState fields set, once the app has settled."""
    await settle(pilot)
    for name, value in state.items():
        setattr(pilot.app.state, name, value)
    pilot.app.goto_step(step)
    await settle(pilot)


async def open_settings_for_8b(pilot, data_spec: str = "train.jsonl", n_examples: int = 1000) -> None:
    """The Settings step for llama-3.1-8b on this data, as if the steps before it were walked."""
    from ftwiz.core.models import load_model_info

    await open_step(pilot, "settings", model_spec="llama-3.1-8b", model_info=load_model_info("llama-3.1-8b"),
                    data_spec=data_spec, n_examples=n_examples)
