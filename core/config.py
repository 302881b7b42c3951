"""One run configuration: YAML in and out, validated, mapped onto the libraries' own objects.

Field names are those of peft's LoraConfig, transformers' BitsAndBytesConfig and
TrainingArguments / TRL's SFTConfig, so a user who knows those libraries reads the file
without a glossary. Validation errors name the field and what is allowed.
"""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ftwiz.core.defaults import EVAL_FRACTION, EVALUATIONS_PER_RUN
from ftwiz.core.errors import UserError
from ftwiz.core.methods import Method

CONFIG_VERSION = 1
MAX_CONFIG_BYTES = 1024 * 1024
"""A run config is a few kilobytes; anything past this is not one (and is not read whole)."""
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000
"""Nodes after expanding aliases: an alias bomb (a billion laughs) is refused while it is parsed."""
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxlist, _EXCERPT.maxtuple, _EXCERPT.maxdict = 2, 4, 4, 4
_EXCERPT.maxset, _EXCERPT.maxstring, _EXCERPT.maxother, _EXCERPT.maxlong = 4, 60, 60, 40
DataFormat = Literal["auto", "alpaca", "chat", "sharegpt", "prompt_completion", "text"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    name_or_path: str = Field(min_length=1, description="Local directory, Hub id or catalog name.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with the model. Off unless you trust its author."
    )
    allow_pickle: bool = Field(
        False, description="Allow .bin/.pt (pickle) weights, which can run code when loaded."
    )
    attn_implementation: str = Field("sdpa", description="sdpa, eager, flash_attention_2 (needs flash-attn) or varlen "
                                     "(PyTorch's varlen FlashAttention for packed rows, core/engine/attention.py).")


class DataSection(_Section):
    path: str = Field(min_length=1, description="JSONL/JSON/CSV/Parquet file, Hub dataset id, or 'demo'.")
    subset: str | None = Field(None, description="Hub dataset configuration name.")
    split: str = Field("train", description="Hub dataset split.")
    format: DataFormat = Field("auto", description="Row format; auto detects it.")
    eval_fraction: float = Field(EVAL_FRACTION, ge=0.0, lt=0.5, description="Share of rows held out for evaluation.")
    max_rows: int | None = Field(None, gt=0, description="Use only the first N rows.")
    completion_only_loss: bool = Field(True, description="Compute the loss on answers only, not prompts.")
    drop_invalid: bool = Field(
        False, description="Leave out bad rows and lines (counted by reason in an info event) instead of refusing the file."
    )


class LoraSection(_Section):
    """peft.LoraConfig fields."""

    r: int = Field(16, gt=0, le=4096)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # not the guide's 0.05: recommend.dropout_reason
    target_modules: list[str] | str = Field(
        "all-linear",
        description="Module names, or 'all-linear' (every linear layer but the output head; ftwiz's default).",
    )
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = Field(
        False, description="Scale by alpha/sqrt(r) instead of alpha/r (rsLoRA): keeps high ranks (64+) learning."
    )
    use_dora: bool = Field(
        False, description="DoRA: learn each weight's magnitude apart from its direction; slower steps."
    )

    @field_validator("target_modules")
    @classmethod
    def _targets_not_empty(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str):
            if value != "all-linear":
                raise ValueError("must be a list of module names or 'all-linear'")
        elif not value or any(not name.strip() for name in value):
            raise ValueError("must name at least one module, and no empty names")
        return value


class QuantizationSection(_Section):
    """transformers.BitsAndBytesConfig fields (used by method: qlora)."""

    load_in_4bit: bool = True
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    upcast: bool = Field(
        False,
        description="peft's prepare_model_for_kbit_training (fp32 embeddings, head and norms). "
        "False freezes the base only, as TRL does, and saves memory.",
    )


FSDP_OPTION_WORDS = ("full_shard", "shard_grad_op", "offload", "auto_wrap", "no_shard", "hybrid_shard",
                     "hybrid_shard_zero2")


class FsdpConfig(_Section):
    """transformers.TrainingArguments `fsdp_config` keys (transformers 5, FSDP2 through accelerate).

    The defaults are the library's own; the keys FSDP1 alone reads (use_orig_params,
    sync_module_states, forward/backward_prefetch) are not accepted: transformers 5 deprecates
    FSDP1 and ftwiz runs FSDP2 only.
    """

    version: Literal[2] = Field(2, description="FSDP2 (torch.distributed.fsdp.fully_shard).")
    reshard_after_forward: bool = Field(
        True,
        description="true: FULL_SHARD (ZeRO-3), the layer's weights are gathered again for backward; false: "
        "SHARD_GRAD_OP (ZeRO-2), faster, more memory. ftwiz's memory estimate assumes true.",
    )
    cpu_offload: bool = Field(False, description="Keep parameters and gradients in CPU RAM between uses.")
    activation_checkpointing: bool = Field(
        False,
        description="FSDP's own activation checkpointing. training.gradient_checkpointing: true turns it on "
        "under FSDP (the Trainer's checkpointing would all-gather every layer once more).",
    )
    cpu_ram_efficient_loading: bool = Field(False, description="Load the checkpoint on rank 0 only.")
    state_dict_type: Literal["FULL_STATE_DICT", "SHARDED_STATE_DICT"] = Field(
        "FULL_STATE_DICT", description="FULL_STATE_DICT: checkpoints and the result load with from_pretrained."
    )
    auto_wrap_policy: Literal["TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"] = "TRANSFORMER_BASED_WRAP"
    transformer_layer_cls_to_wrap: list[str] | None = Field(
        None, description="Decoder layer class names; unset: the model's own _no_split_modules."
    )
    min_num_params: int = Field(0, ge=0, description="SIZE_BASED_WRAP only.")


class TrainingSection(_Section):
    """transformers.TrainingArguments / trl.SFTConfig fields."""

    learning_rate: float = Field(2e-4, gt=0.0, le=1.0)
    num_train_epochs: float = Field(3.0, gt=0.0, le=1000)
    max_steps: int = Field(-1, ge=-1, description="-1: train for num_train_epochs.")
    per_device_train_batch_size: int = Field(4, gt=0, le=4096)
    gradient_accumulation_steps: int = Field(4, gt=0, le=4096)
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    lr_scheduler_type: str = "cosine"
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    optim: str = "adamw_torch"
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = True
    max_length: int = Field(1024, gt=0, le=1_048_576, description="Maximum tokens per example.")
    packing: bool = False
    use_liger_kernel: bool = False
    regional_compile: bool = Field(
        False,
        description="torch.compile each decoder layer (compiled once, reused by every layer; about a "
        "minute at start). With Liger on, only its fused linear cross-entropy is kept.",
    )
    recompute_mlp_input: bool = Field(
        True,
        description="LoRA on down_proj: recompute its input, the MLP's act(gate) x up, in backward from gate and "
        "up instead of keeping a copy (intermediate_size x 2 bytes per token per layer less, one elementwise "
        "kernel more). Applies to layers neither checkpointed nor compiled; false keeps the copy.",
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="numpy's seed range: 0 to 2**32 - 1.")
    logging_steps: int = Field(1, gt=0)
    eval_steps: int | float | None = Field(
        None, gt=0,
        description="Evaluate every N steps, or a share of the run below 1 (0.1: ten times). Unset: save_steps "
        "if given, else 0.1, so every run evaluates about ten times whatever its length.",
    )
    save_steps: int | float | None = Field(
        None, gt=0, description="Checkpoint every N steps, or a share of the run below 1. Unset: with every evaluation."
    )
    save_total_limit: int = Field(
        2, gt=0, description="Newest checkpoints kept; the one with the best evaluation loss is kept besides."
    )
    early_stopping_patience: int | None = Field(
        None, gt=0,
        description="Stop when the evaluation loss has not improved for this many evaluations (needs eval_fraction "
        "above 0). Unset: train every epoch; the best checkpoint is still the result.",
    )

    @field_validator("eval_steps", "save_steps")
    @classmethod
    def _steps_or_share(cls, value: int | float | None) -> int | float | None:
        if isinstance(value, float) and value >= 1:
            if not value.is_integer():
                raise ValueError("a whole number of steps, or a share of the run below 1 (0.1: every tenth)")
            return int(value)
        return value
    max_grad_norm: float = Field(1.0, gt=0.0)
    probe: bool = Field(
        True,
        description="Before training, measure memory and tokens/s on the longest batch, adjust the "
        "micro-batch / checkpointing if it does not fit, and replace the time and cost estimates.",
    )
    fsdp: bool = Field(
        False,
        description="Shard weights, gradients and optimizer states over the GPUs (FSDP) instead of a full "
        "copy on each (DDP). Needs several GPUs; not with method: qlora.",
    )
    fsdp_config: FsdpConfig | None = Field(None, description="FSDP settings; unset: the library's defaults.")
    report_to: Literal["none", "tensorboard", "trackio", "wandb", "mlflow"] = Field(
        "none",
        description="Also send the Trainer's logs to this tracker (transformers' integration); ftwiz's own "
        "events stay the record. TensorBoard and MLflow write inside the run directory.",
    )

    @field_validator("fsdp", mode="before")
    @classmethod
    def _fsdp_flag(cls, value: Any) -> Any:
        """transformers 5 takes fsdp=True plus fsdp_config; its older option string is deprecated."""
        if value is None or value == "":
            return False
        if isinstance(value, str) and value.split() and all(w in FSDP_OPTION_WORDS for w in value.split()):
            raise ValueError(
                "the option string is transformers' deprecated form; write fsdp: true, and put the options in "
                "fsdp_config (full_shard: reshard_after_forward: true, shard_grad_op: false, offload: cpu_offload: true)"
            )
        return value

    def evaluation_steps(self) -> tuple[int | float, int | float]:
        """(eval_steps, save_steps) for the Trainer: as set, else a share of the run (the Trainer
        turns 1 / EVALUATIONS_PER_RUN into ceil(total steps / 10)), so a run of 10 steps and one
        of 10,000 both evaluate about ten times; a checkpoint with every evaluation unless set."""
        eval_steps = self.eval_steps or self.save_steps or 1 / EVALUATIONS_PER_RUN
        return eval_steps, self.save_steps or eval_steps

    @property
    def precision(self) -> str:
        """"bf16", "fp16" or "fp32": the one spelling the planners and the engine use."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    def shards(self, gpu_count: int) -> int:
        """How many GPUs share one copy of the model: all of them under FSDP, else 1 (DDP, one GPU)."""
        return gpu_count if self.fsdp and gpu_count > 1 else 1

    @staticmethod
    def accumulation_per_gpu(accum: int, world_size: int) -> tuple[int, str | None]:
        """Gradient accumulation per process, so that an optimizer step sees the planned batch
        (micro-batch x accumulation) whatever the number of GPUs: each of N processes takes 1/N of
        the accumulation. Where N does not divide it, the nearest whole number (at least 1), and a
        sentence saying how the effective batch changed."""
        if world_size <= 1:
            return accum, None
        per_gpu = max(1, round(accum / world_size))
        if per_gpu * world_size == accum:
            return per_gpu, None
        return per_gpu, (f"gradient accumulation {accum} does not divide over {world_size} GPUs: {per_gpu} per GPU, "
                         f"so a step sees micro-batch x {per_gpu * world_size} instead of x {accum}")

    @model_validator(mode="after")
    def _one_half_precision(self) -> TrainingSection:
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 cannot both be true")
        return self


class LimitsSection(_Section):
    max_hours: float | None = Field(None, gt=0, description="Save and stop after this many hours.")
    max_cost: float | None = Field(None, gt=0, description="Save and stop when this much is spent.")
    price_per_hour: float | None = Field(None, ge=0, description="GPU price used for the spend so far.")
    oom_retries: int = Field(3, ge=0, le=10, description="Halve the micro-batch at most this often.")


class OutputSection(_Section):
    runs_dir: str = "runs"
    merge: bool = Field(False, description="Also write a merged model at the end.")
    samples: int = Field(4, ge=0, le=64, description="Held-out examples generated before and after.")


class RunConfig(_Section):
    """Everything a training run needs; the run process reads nothing else."""

    version: int = CONFIG_VERSION
    name: str | None = Field(None, description="Run name; the run directory is runs_dir/name.")
    method: Method = Method.LORA
    model: ModelSection
    data: DataSection
    lora: LoraSection = Field(default_factory=LoraSection)
    quantization: QuantizationSection = Field(default_factory=QuantizationSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    output: OutputSection = Field(default_factory=OutputSection)

    @model_validator(mode="after")
    def _fsdp_method(self) -> RunConfig:
        if self.training.fsdp and self.method == "qlora":
            raise ValueError(
                "training.fsdp: not with method: qlora (ftwiz does not shard 4-bit weights; QLoRA runs a copy per "
                "GPU, DDP); set training.fsdp: false, or use method: lora or full"
            )
        return self

    # -- YAML -----------------------------------------------------------------------
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path

    # -- mappings onto the libraries ------------------------------------------------
    def lora_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for peft.LoraConfig."""
        return {**self.lora.model_dump(), "task_type": "CAUSAL_LM"}

    def bnb_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for transformers.BitsAndBytesConfig (QLoRA only)."""
        q = self.quantization.model_dump(exclude={"upcast"})
        return q

    def training_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by TrainingArguments and SFTConfig (minus TRL-only ones).

        transformers 5.x folded `warmup_ratio` into `warmup_steps` (a float below 1 is a
        ratio); older releases still have `warmup_ratio`. Pass whichever this one has.
        `fsdp` / `fsdp_config` are passed only when FSDP is on (fsdp=True, the form transformers
        5 documents); the Trainer then builds accelerate's FSDP plugin from them.
        """
        import dataclasses

        from transformers import TrainingArguments

        t = self.training.model_dump(exclude={"max_length", "packing", "probe", "regional_compile", "recompute_mlp_input",
                                               "early_stopping_patience"})
        t["eval_steps"], t["save_steps"] = self.training.evaluation_steps()
        if "warmup_ratio" not in {f.name for f in dataclasses.fields(TrainingArguments)}:
            t["warmup_steps"] = t.pop("warmup_ratio")
        fsdp_config = t.pop("fsdp_config")
        if t.pop("fsdp"):
            # Under FSDP, checkpointing is FSDP's own: the Trainer's would all-gather each layer
            # once more in backward, and transformers refuses both at once.
            fsdp_config = fsdp_config or FsdpConfig().model_dump()
            fsdp_config["activation_checkpointing"] = fsdp_config["activation_checkpointing"] or t["gradient_checkpointing"]
            t["gradient_checkpointing"] = False
            t["fsdp"] = True
            t["fsdp_config"] = {k: v for k, v in fsdp_config.items() if v is not None}
        return t


def _describe(error: dict[str, Any]) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{field}: unknown key"
    if kind == "missing":
        return f"{field}: required but missing"
    message = error["msg"].removeprefix("Value error, ")[:300]
    if not error["loc"]:  # a check across sections: its message names the field itself
        return message
    return f"{field}: {message} (got {excerpt(error.get('input'))})"


def excerpt(value: Any, limit: int = 80) -> str:
    """A short quote of a value for an error message: never the whole of a huge or shared one."""
    text = _EXCERPT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _YamlLimit(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader with a depth limit and a limit on nodes counted with aliases expanded."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}

    def _size(self, node: yaml.Node) -> int:
        key = id(node)
        if key not in self._sizes:
            self._sizes[key] = 1  # a node being composed (a recursive alias) counts once
            if isinstance(node, yaml.SequenceNode):
                self._sizes[key] = 1 + sum(self._size(child) for child in node.value)
            elif isinstance(node, yaml.MappingNode):
                self._sizes[key] = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
        return self._sizes[key]

    def _count(self, nodes: int, mark: Any) -> None:
        self._nodes += nodes
        if self._nodes > MAX_YAML_NODES:
            raise _YamlLimit(f"more than {MAX_YAML_NODES:,} values once aliases are expanded (an alias bomb?)", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = self.anchors.get(event.anchor)
            if node is not None:
                self._count(self._size(node), event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlLimit(f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
            self._count(1, event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_regular_file(path: str | Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most max_bytes; UserError (one line) for anything else:
    missing, a directory, a named pipe or device (never opened: reading one could block or never
    end), too large, or unreadable."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{path}: is a directory, expected a {what}")
    if not stat.S_ISREG(info.st_mode):
        kind = "a named pipe" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a regular file"
        raise UserError(f"{path}: is {kind}, expected a {what} (only regular files are read)")
    if info.st_size > max_bytes:
        raise UserError(f"{path}: {info.st_size:,} bytes, more than a {what} can be ({max_bytes:,} bytes at most)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped since the stat
                raise UserError(f"{path}: not a regular file, expected a {what}")
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise UserError(f"{path}: more than a {what} can be ({max_bytes:,} bytes at most)")
    return data


def config_from_dict(data: Any, source: str = "config") -> RunConfig:
    """Validate a mapping; every problem in one UserError naming the fields."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of sections (model, data, ...), got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors()[:10])
        raise UserError(f"{source}: {problems}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config YAML file."""
    path = Path(path)
    raw = read_regular_file(path, MAX_CONFIG_BYTES, "YAML config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader with limits
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: not valid YAML ({str(getattr(exc, 'problem', None) or exc)[:200]})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML (nested too deeply)") from None
    return config_from_dict(data, source=str(path))
