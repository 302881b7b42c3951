"""The run process: `python -m ftwiz.core.engine RUN_DIR` reads RUN_DIR/config.yaml and trains.

It owns nothing but its run directory: status.json (with a heartbeat thread), events.jsonl
(written from a TrainerCallback, schema in docs/events.md), checkpoints/ (atomic, see
checkpoints.py), adapter/, samples.json. Under `accelerate launch` every rank runs this;
only rank 0 writes status and events.

Signals: SIGHUP is ignored (a dropped SSH connection must not stop training); SIGTERM asks for
a graceful stop (checkpoint, then state "stopped"); SIGKILL is what a second `ftwiz stop` sends.
The SIGTERM handler only sets a flag: Python runs handlers in the main thread between two
bytecodes, possibly while that thread holds the status lock, so a handler that wrote status
would wait forever on a lock its own thread holds. The step-end hook does the status write.
"""

from __future__ import annotations

import errno
import gc
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftwiz.core.config import RunConfig, load_config
from ftwiz.core.data import Note
from ftwiz.core.engine import checkpoints, faults
from ftwiz.core.engine.model_source import model_source
from ftwiz.core.engine.speed import lora_inputs_shared, recompute_mlp_input
from ftwiz.core.errors import UserError
from ftwiz.core.events import (
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    FinishedEvent,
    InfoEvent,
    LimitEvent,
    ModelEvent,
    NanEvent,
    OomEvent,
    ProbeEvent,
    ProbeSummary,
    SamplesEvent,
    StartedEvent,
    StepEvent,
    StoppedEvent,
    WarningEvent,
    make_event,
    status_record,
)
from ftwiz.core.memory import recomputes_mlp_input
from ftwiz.core.runs import LOCK_FD_ENV, RunDir, _write_private, process_identity

HEARTBEAT_EVERY_S = 2.0
EXPLODE_FACTOR = 10.0
"""A loss above this many times its running median counts as exploding."""
OOM_SUGGESTION = (
    "use method: qlora, a shorter training.max_length, training.gradient_checkpointing: true, "
    "or a smaller model"
)
NAN_SUGGESTION = "lower training.learning_rate (e.g. by 10x), keep max_grad_norm at 1.0, or use bf16 instead of fp16"


class RunFailure(Exception):
    """A failure the run reports as an error event with a suggestion, then exits with code 1."""

    def __init__(self, message: str, suggestion: str = "") -> None:
        super().__init__(message)
        self.suggestion = suggestion


@dataclass
class Flags:
    """What the signal handler, the callback and the main loop tell each other."""

    stop_requested: bool = False
    nan: NanEvent | None = None
    limit: LimitEvent | None = None
    oom_count: int = 0
    oom_fault_steps: set = field(default_factory=set)
    losses: deque = field(default_factory=lambda: deque(maxlen=50))


class Status:
    """status.json writes from the main thread and the heartbeat thread, never interleaved.

    The run process owns status.json: it keeps the whole status in memory and writes all of it
    each time (atomically), so a file removed or damaged by someone else is whole again at the
    next heartbeat. Fields it never set itself (the launcher's, another DDP rank's halved
    micro-batch) are taken from the file as it finds it. A stop requested by signal shows as
    "stopping" from the next write on.
    """

    def __init__(self, run: RunDir, enabled: bool, flags: Flags | None = None) -> None:
        self.run, self.enabled, self.flags = run, enabled, flags
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.data: dict[str, Any] = run.read_status() if enabled else {}
        self._owned: set[str] = {"heartbeat"}

    def update(self, **fields: Any) -> None:
        if self.enabled:
            with self._lock:
                if self.flags is not None and self.flags.stop_requested:
                    if fields.get("state", self.data.get("state")) in ("starting", "running"):
                        fields["state"] = "stopping"
                fields = status_record(**fields)  # typed (core/events.RunStatus): a ProbeSummary becomes its mapping
                self._owned.update(fields)
                self.data.update(fields)
                self.data.update({k: v for k, v in self.run.read_status().items() if k not in self._owned})
                self.data["heartbeat"] = time.time()
                _write_private(self.run.status_path, json.dumps(self.data, indent=2, default=str))

    def start_heartbeat(self) -> None:
        """Beat even while one training step takes minutes, so watchers can tell slow from dead."""

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_EVERY_S):
                try:
                    self.update()
                except OSError:
                    pass  # disk full or unwritable for now: the main thread reports it; beat again later

        threading.Thread(target=beat, name="ftwiz-heartbeat", daemon=True).start()

    def stop_heartbeat(self) -> None:
        self._stop.set()


def _any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (one all-reduce per step under DDP)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


# -- precision, model, trainer -----------------------------------------------------------------
def choose_precision(config: RunConfig, cuda: bool, bf16_ok: bool) -> tuple[str, list[str]]:
    """bf16 / fp16 / fp32 from the hardware: the CPU trains in fp32; a GPU without bf16 gets fp16."""
    t = config.training
    if not cuda:
        return "fp32", (["mixed precision needs a GPU: training in fp32"] if (t.bf16 or t.fp16) else [])
    if t.bf16 and not bf16_ok:
        return "fp16", ["this GPU has no bf16: training in fp16"]
    if t.bf16:
        return "bf16", []
    if t.fp16:
        return "fp16", []
    return ("bf16" if bf16_ok else "fp16"), []


def load_model(config: RunConfig, precision: str, cuda: bool):
    """Base model as the config says: safetensors only unless allow_pickle; remote code only when on."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    if config.model.attn_implementation == "varlen":
        from ftwiz.core.engine.attention import register

        register()  # PyTorch's varlen FlashAttention for packed rows (core/engine/attention.py)
    kwargs: dict[str, Any] = {
        "trust_remote_code": config.model.trust_remote_code,
        "revision": config.model.revision,
        "attn_implementation": config.model.attn_implementation,
        # Full fine-tuning keeps fp32 master weights (mixed precision runs in autocast).
        "dtype": torch.float32 if config.method == "full" else half,
    }
    if not config.model.allow_pickle:
        kwargs["use_safetensors"] = True
    if config.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(**config.bnb_kwargs())
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        model = AutoModelForCausalLM.from_pretrained(model_source(config.model.name_or_path), **kwargs)
    except OSError as exc:
        if "safetensors" in str(exc) and not config.model.allow_pickle:
            raise UserError(
                f"model.allow_pickle: {config.model.name_or_path} has no safetensors weights; pickle "
                "weights can run code when loaded. Set model.allow_pickle: true only if you trust them"
            ) from None
        raise
    model.config.use_cache = False
    return model


def wrap_model(model: Any, config: RunConfig) -> Any:
    """LoRA / QLoRA adapters exactly once; full fine-tuning trains every weight."""
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora" and config.quantization.upcast:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.training.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    return get_peft_model(model, LoraConfig(**config.lora_kwargs()))


def build_model(config: RunConfig, precision: str, cuda: bool) -> Any:
    """The model the run trains: base weights, Liger kernels, adapters, compiled layers (or, on
    layers not compiled, the MLP product recomputed in backward: speed.recompute_mlp_input).

    Liger goes on here, before the probe's first step, so the probe measures the kernels the
    run trains with; the Trainer applies the same kernels again from its arguments, which
    changes nothing (they patch the same forwards) and keeps TRL from reading the logits that
    Liger's fused loss never builds.
    """
    import torch

    from ftwiz.core.engine.speed import compile_layers, liger_kernel_config

    model = load_model(config, precision, cuda)
    if cuda and config.method != "qlora" and not config.training.fsdp:  # 4-bit: device_map; FSDP: shards
        # On the GPU now, not when the Trainer starts: the probe runs before it.
        model.to(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))))
    t = config.training
    if cuda and t.use_liger_kernel:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model, **(liger_kernel_config(t.regional_compile) or {}))
    model = wrap_model(model, config)
    if cuda and t.regional_compile:
        compile_layers(model)
    elif recomputes_mlp_input(config):
        recompute_mlp_input(model)
    return model


def training_arguments(config: RunConfig, run: RunDir, precision: str, micro: int, accum: int, has_eval: bool):
    """SFTConfig from the run config; no hub, no token, the tracker the config names, our own rotation."""
    import dataclasses

    from trl import SFTConfig

    from ftwiz.core.engine.speed import liger_kernel_config

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    t = config.training_kwargs()  # maps warmup_ratio onto this transformers' field
    eval_steps, save_steps = config.training.evaluation_steps()
    t.pop("save_total_limit")  # rotation is ours: it must only ever count complete checkpoints
    t.update(
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        output_dir=str(run.checkpoints_dir),
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=None,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        # The weights with the lowest evaluation loss are the result, not the last ones; a
        # checkpoint is saved with every evaluation so that the best one is always on disk.
        load_best_model_at_end=has_eval and _multiple(save_steps, eval_steps),
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        per_device_eval_batch_size=micro,
        report_to=config.training.report_to,  # "none" unless asked (core/tracking.py)
        push_to_hub=False,
        hub_token=None,
        disable_tqdm=True,
        logging_nan_inf_filter=False,  # a NaN loss must reach our callback, not be averaged away
        gradient_checkpointing_kwargs={"use_reentrant": False},
        # Every trainable weight is used in every step; DDP's search for unused ones costs time.
        ddp_find_unused_parameters=False,
        liger_kernel_config=liger_kernel_config(config.training.regional_compile),
        max_length=config.training.max_length,
        packing=config.training.packing,
        completion_only_loss=config.data.completion_only_loss,
        dataset_num_proc=None,
        use_cpu=not _cuda(),
    )
    return SFTConfig(**{k: v for k, v in t.items() if k in names})


def examples_per_row(examples: Any, rows: Any) -> float:
    """Training examples per row the Trainer feeds (packing joins several); 1 when it cannot tell
    (an iterable dataset has no length)."""
    try:
        return len(examples) / len(rows) if len(rows) else 1.0
    except TypeError:
        return 1.0


def best_checkpoint(state: Any, run: RunDir) -> dict[str, Any]:
    """The finished event's account of the result: the checkpoint whose weights it holds (the
    lowest evaluation loss), that loss, how many evaluations were made and whether early stopping
    ended the run; nulls without evaluation."""
    evals = [h for h in state.log_history if "eval_loss" in h]
    best = state.best_model_checkpoint
    return {
        "best_checkpoint": Path(best).name if best else None,
        "best_eval_loss": state.best_metric if best else None,
        "evaluations": len(evals),
        "early_stopped": bool(best) and 0 < state.global_step < state.max_steps,
    }


def _multiple(save_steps: int | float, eval_steps: int | float) -> bool:
    """Whether every save falls on an evaluation (what load_best_model_at_end needs)."""
    if (save_steps < 1) != (eval_steps < 1):
        return False
    return round(save_steps * 1_000_000) % round(eval_steps * 1_000_000) == 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def make_trainer_class():
    """SFTTrainer whose checkpoints appear only when complete (see checkpoints.py)."""
    from trl import SFTTrainer

    class AtomicCheckpointTrainer(SFTTrainer):
        ftwiz_hooks: Any = None
        _ftwiz_staging: Path | None = None

        def _get_output_dir(self, trial: Any) -> str:
            if self._ftwiz_staging is not None:
                return str(self._ftwiz_staging)
            return super()._get_output_dir(trial)

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            hooks = self.ftwiz_hooks
            step = self.state.global_step
            if hooks.weights_not_finite(self.model):
                hooks.on_nan(step, "non-finite weights", None)
                self.control.should_training_stop = True
                return  # never save garbage over good work
            root_dir = Path(self.args.output_dir)
            root = checkpoints.staging_root(root_dir, step)
            self._ftwiz_staging = root
            try:
                super()._save_checkpoint(model, trial)
                faults.in_checkpoint_write()
            except Exception as exc:  # noqa: BLE001 - OSError, or safetensors' own error for EFBIG/ENOSPC
                checkpoints.remove_partial(root_dir)
                last = checkpoints.latest_checkpoint(root_dir)
                reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
                raise RunFailure(
                    f"could not write checkpoint-{step}: {reason} (disk full?); "
                    f"last complete checkpoint: {last.name if last else 'none'}, kept",
                    "free disk space (df -h), lower training.save_total_limit, then `ftwiz resume`",
                ) from exc
            finally:
                self._ftwiz_staging = None
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                staged = root / f"checkpoint-{step}"
                best = self._ftwiz_best(root_dir, step)
                if best is not None and self.state.best_model_checkpoint != best:
                    # The Trainer named the staging directory (or none); the state saved with the
                    # checkpoint must name where the best one is for good, or a resume forgets it.
                    self.state.best_model_checkpoint = best
                    self.state.save_to_json(str(staged / "trainer_state.json"))
                final = checkpoints.finalize(staged, root_dir / f"checkpoint-{step}")
                root.rmdir()
                checkpoints.rotate(root_dir, hooks.config.training.save_total_limit, keep_also=best)
                hooks.emit(CheckpointEvent(path=str(final.relative_to(hooks.run.path)), step=step))
            self.accelerator.wait_for_everyone()

        def _ftwiz_best(self, root_dir: Path, step: int) -> str | None:
            """Where the checkpoint with the best evaluation loss is once this one is in place."""
            best_step = self.state.best_global_step
            if not best_step or not self.args.load_best_model_at_end:
                return None
            best = root_dir / f"checkpoint-{best_step}"
            return str(best) if best_step == step or best.is_dir() else None

    return AtomicCheckpointTrainer


def make_callback(hooks: Hooks):
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        """Turns the Trainer's life into events, enforces limits and stops, injects test faults."""

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            hooks.train_begin(state, model)

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            faults.on_step_begin(state.global_step, model, hooks.flags.oom_fault_steps)

        def on_step_end(self, args, state, control, **kwargs):
            hooks.step_end(state, control)

        def on_log(self, args, state, control, logs=None, **kwargs):
            hooks.log(state, control, logs or {})

    return EventCallback()


class Hooks:
    """The engine's side of the callback: events, status, limits, NaN detection."""

    def __init__(self, run: RunDir, config: RunConfig, flags: Flags, status: Status, is_main: bool, spent_s: float):
        self.run, self.config, self.flags, self.status, self.is_main = run, config, flags, status, is_main
        self.spent_before_s = spent_s
        self.process_t0 = time.time()
        self.t0 = time.time()
        self.step0 = 0
        self.max_steps = 0
        self.last_tokens: tuple[float, float] | None = None
        self.micro_batch = self.grad_accum = 0
        self.examples_per_row = 1.0  # training examples per packed row (1 without packing)

    def emit(self, event: Event) -> None:
        """Rank 0 writes events (docs/events.md; one class per type in core/events.py)."""
        if self.is_main:
            self.run.emit(event)

    def spent_s(self) -> float:
        return self.spent_before_s + (time.time() - self.process_t0)

    def spend_usd(self) -> float | None:
        price = self.config.limits.price_per_hour
        return None if price is None else round(self.spent_s() / 3600 * price, 4)

    def train_begin(self, state: Any, model: Any) -> None:
        """Runs after a resume has loaded its checkpoint: the step, and one LoRA layer per target."""
        self.t0, self.step0, self.max_steps = time.time(), state.global_step, state.max_steps
        # TRL counts num_tokens from 0 for each Trainer: the first step's rate is from here.
        self.last_tokens = (0.0, self.t0)
        self.status.update(state="running", step=state.global_step, max_steps=state.max_steps)
        names = [name for name, _ in model.named_modules()]
        self.emit(ModelEvent(
            step=state.global_step,
            max_steps=state.max_steps,
            trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
            total_params=sum(p.numel() for p in model.parameters()),
            lora_modules=sum(name.endswith(".lora_A") for name in names),
            peft_wrappers=sum(name.endswith("base_model.model") for name in names),
            **self.batch_in_examples(),
        ))

    def batch_in_examples(self) -> dict[str, Any]:
        """Rows and examples an optimizer step holds: with packing a row holds several examples,
        and the guide's batch size counts examples."""
        rows = self.micro_batch * self.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
        return {"rows_per_step": rows, "examples_per_step": round(rows * self.examples_per_row, 1)}

    def step_end(self, state: Any, control: Any) -> None:
        self.status.update(step=state.global_step, epoch=state.epoch, spent_s=round(self.spent_s(), 1))
        limits = self.config.limits
        hours = self.spent_s() / 3600
        spend = self.spend_usd()
        reason = None
        if limits.max_hours is not None and hours >= limits.max_hours:
            reason = LimitEvent(step=state.global_step, limit="max_hours", value=limits.max_hours, hours=round(hours, 4))
        elif limits.max_cost is not None and spend is not None and spend >= limits.max_cost:
            reason = LimitEvent(step=state.global_step, limit="max_cost", value=limits.max_cost, spend_usd=spend)
        if reason and self.flags.limit is None:
            self.flags.limit = reason
            self.emit(reason)
        if _any_rank(bool(self.flags.limit or self.flags.stop_requested)):
            # Every DDP rank must save and stop at the same step, or they deadlock in the save.
            if not self.flags.limit:
                self.flags.stop_requested = True
                self.status.update(state="stopping")
            control.should_save = True
            control.should_training_stop = True

    @staticmethod
    def memory() -> dict[str, Any]:
        """This process's own GPU (LOCAL_RANK's under DDP), not every visible one: the others
        belong to other ranks. alloc/reserved are now (between steps, activations freed); the
        peak is max_memory_allocated, never reset during training (the probe resets it once,
        before its passes), so it is the run's peak so far and the figure to compare with a plan."""
        import torch

        if torch.cuda.is_available():
            i = torch.cuda.current_device()
            gpu = {
                "index": i,
                "alloc_gib": round(torch.cuda.memory_allocated(i) / 2**30, 3),
                "reserved_gib": round(torch.cuda.memory_reserved(i) / 2**30, 3),
                "peak_gib": round(torch.cuda.max_memory_allocated(i) / 2**30, 3),
                "peak_reserved_gib": round(torch.cuda.max_memory_reserved(i) / 2**30, 3),
            }
            return {
                "gpu_mem_alloc_gib": gpu["alloc_gib"],
                "gpu_mem_reserved_gib": gpu["reserved_gib"],
                "gpu_mem_peak_gib": gpu["peak_gib"],
                "gpus": [gpu],
            }
        import psutil

        return {"rss_gib": round(psutil.Process().memory_info().rss / 2**30, 3)}

    def log(self, state: Any, control: Any, logs: dict[str, Any]) -> None:
        step = state.global_step
        if "eval_loss" in logs:
            self.emit(EvalEvent(step=step, eval_loss=float(logs["eval_loss"]), epoch=state.epoch))
        if "loss" not in logs:
            return
        loss = float(logs["loss"])
        grad_norm = logs.get("grad_norm")
        grad_norm = None if grad_norm is None else float(grad_norm)
        now = time.time()
        done = step - self.step0
        eta = (now - self.t0) / done * (self.max_steps - step) if done > 0 else None
        tokens_per_s = None
        if "num_tokens" in logs:
            tokens = float(logs["num_tokens"])
            if self.last_tokens is not None and now > self.last_tokens[1] and tokens >= self.last_tokens[0]:
                tokens_per_s = round((tokens - self.last_tokens[0]) / (now - self.last_tokens[1]), 1)
            self.last_tokens = (tokens, now)
        self.emit(StepEvent(
            step=step,
            max_steps=self.max_steps,
            epoch=state.epoch,
            loss=loss,
            learning_rate=logs.get("learning_rate"),
            grad_norm=grad_norm,
            tokens_per_s=tokens_per_s,
            micro_batch=self.micro_batch,
            grad_accum=self.grad_accum,
            eta_s=None if eta is None else round(eta, 1),
            spend_usd=self.spend_usd(),
            **self.memory(),
        ))
        bad = None
        if not math.isfinite(loss):
            bad = f"loss is {loss}"
        elif grad_norm is not None and not math.isfinite(grad_norm):
            bad = f"gradient norm is {grad_norm}"
        elif len(self.flags.losses) >= 5 and loss > EXPLODE_FACTOR * statistics.median(self.flags.losses):
            bad = f"loss {loss:.4g} is over {EXPLODE_FACTOR:g}x its running median {statistics.median(self.flags.losses):.4g}"
        if bad:
            self.on_nan(step, bad, loss)
            control.should_save = False
            control.should_training_stop = True
        else:
            self.flags.losses.append(loss)

    def on_nan(self, step: int, reason: str, loss: float | None) -> None:
        if self.flags.nan is None:
            self.flags.nan = NanEvent(step=step, reason=reason, loss=loss, suggestion=NAN_SUGGESTION)
            self.emit(self.flags.nan)

    @staticmethod
    def weights_not_finite(model: Any) -> bool:
        import torch

        return any(not torch.isfinite(p).all() for p in model.parameters() if p.requires_grad)


def _with_checkpointing(config: RunConfig) -> RunConfig:
    return config.model_copy(update={"training": config.training.model_copy(update={"gradient_checkpointing": True})})


# -- datasets ---------------------------------------------------------------------------------------
def datasets_for(config: RunConfig, run: RunDir, tokenizer: Any, notes: list[Note], found: dict | None = None):
    """data.build_dataset on the configured data; the demo's rows are generated into the run dir first."""
    from ftwiz.core import data, demo

    if config.data.path == demo.DEMO_DATA:
        path = run.path / "demo_data.jsonl"
        if not path.exists():
            demo.write_rows(path, demo.train_rows())
        config = config.model_copy(update={"data": config.data.model_copy(update={"path": str(path)})})
    return data.build_dataset(config, tokenizer, notes, found)


# -- the run ---------------------------------------------------------------------------------------
class RunRecipe:
    """One run, as torchtune's single-device recipe reads: `setup` (precision, the model's download
    from the Hub, tokenizer, data, the `started` event), `train` (build the model and the Trainer,
    the pre-flight `probe` on the first pass, then train, retrying after an out-of-memory error
    with `_after_oom`), `finish` (stop, save, samples, merge, the `finished` event). `train()`
    below runs the four."""

    def __init__(self, run: RunDir, config: RunConfig, flags: Flags, status: Status, is_main: bool) -> None:
        self.run, self.config, self.flags, self.status, self.is_main = run, config, flags, status, is_main
        self.model: Any = None

    def setup(self) -> None:
        import torch
        from transformers import AutoTokenizer, set_seed

        run, config, flags, is_main = self.run, self.config, self.flags, self.is_main
        cuda = torch.cuda.is_available()
        if not cuda:
            # Tiny models gain nothing from intra-op threads; on a shared 2-core box they lose 10x.
            torch.set_num_threads(int(os.environ.get("FTWIZ_CPU_THREADS", "1")))
        bf16_ok = cuda and torch.cuda.is_bf16_supported()
        precision, precision_notes = choose_precision(config, cuda, bf16_ok)
        prior = run.read_status()
        hooks = Hooks(run, config, flags, self.status, is_main, float(prior.get("spent_s") or 0.0))
        for note in precision_notes:
            hooks.emit(WarningEvent(message=note))
        # trust_remote_code / allow_pickle warnings come from checks.preflight, emitted by start_run.
        if config.model.attn_implementation == "varlen" and cuda:
            from ftwiz.core.engine.attention import varlen_available

            if not varlen_available():
                config.model.attn_implementation = "sdpa"
                hooks.emit(WarningEvent(message="attn_implementation varlen needs torch 2.10+ "
                           "(torch.nn.attention.varlen); training with sdpa instead (correct, slower on packed rows)"))
        if config.training.packing and cuda and config.model.attn_implementation in ("sdpa", "eager"):
            hooks.emit(InfoEvent(
                message=f"packing with attn_implementation {config.model.attn_implementation}: each example still "
                "attends only to itself (a block-diagonal mask), but attention runs over the whole packed row; "
                "attn_implementation varlen does the same work per example (2.7x faster on real chat data)",
            ))
        removed = checkpoints.remove_partial(run.checkpoints_dir) if is_main else []
        for name in removed:
            hooks.emit(WarningEvent(message=f"removed a partial checkpoint left by an interrupted save: {name}"))

        set_seed(config.training.seed)
        self.download_model(hooks)
        tokenizer = AutoTokenizer.from_pretrained(
            model_source(config.model.name_or_path), trust_remote_code=config.model.trust_remote_code, revision=config.model.revision
        )
        notes: list[Note] = []
        found: dict[str, Any] = {}
        train_ds, eval_ds = datasets_for(config, run, tokenizer, notes, found)
        for note in notes:
            hooks.emit(make_event(note.kind, message=note.message))  # InfoEvent or WarningEvent

        micro = int(prior.get("micro_batch") or config.training.per_device_train_batch_size)
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        batch_note = None
        if prior.get("grad_accum"):  # chosen by this run's probe or OOM recovery: already per GPU
            accum = int(prior["grad_accum"])
        else:  # the plan's accumulation is for the whole step: each GPU takes its share
            accum, batch_note = config.training.accumulation_per_gpu(
                config.training.gradient_accumulation_steps, world_size)
            if world_size > 1:
                batch_note = batch_note or (
                    f"gradient accumulation {config.training.gradient_accumulation_steps} shared by {world_size} GPUs: "
                    f"{accum} each, so a step sees the planned batch")
        if prior.get("gradient_checkpointing"):  # turned on by an earlier probe: a resume keeps it
            config = _with_checkpointing(config)
        flags.oom_count = int(prior.get("oom_count") or 0)
        resume_from, bad = checkpoints.usable_checkpoint(run.checkpoints_dir, set_aside=self.is_main)
        for name, why in bad:  # a complete-marked checkpoint whose files do not load: the one before it
            hooks.emit(WarningEvent(message=f"checkpoint {name} is damaged ({why}); set aside as "
                       f"{checkpoints.BAD_PREFIX}{name}, resuming from {resume_from.name if resume_from else 'the start'}"))
        hooks.emit(StartedEvent(
            method=config.method,
            model=config.model.name_or_path,
            precision=precision,
            device="cuda" if cuda else "cpu",
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            data_format=found.get("data_format"),
            train_examples=len(train_ds),
            eval_examples=len(eval_ds) if eval_ds is not None else 0,
            micro_batch=micro,
            grad_accum=accum,
            gradient_checkpointing=config.training.gradient_checkpointing,
            resumed_from=str(resume_from.relative_to(run.path)) if resume_from else None,
            pid=os.getpid(),
        ))
        if batch_note:
            hooks.emit(InfoEvent(message=batch_note))
        probe_pending = config.training.probe and resume_from is None and "probe" not in prior
        if probe_pending and world_size > 1:
            probe_pending = False
            hooks.emit(InfoEvent(message="pre-flight probe skipped: it measures one GPU, this run uses several"))
        self.config, self.cuda, self.precision, self.hooks = config, cuda, precision, hooks
        self.tokenizer, self.train_ds, self.eval_ds = tokenizer, train_ds, eval_ds
        self.micro, self.accum, self.world_size, self.probe_pending = micro, accum, world_size, probe_pending

    def download_model(self, hooks: Hooks) -> None:
        """A Hub model's files into the cache before anything loads them, with `download` events
        the dashboard shows (download.py); nothing for a local folder or a cached model."""
        from ftwiz.core.engine.download import DownloadFailed, fetch_model

        model = self.config.model
        try:
            fetch_model(model.name_or_path, hooks.emit, revision=model.revision, allow_pickle=model.allow_pickle,
                        trust_remote_code=model.trust_remote_code, resume_command=f"ftwiz resume {self.run.name}")
        except DownloadFailed as exc:
            raise RunFailure(str(exc), exc.suggestion) from None

    def train(self) -> Any:
        """Train to the end (or a stop); returns the Trainer. Out of memory: `_after_oom`."""
        run, hooks = self.run, self.hooks
        trainer_class = make_trainer_class()
        while True:
            if self.model is None:
                self.model = build_model(self.config, self.precision, self.cuda)
            self.model.train()
            hooks.micro_batch, hooks.grad_accum = self.micro, self.accum
            args = training_arguments(self.config, run, self.precision, self.micro, self.accum, self.eval_ds is not None)
            trainer = trainer_class(
                model=self.model, args=args, train_dataset=self.train_ds, eval_dataset=self.eval_ds,
                processing_class=self.tokenizer,
            )
            if self.probe_pending:  # the Trainer's own step on the longest batches, before its first step
                self.probe_pending = False
                if self.probe(trainer):  # a new layout: a fresh model and Trainer, as after an OOM
                    del trainer
                    self._free_model()
                    continue
            trainer.ftwiz_hooks = hooks
            hooks.examples_per_row = examples_per_row(self.train_ds, trainer.train_dataset)
            trainer.add_callback(make_callback(hooks))
            if self.config.training.early_stopping_patience and args.load_best_model_at_end:
                from transformers import EarlyStoppingCallback

                trainer.add_callback(EarlyStoppingCallback(self.config.training.early_stopping_patience))
            resume_from = checkpoints.usable_checkpoint(run.checkpoints_dir, set_aside=False)[0]
            try:
                with lora_inputs_shared(self.model, self.precision):
                    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
                return trainer
            except Exception as exc:  # noqa: BLE001 - only OOM is handled here, the rest re-raised
                if not faults.is_oom(exc):
                    raise
                self._after_oom(exc, trainer.state.global_step)
                del trainer
                self._free_model()

    def probe(self, trainer: Any) -> bool:
        """The pre-flight probe (probe.py) on this Trainer; True when it changed the layout."""
        from ftwiz.core.engine.probe import run_probe

        config, micro, accum, hooks = self.config, self.micro, self.accum, self.hooks
        with lora_inputs_shared(self.model, self.precision):  # measured as trained
            found = run_probe(trainer, self.model, config, micro, accum, self.precision, self.cuda)
        changed = (found["micro_batch"], found["grad_accum"]) != (micro, accum) or (
            found["gradient_checkpointing"] and not config.training.gradient_checkpointing)
        micro, accum = found["micro_batch"], found["grad_accum"]
        if found["gradient_checkpointing"] and not config.training.gradient_checkpointing:
            config = _with_checkpointing(config)
        probe = ProbeEvent(**found)
        hooks.emit(probe)
        if not probe.fits:
            hooks.emit(WarningEvent(message="pre-flight probe: even micro-batch 1 with gradient checkpointing "
                       f"ran out of memory; training will likely fail ({OOM_SUGGESTION})"))
        self.status.update(
            micro_batch=micro,
            grad_accum=accum,
            gradient_checkpointing=config.training.gradient_checkpointing,
            probe=ProbeSummary.from_probe(probe),
        )
        self.config, self.micro, self.accum = config, micro, accum
        return changed

    def _after_oom(self, exc: Exception, step: int) -> None:
        """Out of GPU memory: halve the micro-batch and double accumulation for the next pass,
        or raise RunFailure when no retry is left (or under DDP, where `ftwiz resume` retries)."""
        run, config, flags, micro, accum = self.run, self.config, self.flags, self.micro, self.accum
        flags.oom_count += 1
        attempt = flags.oom_count
        restart = checkpoints.latest_checkpoint(run.checkpoints_dir)
        can_retry = attempt <= config.limits.oom_retries and micro > 1
        new_micro, new_accum = (micro // 2, accum * 2) if can_retry else (micro, accum)
        self.hooks.emit(OomEvent(
            step=step,
            attempt=attempt,
            max_attempts=config.limits.oom_retries,
            micro_batch_old=micro,
            micro_batch_new=new_micro,
            grad_accum_old=accum,
            grad_accum_new=new_accum,
            resume_from=str(restart.relative_to(run.path)) if restart else None,
            message=str(exc).splitlines()[0][:300],
        ))
        if can_retry and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Under DDP the other ranks are already waiting in a collective: no retry in
            # place. Any rank records the halved batch; `ftwiz resume` starts with it.
            run.write_status(micro_batch=new_micro, grad_accum=new_accum, oom_count=flags.oom_count)
            raise RunFailure(
                f"out of GPU memory at step {step} (rank {os.environ.get('RANK', '0')}); the micro-batch "
                f"is halved to {new_micro} for the next run",
                f"`ftwiz resume {run.name}` continues from the last checkpoint with the smaller batch",
            ) from None
        if not can_retry:
            why = "micro-batch is already 1" if micro <= 1 else f"{config.limits.oom_retries} retries used"
            raise RunFailure(f"out of GPU memory at step {step} ({why})", OOM_SUGGESTION) from None
        self.micro, self.accum = new_micro, new_accum
        self.status.update(micro_batch=self.micro, grad_accum=self.accum, oom_count=flags.oom_count)

    def _free_model(self) -> None:
        import torch

        self.model = None
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def finish(self, trainer: Any) -> str:
        """After training: the final state, with the adapter, samples and merge it calls for."""
        run, config, flags, hooks, is_main = self.run, self.config, self.flags, self.hooks, self.is_main
        step = trainer.state.global_step
        if flags.nan:
            raise RunFailure(f"training stopped at step {step}: {flags.nan.reason}", NAN_SUGGESTION)
        if flags.stop_requested and not flags.limit:
            last = checkpoints.latest_checkpoint(run.checkpoints_dir)
            hooks.emit(StoppedEvent(step=step, checkpoint=str(last.relative_to(run.path)) if last else None))
            return "stopped"
        from ftwiz.core.engine import results

        sharded = config.training.fsdp and self.world_size > 1
        if is_main or sharded:  # under FSDP saving gathers the shards: every rank takes part
            results.save_adapter(trainer, run, is_main=is_main, sharded=sharded)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        final_loss = losses[-1] if losses else None
        if flags.limit:
            hooks.emit(StoppedEvent(step=step, reason=flags.limit.limit, adapter=str(run.adapter_dir.relative_to(run.path))))
            return "stopped"
        demo_score = None
        if sharded and config.output.samples > 0:
            # Generating on rank 0 alone would wait forever for the other ranks' shards.
            hooks.emit(InfoEvent(message=f"before/after samples are skipped under FSDP; compare the saved model with "
                       f"`ftwiz sample {run.name} --prompt TEXT`"))
        elif is_main and config.output.samples > 0 and self.eval_ds is not None:
            summary = results.before_after_samples(trainer.model, self.tokenizer, self.eval_ds, config, run)
            hooks.emit(SamplesEvent(path=run.samples_path.name, count=summary.count, before=summary.before, after=summary.after))
            if config.data.path == "demo":
                demo_score = summary.score()
        if is_main and config.output.merge and config.method != "full":
            results.merge(run)
        hooks.emit(FinishedEvent(
            step=step,
            adapter=str(run.adapter_dir.relative_to(run.path)),
            final_loss=final_loss,
            **best_checkpoint(trainer.state, run),
            duration_s=round(time.time() - hooks.process_t0, 1),
            spend_usd=hooks.spend_usd(),
            demo_score=demo_score,
        ))
        return "finished"


def train(run: RunDir, config: RunConfig, flags: Flags, status: Status, is_main: bool) -> str:
    """Train until done, stopped, limited or failed; returns the final state."""
    recipe = RunRecipe(run, config, flags, status, is_main)
    recipe.setup()
    trainer = recipe.train()
    return recipe.finish(trainer)


def install_signal_handlers(flags: Flags) -> None:
    """SIGHUP ignored; SIGTERM sets a flag and nothing else (see the module docstring)."""

    def on_term(signum: int, frame: Any) -> None:
        flags.stop_requested = True

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)


RESERVE_NAME = ".reserve"
RESERVE_BYTES = 256 * 1024
"""Space the run keeps aside: freed when a write fails, so the error event and final status fit
on a disk another process has filled."""
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def own_run(run: RunDir, is_main: bool) -> int | None:
    """The run directory's owner lock: inherited from `ftwiz train/resume` (which took it), or
    taken here for a launch by hand. UserError when another process owns the run. Workers under
    `accelerate launch` get None: their launcher holds the lock."""
    import fcntl

    inherited = os.environ.get(LOCK_FD_ENV)
    if inherited:
        try:
            fd = int(inherited)
            if os.fstat(fd).st_ino == os.stat(run.lock_path).st_ino:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # our own lock: it holds
                os.set_inheritable(fd, False)  # programs this process starts do not own the run
                return fd
        except (OSError, ValueError):
            pass
        return None  # a worker under accelerate: the descriptor stayed with the launcher
    return run.hold_lock(wait_s=0) if is_main else None


def _reserve(run: RunDir) -> None:
    try:
        with open(run.path / RESERVE_NAME, "wb") as handle:
            handle.write(b"\0" * RESERVE_BYTES)
    except OSError:
        pass


def _free_reserve(run: RunDir) -> None:
    try:
        os.remove(run.path / RESERVE_NAME)
    except OSError:
        pass
    faults.disk_freed()


def _os_error_message(exc: OSError) -> tuple[str, str]:
    """A failed write outside a checkpoint save, said plainly: what, where, and what to do."""
    where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
    reason = exc.strerror or str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if exc.errno in _DISK_ERRNOS:
        return (f"disk full{where}: {reason}", "free disk space (df -h), then `ftwiz resume` continues from the last checkpoint")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"permission denied{where}: {reason}", "make the run directory writable, then `ftwiz resume`")
    return (f"{type(exc).__name__}{where}: {reason}", "see train.log for the full traceback")


def main(run_path: str) -> int:
    os.umask(0o077)  # everything the run writes is the user's only
    faults.install_process_limits()
    run = RunDir(Path(run_path))
    is_main = int(os.environ.get("RANK", "0")) == 0
    try:
        lock = own_run(run, is_main)
    except UserError as exc:  # another trainer owns this run: touch nothing of it
        print(f"ftwiz: {exc}", file=sys.stderr)
        return 2
    flags = Flags()
    status = Status(run, is_main, flags)

    install_signal_handlers(flags)
    if is_main:
        _reserve(run)
    # Launched by ftwiz in its own session, the launcher (the process group leader) is the pid to stop.
    pid = os.getpgid(0) if lock is not None and os.environ.get(LOCK_FD_ENV) else os.getpid()
    status.update(state="running", pid=pid, **process_identity(pid), worker_pid=os.getpid(), exit_code=None)
    status.start_heartbeat()
    code = 1
    try:
        config = load_config(run.config_path)
        final = train(run, config, flags, status, is_main)
        code = 0
        status.stop_heartbeat()
        status.update(state=final, exit_code=0)
    except (UserError, RunFailure) as exc:
        code = 2 if isinstance(exc, UserError) else 1
        message = str(exc)
        suggestion = getattr(exc, "suggestion", "") or None
        print(f"ftwiz: {message}", file=sys.stderr)
        _fail(run, status, is_main, code, message, suggestion)
    except OSError as exc:  # disk full or permission denied outside a checkpoint save
        if exc.errno in _DISK_ERRNOS:
            _free_reserve(run)
        traceback.print_exc()
        message, suggestion = _os_error_message(exc)
        _fail(run, status, is_main, code, message, suggestion)
    except Exception as exc:  # noqa: BLE001 - report every crash as an event, then exit non-zero
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        _fail(run, status, is_main, code, message, "see train.log for the full traceback")
    finally:
        if is_main:
            try:
                os.remove(run.path / RESERVE_NAME)
            except OSError:
                pass
        if lock is not None:
            _release(lock)
    return code


def _release(lock: int) -> None:
    """The final state is written: the run is over. LOCK_UN frees the lock at once for every
    descriptor sharing it (a forked helper that outlives us included), so `ftwiz resume` never
    waits for the interpreter's exit."""
    import fcntl

    try:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    except OSError:
        pass


def _fail(run: RunDir, status: Status, is_main: bool, code: int, message: str, suggestion: str | None) -> None:
    status.stop_heartbeat()
    writes = [lambda: status.update(state="failed", exit_code=code)]
    if is_main:
        writes.insert(0, lambda: run.emit(ErrorEvent(message=message, suggestion=suggestion)))
    for write in writes:
        for attempt in range(2):  # a full disk: free the reserve and write again
            try:
                write()
                break
            except OSError:
                _free_reserve(run)
