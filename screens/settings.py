"""Step 5: the hyperparameters, each recommended with its reason and editable; the memory bar,
time and cost follow every edit; the rank x targets explorer."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Grid
from textual.markup import escape
from textual.widgets import Checkbox, DataTable, Input, Select, Static

from ftwiz.core.errors import UserError
from ftwiz.tui.steps import StepScreen
from ftwiz.tui.widgets.memory_bar import MemoryBar
from ftwiz.tui.widgets.on_off import OnOff

PRESETS = ("minimal", "attention", "all-linear")
# (section.field, label, kind); kind: "float", "int", "bool", "preset"
FIELDS: list[tuple[str, str, str]] = [
    ("training.learning_rate", "learning rate", "float"),
    ("training.num_train_epochs", "epochs", "float"),
    ("training.per_device_train_batch_size", "micro-batch", "int"),
    ("training.gradient_accumulation_steps", "grad. accumulation", "int"),
    ("training.max_length", "max length (tokens)", "int"),
    ("training.gradient_checkpointing", "gradient checkpointing", "bool"),
    ("training.warmup_ratio", "warmup ratio", "float"),
    ("lora.r", "LoRA rank r", "int"),
    ("lora.lora_alpha", "LoRA alpha", "int"),
    ("lora.lora_dropout", "LoRA dropout", "float"),
    ("lora.target_modules", "LoRA targets", "preset"),
]


def _widget_id(key: str) -> str:
    return "f-" + key.replace(".", "-")


class SettingsScreen(StepScreen):
    STEP = "settings"

    def compose_body(self) -> ComposeResult:
        self.base, self.reasons = self._recommended()
        values = {**self.base, **self.state.overrides}
        yield Static("Settings: recommended for your data and GPU; edit any", classes="title")
        with Grid(id="fields"):
            for key, label, kind in FIELDS:
                if key.startswith("lora.") and self.state.method == "full":
                    continue
                yield Static(label, classes="field-label")
                value = values.get(key)
                if kind == "bool":
                    yield OnOff("on" if value else "off", bool(value), id=_widget_id(key), compact=True)
                elif kind == "preset":
                    yield Select([(p, p) for p in PRESETS], value=value if value in PRESETS else "all-linear",
                                 allow_blank=False, id=_widget_id(key), compact=True)
                else:
                    yield Input(str(value), id=_widget_id(key), compact=True,
                                type="integer" if kind == "int" else "text")
                yield Static(self.reasons.get(key, ""), id=_widget_id(key) + "-why", classes="reason")
        yield Static("", id="field-detail", classes="hint")
        yield Static("", id="settings-error", classes="bad")
        yield Static("", id="plan-warning", classes="warn")
        yield Static("Memory on this GPU", id="memory-title", classes="title")
        yield MemoryBar(id="memory")
        yield Static("", id="memory-floor", classes="hint", markup=False)
        yield Static("", id="time-cost")
        if self.state.method != "full" and self.state.model_info is not None:
            yield Static("Rank x targets: trainable parameters (adapter file, fp32 as peft saves it)",
                         classes="title")
            yield DataTable(id="explorer", cursor_type="none")

    def on_descendant_focus(self, event) -> None:
        """The focused field's reason in full under the table (its column is cut at 80 columns)."""
        widget_id = getattr(event.widget, "id", None) or ""
        detail = self.query_one("#field-detail", Static)
        for key, label, _ in FIELDS:
            if widget_id == _widget_id(key):
                detail.update(f"[b]{label}[/b]: {escape(self.reasons.get(key, ''))}")
                return

    # -- recommended values ---------------------------------------------------------------
    def _recommended(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Field values and reasons from core.recommend (or the demo's own config)."""
        from ftwiz.core.wizard import demo_values, recommended_values

        state = self.state
        if state.demo:
            return demo_values([key for key, _, _ in FIELDS], state.data_stats)
        if state.model_info is None:  # the model did not load: hyperparameters without a memory fit
            from ftwiz.core.recommend import recommend_hyperparams

            cpu_only = bool(state.hardware is None or state.hardware.cpu_only)
            hyper = recommend_hyperparams(state.n_examples, state.method, state.bf16_ok, cpu_only=cpu_only)
            return recommended_values(hyper.to_dict())
        return recommended_values(self._plan().to_dict()["hyperparameters"])

    def _plan(self):
        """core's plan for this model, method, GPU and the Data step's token lengths."""
        from ftwiz.core.plan import make_plan

        state = self.state
        self.plan = make_plan(
            state.model_info, examples=state.n_examples, data_stats=state.data_stats,
            gpu=state.hardware, method=state.method, data_format=state.data_format,
        )
        return self.plan

    # -- live updates ---------------------------------------------------------------------
    def on_mount(self) -> None:
        from ftwiz.core.plan import base_model_warning

        warning = self.query_one("#plan-warning", Static)
        info = self.state.model_info
        shown = getattr(self, "plan", None) is not None and base_model_warning(info) in self.plan.notes
        warning.display = shown
        warning.update(base_model_warning(info) if shown else "")
        if self.query("#explorer"):
            self._fill_explorer()
        self.update_plan()
        self.query_one(f"#{_widget_id(FIELDS[0][0])}").focus()  # its reason shows in full below

    def _fill_explorer(self) -> None:
        from ftwiz.core.parameters import adapter_text, explore_table

        table = self.query_one("#explorer", DataTable)
        table.add_columns("rank", *PRESETS)
        rows: dict[int, list[str]] = {}
        for row in explore_table(self.state.model_info):
            rows.setdefault(row["rank"], []).append(
                f"{row['trainable'] / 1e6:.1f}M {row['percent']:.2f}% ({adapter_text(row['adapter_bytes'])})"
            )
        for rank, cells in rows.items():
            table.add_row(str(rank), *cells)

    def _values(self) -> dict[str, Any]:
        values = dict(self.base)
        for key, _, kind in FIELDS:
            found = self.query(f"#{_widget_id(key)}")
            if not found:
                continue
            raw = found.first().value
            if kind in ("bool", "preset"):
                values[key] = raw
            else:
                values[key] = _number(raw, kind)
        return values

    @on(Checkbox.Changed)
    def _checkbox_label(self, event: Checkbox.Changed) -> None:
        event.checkbox.label = "on" if event.value else "off"

    @on(Input.Changed, "#f-lora-r")
    def _alpha_follows_rank(self, event: Input.Changed) -> None:
        """alpha = 2 x rank while alpha is still twice the previous rank (the user has not set it)."""
        alpha = self.query_one("#f-lora-lora_alpha", Input)
        previous = getattr(self, "_rank", self.base.get("lora.r"))
        rank = _number(event.value, "int")
        if isinstance(rank, int) and rank > 0:
            if _number(alpha.value, "int") == 2 * previous:
                alpha.value = str(2 * rank)
                self.query_one("#f-lora-lora_alpha-why", Static).update(f"alpha = 2 x rank ({rank}), the guide's "
                                                                        "default scaling; set it to keep your own")
            self._rank = rank

    @on(Input.Changed)
    @on(Checkbox.Changed)
    @on(Select.Changed)
    def update_plan(self) -> None:
        """Validate the edited values through RunConfig and refresh memory, time and cost."""
        error = self.query_one("#settings-error", Static)
        values = self._values()
        self.state.overrides = {k: v for k, v in values.items() if self.base.get(k) != v}
        try:
            config = self._config(values)
        except UserError as exc:
            error.update(str(exc).removeprefix("settings: "))
            self.state.config = None
            return
        error.update("")
        self.state.config = config
        self._show_memory_and_cost(config)

    def _config(self, values: dict[str, Any]):
        from ftwiz.core.wizard import settings_config

        state = self.state
        return settings_config(
            values, method=state.method, model_spec=state.model_spec, data_spec=state.data_spec,
            trust_remote_code=state.trust_remote_code, info=state.model_info,
            plan=getattr(self, "plan", None), demo=state.demo, precision_chosen=bool(self.reasons),
            drop_invalid=state.drop_invalid,
        )

    def _show_memory_and_cost(self, config) -> None:
        state = self.state
        bar = self.query_one("#memory", MemoryBar)
        cost = self.query_one("#time-cost", Static)
        info = state.model_info
        if info is None:
            bar.update("The demo's tiny model trains on the CPU: a few hundred MB of RAM, about a minute.")
            cost.update("")
            return
        from ftwiz.core.memory import memory_figure

        try:
            figure = memory_figure(config, info, state.hardware)  # Review's call too: one figure
        except UserError as exc:
            self.query_one("#settings-error", Static).update(str(exc))
            return
        count = state.gpu_count
        title = self.query_one("#memory-title", Static)
        assumes = f"[dim]({escape(figure.assumptions)})[/dim]"
        if count > 1:
            spread = ("FSDP over {count} GPUs (weights, gradients, optimizer states sharded)"
                      if config.training.shards(count) > 1 else "DDP over {count} GPUs (a copy of the model on each)")
            title.update(f"Memory on each GPU: {spread.format(count=count)} {assumes}")
        else:
            title.update(f"Memory on {'this GPU' if state.gpu_free_bytes else 'a GPU (none here)'} {assumes}")
        bar.show(figure.estimate, state.gpu_free_bytes)
        self.query_one("#memory-floor", Static).update(figure.comparison)
        cost.update(self._time_cost(config))

    def _time_cost(self, config) -> str:
        from ftwiz.core.plan import config_time_cost

        state = self.state
        if not state.n_examples or not state.gpu_free_bytes:
            return ""
        try:
            result = config_time_cost(config, state.model_info.total_params, state.n_examples,
                                      state.data_stats, state.hardware.gpus[0])
        except UserError as exc:
            return f"Time and cost: {exc}"
        estimate = result.estimate
        return (
            f"Time ~{estimate.hours:.1f} h at ~{estimate.tokens_per_second:,.0f} tokens/s, "
            f"cost ~${estimate.cost_usd:.2f} at ${estimate.price_per_gpu_hour:g}/h "
            f"({result.basis})"
        )

    def commit(self) -> bool:
        self.update_plan()
        if self.state.config is None:
            self.notify("Fix the settings marked in red first", severity="warning")
            return False
        return True


def _number(raw: str, kind: str) -> Any:
    """The typed text as a number; left as text when it is not one, so validation names it."""
    try:
        return int(raw) if kind == "int" else float(raw)
    except ValueError:
        return raw
