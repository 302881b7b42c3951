"""Step 1: what this machine has, and what it can train."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Static

from ftwiz.core.memory import FLOOR_ASSUMPTIONS, GIB, gib_text
from ftwiz.core.methods import METHOD_NAMES
from ftwiz.tui.messages import CapabilitiesEstimated
from ftwiz.tui.steps import StepScreen

CAPABILITY_MODELS = ("llama-3.2-1b", "llama-3.1-8b", "qwen2.5-32b", "llama-3.1-70b")
"""Catalog models that span the sizes people ask about, shown as 'can I train this here?'."""
CAPABILITY_METHODS = METHOD_NAMES


CAPABILITY_COLUMNS = ("model", "params", "LoRA", "QLoRA", "Full")


class WelcomeScreen(StepScreen):
    STEP = "welcome"
    BINDINGS = [Binding("d", "demo", "Demo on CPU")]

    def compose_body(self) -> ComposeResult:
        yield Static("Welcome to ftwiz: let's fine-tune a language model on this machine.", classes="title")
        yield Static("Looking at this machine...", id="hw-status", classes="hint")
        yield DataTable(id="gpus", cursor_type="row", zebra_stripes=True)
        yield Static("", id="host")
        yield Static("What this hardware can train", classes="title")
        yield Static(f"GPU memory needed at {FLOOR_ASSUMPTIONS}", classes="hint")
        yield DataTable(id="capabilities", cursor_type="none")
        with Horizontal(id="demo-row"):
            yield Static("", id="demo-text")
            yield Button("Demo (d)", id="demo", variant="success")

    def on_mount(self) -> None:
        gpus = self.query_one("#gpus", DataTable)
        gpus.add_columns("#", "GPU", "memory", "free", "driver", "CUDA", "bf16")
        capabilities = self.query_one("#capabilities", DataTable)
        capabilities.add_columns(*CAPABILITY_COLUMNS)
        self.show_hardware()

    def show_hardware(self) -> None:
        """Fill in from the detected hardware (called again when detection finishes)."""
        hardware = self.state.hardware
        if hardware is None:
            return
        status = self.query_one("#hw-status", Static)
        gpus = self.query_one("#gpus", DataTable)
        gpus.clear()
        for gpu in hardware.gpus:
            gpus.add_row(
                str(gpu.index),
                gpu.name,
                gib_text(gpu.memory_total_bytes),
                gib_text(gpu.memory_free_bytes),
                gpu.driver_version or "?",
                gpu.cuda_version or "?",
                "yes" if gpu.bf16 else "no (fp16)",
            )
        if hardware.cpu_only:
            status.update(no_gpu_line(hardware.message))
            status.set_classes("warn")
            gpus.display = False
        else:
            count = len(hardware.gpus)
            status.update(f"Found {count} GPU{'s' if count > 1 else ''}:")
            status.set_classes("hint")
            gpus.display = True
        self.query_one("#host", Static).update(
            f"CPU: {hardware.cpu_name or '?'} ({hardware.cpu_count} threads)   "
            f"RAM: {gib_text(hardware.ram_total_bytes)} ({gib_text(hardware.ram_available_bytes)} free)   "
            f"Disk free: {gib_text(hardware.disk_free_bytes)}"
        )
        self.query_one("#demo-text", Static).update(
            "No GPU needed: the [b]demo[/b] teaches a tiny model to write dates as YYYY-MM-DD, "
            "in about a minute on the CPU."
            if hardware.cpu_only
            else "New to this? The [b]demo[/b] walks the whole path with a tiny model in a minute."
        )
        self.estimate_capabilities(hardware)

    @work(thread=True, exclusive=True, exit_on_error=False, group="capabilities",
          description="Estimating what this hardware can train")
    def estimate_capabilities(self, hardware) -> None:
        from ftwiz.core.memory import floor_text, minimum_memory
        from ftwiz.core.models import load_model_info

        free = hardware.gpus[0].memory_free_bytes if hardware.gpus else 0
        rows = []
        for name in CAPABILITY_MODELS:
            info = load_model_info(name)
            cells = []
            for method in CAPABILITY_METHODS:
                estimate = minimum_memory(info, method)
                fits = free and estimate.required_bytes < free
                need = floor_text(estimate)
                cells.append(f"[green]yes[/] {need}" if fits else f"[red]no[/]  {need}")
            rows.append((name, f"{info.total_params / 1e9:.1f}B", *cells))
        self.post_message(CapabilitiesEstimated(rows))

    def on_capabilities_estimated(self, message: CapabilitiesEstimated) -> None:
        from textual.content import Content

        table = self.query_one("#capabilities", DataTable)
        # Explicit widths: DataTable's auto widths are measured on idle, and a snapshot taken
        # before that measurement shows the header's widths (a race seen in the test suite).
        table.clear(columns=True)
        for index, label in enumerate(CAPABILITY_COLUMNS):
            width = max([len(label)] + [len(Content.from_markup(row[index]).plain) for row in message.rows])
            table.add_column(label, width=width)
        for row in message.rows:
            table.add_row(*row)

    @on(Button.Pressed, "#demo")
    def _demo(self) -> None:
        self.action_demo()

    def action_demo(self) -> None:
        self.wizard.start_demo()


def no_gpu_line(message: str) -> str:
    """Core's CPU-only message said once: its 'CPU only:' prefix repeats what the line says."""
    reason = message.strip().removeprefix("CPU only:").strip().rstrip(".")
    reason = f": {escape(reason)}" if reason else ""
    return (f"[b]No NVIDIA GPU found[/b]{reason}. "
            "Fine-tuning a real model needs one; the built-in demo trains on the CPU.")
