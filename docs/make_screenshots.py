"""Regenerate docs/screenshots/*.svg from the real app.

The planning steps run on the H200 recording in tests/fixtures/gpus/h200.json (made with
`ftwiz gpus --json` on the GPU machine) with a fixed clock. The run screens (runs list,
dashboard, results) show a real `ftwiz train --demo` run, trained on this machine's CPU first;
they get a CPU-only hardware recording, because that is where the demo ran.

Everything runs in a short temporary directory (default /tmp/ftwiz-demo, recreated), so the
only paths in the pictures are under it:

    python docs/make_screenshots.py [--workdir /tmp/ftwiz-demo] [--size 120x40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "screenshots"
H200_RECORDING = REPO / "tests" / "fixtures" / "gpus" / "h200.json"
FIXED_TIME = 1_760_000_000.0
GIB = 1024**3
CPU_ONLY = {
    "nvml_state": "no-library",
    "message": "NVML library not found: no NVIDIA driver on this machine",
    "cpu_count": 2,
    "cpu_name": "CPU",
    "ram_total_bytes": 8 * GIB,
    "ram_available_bytes": 6 * GIB,
    "disk_free_bytes": 40 * GIB,
    "gpus": [],
}
"""The machine the demo trained on, as the run screens should see it: no GPU."""


def run_demo(workdir: Path) -> None:
    """`ftwiz train --demo`, then `ftwiz attach demo` until it ends (the real engine, on the CPU)."""
    ftwiz = [sys.executable, "-m", "ftwiz.cli", "--runs-dir", "runs"]
    subprocess.run([*ftwiz, "train", "--demo"], cwd=workdir, check=True)
    subprocess.run([*ftwiz, "attach", "demo"], cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    status = json.loads((workdir / "runs" / "demo" / "status.json").read_text())
    if status.get("state") != "finished":
        sys.exit(f"demo run ended as {status.get('state')}: see {workdir}/runs/demo/train.log")


async def settle(pilot, until=None, timeout: float = 60.0) -> None:
    """Wait for workers to finish (and `until()` to hold), then let the screen redraw."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.1)
        busy = any(w.is_running and w.group not in ("run-follow", "gpu-poll", "runs-scan")
                   for w in pilot.app.workers)
        if not busy and (until is None or until()):
            break
    await pilot.pause(0.3)


def shoot(app, name: str) -> None:
    app.save_screenshot(f"{name}.svg", str(OUT))
    print(f"docs/screenshots/{name}.svg  ({type(app.screen).__name__})")


async def planning_screens(size: tuple[int, int]) -> None:
    """Welcome -> Method -> Model -> Data -> Settings -> Review, keyboard only, on the H200."""
    from textual.widgets import Static

    import ftwiz.core.checks
    from ftwiz.core.hardware import RecordedBackend
    from ftwiz.tui.app import make_app

    # The pictures show the recorded H200 machine, which reaches the Hub; the machine taking them
    # may be offline, and Review would (rightly) say the model cannot be downloaded here.
    ftwiz.core.checks.model_available = lambda *args, **kwargs: True
    app = make_app(runs_dir="wizard-runs", hardware_backend=RecordedBackend(str(H200_RECORDING)),
                   clock=lambda: FIXED_TIME)
    async with app.run_test(size=size) as pilot:
        screen = lambda: type(app.screen).__name__  # noqa: E731
        await settle(pilot, lambda: app.state.hardware is not None)
        shoot(app, "1-welcome")
        await pilot.press("f1")
        await settle(pilot)
        shoot(app, "help")
        await pilot.press("escape")
        await pilot.press("ctrl+n")
        await settle(pilot, lambda: screen() == "DecideScreen")
        shoot(app, "2-method")
        await pilot.press("ctrl+n")
        await settle(pilot, lambda: screen() == "ModelScreen")
        await pilot.press(*"llama 3.1 8b", "enter")
        await settle(pilot, lambda: app.state.model_info is not None)
        shoot(app, "3-model")
        await pilot.press("ctrl+n")
        await settle(pilot, lambda: screen() == "DataScreen")
        await pilot.press("ctrl+o")
        await settle(pilot, lambda: app.state.n_examples is not None)
        shoot(app, "4-data")
        await pilot.press("ctrl+n")
        await settle(pilot, lambda: screen() == "SettingsScreen")
        shoot(app, "5-settings")
        await pilot.press("ctrl+n")
        await settle(pilot, lambda: screen() == "ReviewScreen")
        assert "data:" in str(app.screen.query_one("#yaml", Static).content.code)
        shoot(app, "6-review")


async def run_screens(size: tuple[int, int]) -> None:
    """The finished demo run: runs list (what `ftwiz` shows on return), dashboard, results."""
    from ftwiz.core.hardware import RecordedBackend
    from ftwiz.core.runs import open_run
    from ftwiz.screens.train import TrainScreen
    from ftwiz.tui.app import make_app

    run = open_run("demo", "runs")
    heartbeat = float(run.read_status().get("heartbeat") or time.time())
    app = make_app(runs_dir="runs", hardware_backend=RecordedBackend(CPU_ONLY),
                   clock=lambda: heartbeat + 120)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, lambda: type(app.screen).__name__ == "RunsScreen"
                     and bool(app.screen.rows))
        shoot(app, "7-runs")
        app.push_screen(TrainScreen(run))
        await settle(pilot, lambda: app.screen.state == "finished" and app.screen.tracker.finished)
        await pilot.pause(1.0)  # the chart and the progress redraw on a timer
        shoot(app, "8-train")
        await pilot.press("d")
        await settle(pilot, lambda: type(app.screen).__name__ == "DoneScreen")
        shoot(app, "9-done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/ftwiz-demo", help="recreated; keep it short")
    parser.add_argument("--size", default="120x40", help="terminal COLSxROWS")
    parser.add_argument("--reuse-run", action="store_true", help="keep the workdir's finished demo run")
    args = parser.parse_args()
    size = tuple(int(n) for n in args.size.split("x"))
    workdir = Path(args.workdir)
    if not args.reuse_run:
        shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(FTWIZ_CACHE=str(workdir / "cache"), HF_HUB_OFFLINE="1")
    os.chdir(workdir)
    OUT.mkdir(parents=True, exist_ok=True)
    if not (args.reuse_run and (workdir / "runs" / "demo" / "adapter").exists()):
        run_demo(workdir)
    asyncio.run(planning_screens(size))
    asyncio.run(run_screens(size))


if __name__ == "__main__":
    main()
