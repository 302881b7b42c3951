"""Step 3: which base model; what it is, what LoRA would patch, what it needs here."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Checkbox, DataTable, Input, OptionList, Static
from textual.widgets.option_list import Option

from ftwiz.core.memory import GIB
from ftwiz.core.methods import Method
from ftwiz.tui.messages import MethodMemory, ModelInfoLoaded
from ftwiz.tui.state import DEMO
from ftwiz.tui.steps import StepScreen
from ftwiz.tui.widgets.on_off import OnOff

DEMO_DESCRIPTION = (
    "[b]demo[/b]: the built-in tiny Llama (2 layers, hidden 128, character tokenizer), built on "
    "this machine on first use. It learns to write dates as YYYY-MM-DD in about a minute on a CPU."
)


class ModelScreen(StepScreen):
    STEP = "model"
    BINDINGS = [
        Binding("down", "move_catalog(1)", "Next match", show=False),
        Binding("up", "move_catalog(-1)", "Previous match", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("Pick a base model", classes="title")
        yield Input(
            placeholder="search the catalog, or a Hub id (org/name) or folder + enter",
            id="model-input",
        )
        with Horizontal(id="model-cols"):
            yield OptionList(id="catalog")
            with Vertical(id="model-info"):
                yield Static("", id="model-summary")
                yield DataTable(id="model-memory", cursor_type="none")
                yield Static("", id="model-memory-assumes", classes="hint")
                yield Static("", id="model-targets")
        yield OnOff("trust_remote_code (run Python shipped with the model)", id="trust", compact=True)
        yield Static("", id="trust-warning", classes="warn")

    def on_mount(self) -> None:
        from ftwiz.core.models import catalog_names

        self.names = [DEMO, *catalog_names()]
        memory = self.query_one("#model-memory", DataTable)
        # Fixed widths: auto widths depend on when the worker's rows land, so the layout would too.
        for label, width in (("method", 6), ("GPU needs", 11), ("on this GPU", 22)):
            memory.add_column(label, width=width)
        self.query_one("#trust", Checkbox).value = self.state.trust_remote_code
        self._fill_catalog("")
        if self.state.model_spec:
            self.query_one("#model-input", Input).value = self.state.model_spec
            self.load_info(self.state.model_spec)
        self.query_one("#model-input", Input).focus()

    # -- choosing -------------------------------------------------------------------------
    def _fill_catalog(self, query: str) -> None:
        words = query.lower().split()
        options = [Option(name, id=name) for name in self.names if all(w in name.lower() for w in words)]
        catalog = self.query_one("#catalog", OptionList)
        catalog.set_options(options)
        if options:
            catalog.highlighted = 0

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "move_catalog":  # only while typing a search; elsewhere up/down keep their job
            return isinstance(self.focused, Input) and self.focused.id == "model-input"
        return True

    def action_move_catalog(self, delta: int) -> None:
        """Up/down in the search field move the highlighted match; enter takes it."""
        catalog = self.query_one("#catalog", OptionList)
        if catalog.option_count:
            current = catalog.highlighted or 0
            catalog.highlighted = max(0, min(catalog.option_count - 1, current + delta))

    @on(Input.Changed, "#model-input")
    def _search(self, event: Input.Changed) -> None:
        self._fill_catalog(event.value)

    @on(Input.Submitted, "#model-input")
    def _typed(self, event: Input.Submitted) -> None:
        """Enter: the highlighted catalog entry if the text is a search, else the text itself."""
        text = event.value.strip()
        catalog = self.query_one("#catalog", OptionList)
        if catalog.option_count and text.lower() not in (n.lower() for n in self.names) and "/" not in text:
            text = catalog.get_option_at_index(catalog.highlighted or 0).id
        if text:
            self.choose(text)

    @on(OptionList.OptionSelected, "#catalog")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.choose(event.option.id)

    def choose(self, spec: str) -> None:
        self.state.model_spec = spec
        self.state.model_info = None
        self.load_info(spec)

    @work(thread=True, exclusive=True, exit_on_error=False, group="model-info",
          description="Reading the model's config")
    def load_info(self, spec: str) -> None:
        from ftwiz.core.errors import UserError

        if spec == DEMO:
            self.post_message(ModelInfoLoaded(spec, None))
            return
        from ftwiz.core.models import load_model_info

        try:
            info = load_model_info(spec)
        except UserError as exc:
            self.post_message(ModelInfoLoaded(spec, None, str(exc)))
            return
        self.post_message(ModelInfoLoaded(spec, info))
        self.estimate_methods(info)

    def on_model_info_loaded(self, message: ModelInfoLoaded) -> None:
        summary = self.query_one("#model-summary", Static)
        memory = self.query_one("#model-memory", DataTable)
        targets = self.query_one("#model-targets", Static)
        memory.clear()
        if message.spec != self.state.model_spec:
            return
        if message.spec == DEMO:
            summary.update(DEMO_DESCRIPTION)
            targets.update("LoRA targets: all linear layers (q, k, v, o, gate, up, down).")
            memory.display = False
            return
        if message.info is None:
            summary.update(f"[b]{message.spec}[/b]: {message.error}")
            summary.set_classes("bad")
            targets.update("")
            memory.display = False
            return
        self.state.model_info = info = message.info
        summary.set_classes("")
        summary.update(self._describe(info))
        targets.update(self._targets(info))
        memory.display = True

    def _describe(self, info) -> str:
        disk = getattr(self.state.hardware, "disk_free_bytes", None)
        size = info.size_on_disk_bytes
        lines = [
            f"[b]{info.name}[/b]  ({info.source}{', ' + info.hub_id if info.hub_id else ''})",
            f"{info.total_params / 1e9:.2f}B parameters · {info.architecture} · {info.num_layers} layers · "
            f"hidden {info.hidden_size} · vocab {info.vocab_size:,} · context {info.max_position_embeddings:,}",
        ]
        if size:
            room = "" if disk is None else (
                f" ([green]{disk / GIB:.0f} GiB free[/])" if disk > 1.2 * size
                else f" ([red]only {disk / GIB:.0f} GiB free[/])"
            )
            lines.append(f"Download: {size / GIB:.1f} GiB of bf16 weights{room}")
        if info.gated:
            lines.append(
                "[yellow]Gated on the Hub:[/] accept its license on the model page, then run "
                "`hf auth login` (or set HF_TOKEN) before training."
            )
        if info.note:
            lines.append(info.note)
        return "\n".join(lines)

    def _targets(self, info) -> str:
        from ftwiz.core.models import preset_targets
        from ftwiz.core.parameters import count_summary

        lines = ["LoRA can patch:"]
        for preset in ("minimal", "attention", "all-linear"):
            counts = count_summary(info, 16, preset)
            lines.append(
                f"  {preset:<10} {', '.join(preset_targets(info, preset))}  "
                f"(r=16: {counts['trainable'] / 1e6:.1f}M trainable, {counts['percent']:.2f}%)"
            )
        return "\n".join(lines)

    @work(thread=True, exclusive=True, exit_on_error=False, group="model-memory",
          description="Estimating memory per method")
    def estimate_methods(self, info) -> None:
        from ftwiz.core.memory import floor_text, minimum_memory

        free = self.state.gpu_free_bytes
        count = self.state.gpu_count
        rows = []
        for method in Method:
            estimate = minimum_memory(info, method.value)
            if free is None:
                verdict = "no GPU here"
            elif estimate.required_bytes < free:
                verdict = f"[green]fits[/] ({free / GIB:.0f} GiB free)"
            elif method == "full" and count > 1 and minimum_memory(info, method, shards=count).required_bytes < free:
                verdict = f"[green]fits with FSDP over {count} GPUs[/] ({free / GIB:.0f} GiB free on each)"
            else:
                verdict = f"[red]too big[/] ({free / GIB:.0f} GiB free)"
            rows.append((method.label, floor_text(estimate), verdict))
        self.post_message(MethodMemory(info.name, rows))

    def on_method_memory(self, message: MethodMemory) -> None:
        from ftwiz.core.memory import FLOOR_ASSUMPTIONS

        self.query_one("#model-memory-assumes", Static).update(
            f"at {FLOOR_ASSUMPTIONS}; Settings shows it for your own settings")
        info = self.state.model_info
        if info is None or info.name != message.model:
            return
        table = self.query_one("#model-memory", DataTable)
        table.clear()
        for row in message.rows:
            table.add_row(*row)

    # -- trust_remote_code ----------------------------------------------------------------
    @on(Checkbox.Changed, "#trust")
    def _trust(self, event: Checkbox.Changed) -> None:
        self.state.trust_remote_code = event.value
        self.query_one("#trust-warning", Static).update(
            "trust_remote_code runs Python from the model's repository on this machine, with your "
            "rights. Only turn it on for authors you trust; most models do not need it."
            if event.value else ""
        )

    # -- leaving ----------------------------------------------------------------------------
    def commit(self) -> bool:
        spec = self.state.model_spec
        if spec is None:
            self.notify("Choose a model first (enter on a catalog entry, or type a Hub id + enter)",
                        severity="warning")
            return False
        if spec != DEMO and self.state.model_info is None:
            self.notify(f"{spec}: not loaded yet (or not found); pick another model", severity="warning")
            return False
        self.state.demo = spec == DEMO
        self.state.config = None
        return True
