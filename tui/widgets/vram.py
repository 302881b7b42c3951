"""VRAM per GPU (used/total, history, utilization, temperature, power), or the run's RAM on CPU."""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Sparkline, Static

from ftwiz.core.monitor import format_bytes, format_bytes_gib

HISTORY = 120
"""Samples kept per GPU: two minutes at one a second."""


def _value(value: Any, unit: str, digits: int = 0) -> str:
    return "--" if value is None else f"{value:.{digits}f}{unit}"


def gpu_lines(sample: Any) -> tuple[str, str]:
    """Two short lines for one GpuSample, so a pane 30 columns wide holds them."""
    used, total = sample.memory_used_bytes, sample.memory_total_bytes
    share = f" {used / total:.0%}" if used is not None and total else ""
    first = f"GPU {sample.index}  {format_bytes_gib(used)}/{format_bytes_gib(total)} GiB{share}"
    second = (
        f"util {_value(sample.utilization_pct, '%')}  {_value(sample.temperature_c, '°C')}"
        f"  {_value(sample.power_w, ' W')}"
    )
    return first, second


class GpuPanel(Vertical):
    """One GPU: two lines of figures and a sparkline of memory used."""

    DEFAULT_CSS = """
    GpuPanel { height: auto; margin-bottom: 1; }
    GpuPanel .gpu-memory, GpuPanel .gpu-health { height: 1; }
    GpuPanel Sparkline { height: 2; }
    """

    def __init__(self, index: int) -> None:
        super().__init__(id=f"gpu-panel-{index}")
        self.history: deque[float] = deque(maxlen=HISTORY)
        # Built here, not in compose, so show() works right after mounting.
        self.memory = Static("", classes="gpu-memory", markup=False)
        self.health = Static("", classes="gpu-health", markup=False)
        self.sparkline = Sparkline([], summary_function=max)

    def compose(self) -> ComposeResult:
        yield self.memory
        yield self.health
        yield self.sparkline

    def show(self, sample: Any) -> None:
        first, second = gpu_lines(sample)
        self.memory.update(first, layout=False)
        self.health.update(second, layout=False)
        self.history.append((sample.memory_used_bytes or 0) / 1024**3)
        self.sparkline.data = list(self.history)


class VramPane(VerticalScroll):
    """One GpuPanel per GPU the sampler reports; the training process's RSS when there is none."""

    DEFAULT_CSS = """
    VramPane { height: 1fr; }
    VramPane #vram-cpu { height: auto; }
    VramPane #vram-cpu Sparkline { height: 2; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.rss_history: deque[float] = deque(maxlen=HISTORY)
        self.gpu_count = 0
        self.panels: dict[int, GpuPanel] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="vram-cpu"):
            yield Static("sampling hardware…", id="vram-cpu-line", markup=False)
            yield Sparkline([], summary_function=max)
            yield Static("", id="vram-ram-line", markup=False)

    def show(self, hardware: Any) -> None:
        """Apply one core.monitor.HardwareSample."""
        cpu = self.query_one("#vram-cpu", Vertical)
        if hardware.gpus:
            if len(hardware.gpus) != self.gpu_count:
                self.query(GpuPanel).remove()
                self.panels = {sample.index: GpuPanel(sample.index) for sample in hardware.gpus}
                self.mount_all(self.panels.values())
                self.gpu_count = len(hardware.gpus)
            for sample in hardware.gpus:
                self.panels[sample.index].show(sample)
            cpu.display = False
            return
        cpu.display = True
        line = self.query_one("#vram-cpu-line", Static)
        used, total = hardware.ram_used_bytes, hardware.ram_total_bytes
        self.query_one("#vram-ram-line", Static).update(
            f"machine RAM {format_bytes_gib(used)}/{format_bytes_gib(total)} GiB"
            + (f" {used / total:.0%}" if used is not None and total else "")
        )
        sparkline = cpu.query_one(Sparkline)
        sparkline.display = bool(self.rss_history) or hardware.rss_bytes is not None
        if hardware.rss_bytes is None:
            line.update(f"CPU run ended · peak {format_bytes(max(self.rss_history) * 1024**2)}"
                        if self.rss_history else "No GPU; the training process is not running.")
            return
        self.rss_history.append(hardware.rss_bytes / 1024**2)
        line.update(f"CPU run: process RAM {format_bytes(hardware.rss_bytes)}")
        sparkline.data = list(self.rss_history)
