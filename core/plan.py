"""A training plan: method, hyperparameters, batch layout, memory, time and cost, with reasons.

`make_plan` is what `ftwiz plan` prints and what the wizard's Review step shows; `to_config`
turns it into the RunConfig the engine runs. On several GPUs the run is data-parallel: a copy
of the model per GPU (DDP), or, for full fine-tuning that does not fit one GPU, the model
sharded over them (FSDP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftwiz.core.errors import UserError
from ftwiz.core.memory import (GIB, default_optim, estimate_for, estimate_memory, gib_text, liger_norms,
                               mlp_recompute_possible, trl_fuses_lm_head)
from ftwiz.core.methods import METHOD_NAMES
from ftwiz.core.recommend import (Fit, Hyperparams, Recommendation, examples_per_row, fit_to_gpu,
                                  recommend_hyperparams, rows_per_step)

# Full fine-tuning is offered by "auto" only for models this small (it needs ~16 bytes per
# weight; above ~3B LoRA reaches ~98% of its quality at a fraction of the memory), with at least
# 1K examples (fewer overfit a full fine-tune), and when it needs at most this share of the GPU.
FULL_MAX_PARAMS = 3e9
FULL_MIN_EXAMPLES = 1000
FULL_COMFORT = 0.7
DEFAULT_SEQ = 1024
DEFAULT_SEQ_REASON = "no data given: 1024 tokens covers most instruction examples"
# Without a tokenizer, core/data counts whitespace words; ~1.3 tokens per English word.
TOKENS_PER_WORD = 1.3


@dataclass
class GpuTarget:
    """The memory and precision the plan is made for."""

    name: str
    total_bytes: int
    free_bytes: int
    bf16: bool
    source: str  # "detected" | "--gpu" | "--vram" | "cpu"
    count: int = 1  # GPUs the run uses; name and memory are those of the one with the least free

    @property
    def cpu_only(self) -> bool:
        return self.source == "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "total_gib": round(self.total_bytes / GIB, 2),
            "free_gib": round(self.free_bytes / GIB, 2),
            "bf16": self.bf16,
            "source": self.source,
            "count": self.count,
        }


def resolve_gpu(gpu: Any = None, count: int | None = None) -> GpuTarget:
    """A Hardware, GPU, known GPU name, VRAM in GiB (number), or None (detect this machine).

    `count`: how many such GPUs (--gpus); a Hardware brings its own, and every GPU of it runs
    the training (one process each), so the plan is made for the one with the least free memory.
    """
    _check_positive(count, "--gpus")
    if gpu is None:
        from ftwiz.core.hardware import detect_hardware

        gpu = detect_hardware()
    if isinstance(gpu, (int, float)) and not isinstance(gpu, bool):
        if not math.isfinite(gpu) or gpu <= 0:
            raise UserError(f"--vram: {gpu}: must be a number of GiB above 0")
        total = int(gpu * GIB)
        return GpuTarget(f"{gpu:g} GiB GPU", total, total, True, "--vram", count or 1)
    if isinstance(gpu, str):
        from ftwiz.core.hardware import known_gpu

        gpu = known_gpu(gpu)
        return GpuTarget(gpu.name, gpu.memory_total_bytes, gpu.memory_total_bytes, gpu.bf16, "--gpu", count or 1)
    if hasattr(gpu, "gpus"):  # Hardware
        if not gpu.gpus:
            return GpuTarget("CPU only", 0, 0, False, "cpu")
        found = len(gpu.gpus)
        if count is not None and count != found:
            raise UserError(f"--gpus: {count}: this machine has {found} GPU(s) visible; "
                            "plan for other hardware with --gpu NAME --gpus N")
        source, gpus = "detected", gpu.gpus
    else:
        source, gpus, found = "given", [gpu], count or 1
    free_of = lambda g: g.memory_free_bytes if g.memory_free_bytes is not None else g.memory_total_bytes  # noqa: E731
    gpu = min(gpus, key=free_of)
    return GpuTarget(gpu.name, gpu.memory_total_bytes, free_of(gpu), all(bool(g.bf16) for g in gpus), source, found)


@dataclass
class Plan:
    model: Any  # ModelInfo
    method: str
    method_reason: str
    qlora_upcast: bool
    rank: int
    targets: list[str]
    hyperparams: Hyperparams
    fit: Fit
    gpu: GpuTarget
    n_examples: int | None
    time_cost: Any = None  # core.cost.CostEstimate
    notes: list[str] = field(default_factory=list)
    seq_reason: str = DEFAULT_SEQ_REASON
    batch_asked: bool = False
    grad_ckpt_asked: bool = False
    distribution: str = "single"  # "single" | "ddp" (a copy per GPU) | "fsdp" (sharded over the GPUs)
    distribution_reason: str = ""
    mean_tokens: float | None = None  # mean tokens per example from the data; None: no data statistics
    disk: Any = None  # core.disk.DiskPlan

    @property
    def examples_per_row(self) -> float:
        return examples_per_row(self.hyperparams["packing"], self.mean_tokens, self.fit.max_length)

    @property
    def examples_per_step(self) -> float:
        """Examples one optimizer step sees over all GPUs (rows x examples per packed row). The config's
        accumulation is the whole step's: on several GPUs each process takes its share (the engine)."""
        return self.fit.micro_batch * self.fit.grad_accum * self.examples_per_row

    @property
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps in one epoch over the training split (eval_fraction held out)."""
        if self.n_examples is None or (self.hyperparams["packing"] and not self.mean_tokens):
            return None  # packed rows of unknown lengths: examples per step unknown
        from ftwiz.core.defaults import EVAL_FRACTION

        train = self.n_examples - round(self.n_examples * EVAL_FRACTION)
        return max(1, math.ceil(max(1, train) / self.examples_per_step))

    def batch_summary(self) -> dict[str, Any]:
        """How many examples a step holds and how many steps the epochs make (the plan's 'batch')."""
        rows = self.fit.micro_batch * self.fit.grad_accum
        per_epoch = self.steps_per_epoch
        packed = self.hyperparams["packing"]
        if packed and self.mean_tokens:
            how = (f"{rows} packed row(s) of {self.fit.max_length} tokens a step, each ~{self.examples_per_row:.1f} "
                   f"examples of ~{self.mean_tokens:,.0f} tokens")
        elif packed:
            how = (f"{rows} packed row(s) of {self.fit.max_length} tokens a step ({rows * self.fit.max_length:,} tokens); "
                   "how many examples that is depends on their length (give --data)")
        else:
            how = f"{rows} example(s) a step, one per row"
        return {
            "examples_per_step": None if packed and not self.mean_tokens else round(self.examples_per_step, 1),
            "rows_per_step": rows,
            "tokens_per_step": rows * self.fit.max_length,
            "examples_per_row": round(self.examples_per_row, 2),
            "steps_per_epoch": per_epoch,
            "steps": None if per_epoch is None else math.ceil(per_epoch * self.hyperparams["num_train_epochs"]),
            "reason": how,
        }

    @property
    def distribution_label(self) -> str:
        """"FSDP over 2 GPUs", "DDP over 4 GPUs", "one GPU" (what the CLI and the wizard show)."""
        if self.distribution == "single":
            return "CPU" if self.gpu.cpu_only else "one GPU"
        return f"{self.distribution.upper()} over {self.gpu.count} GPUs"

    @property
    def fits(self) -> bool:
        return self.fit.fits and not self.gpu.cpu_only

    def to_dict(self) -> dict[str, Any]:
        est = self.fit.estimate.to_dict()
        hp = self.hyperparams.to_dict()
        fit = self.fit
        if fit.fits:
            batch_reason = next(r for r in fit.reasons if r.startswith("micro-batch"))
            ckpt_reason = next(r for r in fit.reasons if r.startswith("gradient checkpointing"))
        else:
            batch_reason = "as asked (--batch); does not fit" if self.batch_asked else "smallest micro-batch: nothing fits"
            ckpt_reason = "as asked (--grad-ckpt); does not fit" if self.grad_ckpt_asked else "on: the smallest layout, and still nothing fits"
        batch = self.batch_summary()
        asked = hp["effective_batch_size"]["value"]
        if batch["examples_per_step"] is None and batch["rows_per_step"] > asked:  # --batch above it, lengths unknown
            hp["effective_batch_size"] = {**hp["effective_batch_size"], "value": batch["rows_per_step"],
                                          "reason": f"micro-batch {fit.micro_batch} (--batch) is above the recommended "
                                          f"{asked}: at least {batch['rows_per_step']} examples a step ({batch['reason']})"}
        elif batch["examples_per_step"] is not None and round(batch["examples_per_step"]) != asked:
            why = (f"micro-batch {fit.micro_batch} (--batch) is above the recommended {asked}"
                   if self.batch_asked and fit.micro_batch * self.examples_per_row > asked
                   else f"~{asked} asked; whole rows give {batch['examples_per_step']:g}")
            hp["effective_batch_size"] = {**hp["effective_batch_size"], "value": round(batch["examples_per_step"]),
                                          "reason": f"examples a step: {why} ({batch['reason']})"}
        else:
            hp["effective_batch_size"] = {**hp["effective_batch_size"],
                                          "reason": hp["effective_batch_size"]["reason"] + f": {batch['reason']}"}
        hp["per_device_train_batch_size"] = {"value": fit.micro_batch, "reason": batch_reason, "guide": "4"}
        hp["gradient_accumulation_steps"] = {"value": fit.grad_accum, "reason": "keeps the effective batch"
                                             + (" (in examples, packed rows counted as the examples they hold)"
                                                if self.examples_per_row > 1 else ""), "guide": "4"}
        hp["gradient_checkpointing"] = {"value": fit.grad_ckpt, "reason": ckpt_reason, "guide": None}
        hp["max_length"] = {"value": self.fit.max_length, "reason": self.seq_reason, "guide": None}
        hp["optim"] = {**hp["optim"], "value": self.fit.optim}
        tc = self.time_cost
        return {
            "model": {"name": self.model.name, "total_params": self.model.total_params},
            "method": self.method,
            "method_reason": self.method_reason,
            "qlora_upcast": self.qlora_upcast,
            "rank": self.rank if self.method != "full" else None,
            "targets": self.targets if self.method != "full" else None,
            "examples": self.n_examples,
            "peak_gib": est["peak_gib"],
            "reserved_gib": est["reserved_gib"],
            "nvidia_smi_gib": est["nvidia_smi_gib"],
            "peak_phase": est["peak_phase"],
            "breakdown": est["breakdown"],
            "memory_assumptions": est["assumptions"],
            "fits": self.fits,
            "fit": self.fit.to_dict(),
            "batch": batch,
            "hyperparameters": hp,
            "time": None if tc is None else {"hours": round(tc.hours, 3), "tokens_per_second": round(tc.tokens_per_second), "tokens": tc.tokens},
            "cost": None if tc is None else {"usd": round(tc.cost_usd, 2), "price_per_gpu_hour": tc.price_per_gpu_hour, "source": tc.price_source,
                                              "guide_range_usd": None if tc.cost_range_usd is None else [round(c, 2) for c in tc.cost_range_usd]},
            "time_cost_assumptions": [] if tc is None else tc.assumptions,
            "gpu": self.gpu.to_dict(),
            "distribution": {"strategy": self.distribution, "gpus": self.gpu.count, "label": self.distribution_label,
                             "reason": self.distribution_reason},
            "disk": None if self.disk is None else self.disk.to_dict(),
            "notes": list(self.notes),
        }

    def to_config(self, data_path: str = "data.jsonl", name: str | None = None):
        """The RunConfig the engine runs for this plan."""
        from ftwiz.core.config import config_from_dict

        hp = self.hyperparams
        precision = hp["precision"]
        training = {
            "learning_rate": hp["learning_rate"],
            "num_train_epochs": float(hp["num_train_epochs"]),
            "per_device_train_batch_size": self.fit.micro_batch,
            "gradient_accumulation_steps": self.fit.grad_accum,
            "warmup_ratio": hp["warmup_ratio"],
            "lr_scheduler_type": hp["lr_scheduler_type"],
            "weight_decay": hp["weight_decay"],
            "optim": self.fit.optim,
            "bf16": precision == "bf16",
            "fp16": precision == "fp16",
            "gradient_checkpointing": self.fit.grad_ckpt,
            "max_length": self.fit.max_length,
            "packing": hp["packing"],
            "use_liger_kernel": hp["use_liger_kernel"],
            "regional_compile": hp["regional_compile"] and self.distribution != "fsdp",
        }
        if self.disk is not None:
            training["save_total_limit"] = self.disk.save_total_limit
        if self.distribution == "fsdp":
            # transformers 5's form: fsdp=True, the rest in fsdp_config (core.config.FsdpConfig's
            # defaults: FSDP2, FULL_SHARD, the model's own decoder layers as the wrapped units).
            training["fsdp"] = True
            training["fsdp_config"] = {"reshard_after_forward": True}
        data: dict[str, Any] = {
            "name": name,
            "method": self.method,
            "model": {"name_or_path": _loadable_model(self.model), "attn_implementation": hp["attn_implementation"]},
            "data": {"path": _absolute_if_file(data_path)},
            "training": training,
            "quantization": {"upcast": self.qlora_upcast,
                             "bnb_4bit_compute_dtype": "bfloat16" if precision == "bf16" else "float16"},
        }
        if self.method != "full":
            # Fused expert weights are parameters, not modules: only peft's own 'all-linear' reaches them.
            experts = set(self.targets) & set(self.model.parameter_targets())
            data["lora"] = {"r": self.rank, "lora_alpha": 2 * self.rank, "lora_dropout": hp["lora_dropout"],
                            "target_modules": "all-linear" if experts else list(self.targets), "use_rslora": hp["use_rslora"],
                            "use_dora": hp["use_dora"]}
        return config_from_dict(data, source="plan")


CHAT_FORMATS = ("alpaca", "chat", "sharegpt")
"""Formats that train through the model's chat template."""


def base_model_warning(info: Any) -> str:
    """What a base checkpoint with chat data risks, and the two ways out."""
    return (f"{info.name} is a base model: its chat template's special tokens were never trained, and chat data "
            f"trains through them; pick {info.instruct_name} (the guide fine-tunes Llama-3.1-8B-Instruct), or also "
            "train those tokens' embeddings (peft's trainable_token_indices)")


def _loadable_model(info: Any) -> str:
    """What from_pretrained can load: a catalog name becomes its Hub id, a local directory an
    absolute path (the run process may start from another directory)."""
    if info.source == "local":
        return str(Path(info.name).expanduser().resolve())
    return getattr(info, "hub_id", None) or info.name


def _absolute_if_file(path: str) -> str:
    """A local data file as an absolute path; Hub ids, 'demo' and placeholders stay as given."""
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else path


def _check_positive(value: Any, option: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise UserError(f"{option}: {value!r}: must be a whole number above 0")


def _seq_candidates(seq: int | None, data_stats: dict | None) -> tuple[list[int], str]:
    """max_length candidates, longest first, and the reason for the first."""
    if seq is not None:
        return [seq], "as asked (--seq)"
    if data_stats and data_stats.get("max"):
        scale = TOKENS_PER_WORD if data_stats.get("estimate") else 1.0
        up64 = lambda n: max(64, -(-int(n * scale) // 64) * 64)  # noqa: E731
        longest, p95 = up64(data_stats["max"]), up64(data_stats.get("p95") or data_stats["max"])
        counted = " (from a word count x1.3: the model's tokenizer is not on this machine)" if scale != 1.0 else ""
        return [longest, p95], f"longest example {longest} tokens{counted}; p95 {p95} if memory is short"
    return [DEFAULT_SEQ], DEFAULT_SEQ_REASON


def make_plan(
    model: Any,
    *,
    examples: int | None = None,
    data_stats: dict | None = None,
    gpu: Any = None,
    method: str = "auto",
    batch: int | None = None,
    seq: int | None = None,
    rank: int | None = None,
    targets: Any = None,
    grad_ckpt: bool | None = None,
    qlora_upcast: bool = False,
    optim: str | None = None,
    gpus: int | None = None,
    data_format: str | None = None,
    packing: bool | None = None,
) -> Plan:
    """Plan a fine-tune of `model` (ModelInfo or spec) on `gpu`; overrides are kept as given.

    `batch` is the micro-batch per GPU (per_device_train_batch_size); the effective batch comes
    from the dataset's size band and gradient accumulation keeps it. `gpus`: how many of `gpu`
    (a detected machine brings its own count). With several GPUs, full fine-tuning is sharded
    (FSDP) when a whole copy per GPU does not fit; otherwise each GPU holds a copy (DDP).
    """
    from ftwiz.core.models import DEFAULT_TARGETS, load_model_info, resolve_targets

    if method not in ("auto", *METHOD_NAMES):
        raise UserError(f"--method: {method!r}: unknown (allowed: auto, {', '.join(METHOD_NAMES)})")
    for value, option in ((examples, "--examples"), (batch, "--batch"), (seq, "--seq"), (rank, "--rank")):
        _check_positive(value, option)
    info = load_model_info(model) if isinstance(model, str) else model
    context = info.max_position_embeddings
    if seq is not None and context and seq > context:
        raise UserError(f"--seq: {seq} is longer than {info.name}'s context ({context} tokens, "
                        f"max_position_embeddings); use at most {context}")
    n_examples = examples if examples is not None else (data_stats or {}).get("rows")
    if gpu is None:
        from ftwiz.core.hardware import detect_hardware

        gpu = detect_hardware()  # this machine: its GPUs and its free disk
    target = resolve_gpu(gpu, gpus)
    notes: list[str] = []
    if target.cpu_only:
        notes.append("CPU only: no NVIDIA GPU found; fine-tuning this model needs one (plan with --gpu or --vram)")
    if info.base and data_format in CHAT_FORMATS:
        notes.append(base_model_warning(info))
    resolved_targets = resolve_targets(info, targets if targets is not None else DEFAULT_TARGETS)
    seqs, seq_reason = _seq_candidates(seq, data_stats)
    if context and seqs[0] > context:
        seqs = sorted({min(s, context) for s in seqs}, reverse=True)
        seq_reason = f"{context}: the model's context (max_position_embeddings); longer examples are truncated"
    dtype = "fp32" if target.cpu_only else ("bf16" if target.bf16 else "fp16")
    free = target.free_bytes
    mean = mean_tokens(data_stats)

    def plan_for(m: str, free: int = free, shards: int = 1) -> tuple[Hyperparams, Fit]:
        hp = recommend_hyperparams(n_examples, m, target.bf16, target.cpu_only, info.total_params)
        if packing is not None and packing != hp["packing"]:
            _packing_as_asked(hp, packing)
        r = rank or (hp["r"] if "r" in hp.items else 16)

        def fit_rows(lengths: list[int]) -> Fit:
            # The guide's batch counts examples: packed rows hold several, so fewer rows make a step.
            per_row = examples_per_row(hp["packing"], mean, lengths[0])
            rows = max(rows_per_step(hp["effective_batch_size"], per_row), batch or 1)
            return fit_to_gpu(
                info, m, free, rows, lengths, r, resolved_targets,
                micro_batch=batch, grad_ckpt=grad_ckpt, optim=optim, qlora_upcast=qlora_upcast,
                dtype=dtype if not (m == "qlora" and dtype == "fp32") else "bf16",
                lora_dropout=hp["lora_dropout"] if "lora_dropout" in hp.items else 0.0,
                # Compiled layers are decided after the time estimate (_compile_only_if_it_pays): plan
                # memory as if they were on (Liger's bf16 RMSNorm then off), the larger of the two.
                liger=liger_norms(hp["use_liger_kernel"], hp["regional_compile"]),
                fused_head=hp["use_liger_kernel"] or (not target.cpu_only and trl_fuses_lm_head()), shards=shards,
                batch_unit="packed row(s)" if hp["packing"] else "example(s)",
                # The config's default, training.recompute_mlp_input, as the engine applies it.
                recompute_mlp=mlp_recompute_possible(m, hp["regional_compile"], shards > 1),
            )

        fit = fit_rows(seqs)
        if hp["packing"] and mean and fit.fits and fit.max_length != seqs[0]:
            fit = fit_rows([fit.max_length])  # shorter rows hold fewer examples: count the rows again
        return hp, fit

    size = f"{info.total_params / 1e9:.1f}B"
    if method != "auto":
        chosen = method
        hp, fit = plan_for(method)
        reason = f"{method}: as asked (--method)"
    elif target.cpu_only:
        chosen, (hp, fit) = "lora", plan_for("lora")
        reason = "lora: no GPU here; QLoRA needs a CUDA GPU, full fine-tuning far more memory"
    else:
        chosen, hp, fit, reason = None, None, None, ""
        if info.total_params <= FULL_MAX_PARAMS and (n_examples or 0) >= FULL_MIN_EXAMPLES:
            # Some layout must fit in FULL_COMFORT of the memory (not the fastest one: that fills the GPU).
            _, comfortable = plan_for("full", int(free * FULL_COMFORT))
            if comfortable.fits:
                chosen = "full"
                hp, fit = plan_for("full")
                reason = (f"full: a {size} model with {n_examples:,} examples fits with room to spare "
                          f"(a layout of {comfortable.estimate.required_bytes / GIB:.0f} GiB fits in {FULL_COMFORT:.0%} of "
                          f"the memory): every weight learns")
        if chosen is None:
            hp, fit = plan_for("lora")
            why_not_full = ("over 3B parameters" if info.total_params > FULL_MAX_PARAMS
                            else "under 1K examples would overfit it" if (n_examples or 0) < FULL_MIN_EXAMPLES
                            else "it does not fit comfortably")
            if fit.fits:
                chosen = "lora"
                reason = f"lora: fits in {dtype} ({fit.estimate.required_bytes / GIB:.0f} of {fit.usable_bytes / GIB:.0f} GiB), faster than QLoRA; not full: {why_not_full}"
            else:
                lora_need = fit.estimate.required_bytes / GIB
                chosen = "qlora"
                hp, fit = plan_for("qlora")
                reason = (f"qlora: LoRA on the bf16 model needs {lora_need:.0f} GiB, more than the "
                          f"{fit.usable_bytes / GIB:.0f} GiB usable; 4-bit weights take ~1/4 of the memory")
                if not fit.fits:
                    reason += "; even QLoRA does not fit"
    distribution, distribution_reason = "single", ""
    if target.count > 1 and not target.cpu_only:
        distribution = "ddp"
        distribution_reason = f"a copy of the model on each of the {target.count} GPUs, the batch split between them"
        if chosen == "full":
            sharded = _fsdp_fit(info, target, fit, lambda: plan_for("full", shards=target.count), optim, dtype, notes)
            if sharded is not None:
                (hp, fit), distribution_reason = sharded
                distribution = "fsdp"
                if hp["regional_compile"]:  # to_config leaves it off
                    notes.append("regional_compile off under FSDP: ftwiz compiles layers before the Trainer "
                                 "shards them, a combination not yet run on a GPU")
    rank_used = rank or (hp["r"] if "r" in hp.items else 16)
    experts = [t for t in resolved_targets if t in info.parameter_targets()]
    if experts and chosen != "full":
        hp.items["lora_dropout"] = Recommendation(
            "lora_dropout", 0.0, f"0, not the guide's 0.05: peft adapts {info.name}'s fused expert weights "
            f"({', '.join(experts)}) as parameters, which take no dropout", "0.05")
    if targets is not None and "target_modules" in hp.items:
        shown = targets if isinstance(targets, str) else ",".join(targets)
        hp.items["target_modules"] = Recommendation("target_modules", shown, "as asked (--targets)",
                                                    hp.items["target_modules"].guide)
    if rank and "r" in hp.items:
        hp.items["r"] = Recommendation("r", rank, "as asked (--rank)", hp.items["r"].guide)
        hp.items["lora_alpha"] = Recommendation("lora_alpha", 2 * rank, "alpha = 2 x rank, the guide's default scaling",
                                                "2 x rank")
    if chosen == "full" and (rank or targets is not None):
        notes.append("--rank/--targets do not apply: full fine-tuning trains every weight")
    if target.cpu_only:
        fit.suggestion = "no GPU here: plan for one with --gpu NAME or --vram GIB"
    elif not fit.fits and fit.suggestion:
        notes.append(f"does not fit: {fit.suggestion}")
    if rank and resolved_targets and chosen != "full":
        groups = [g for t in resolved_targets for g in info.groups_named(t)]
        smallest = min((min(g.in_features, g.out_features) for g in groups), default=0)
        if groups and rank > smallest:
            notes.append(f"--rank {rank} is above the smallest targeted layer's size ({smallest}): a LoRA rank "
                         f"gains nothing past it and only adds weights (typical: 8-64)")
    if seq is None and fit.max_length != seqs[0]:
        seq_reason = f"{fit.max_length}: the longest of {', '.join(map(str, seqs))} that fits"
    plan = Plan(info, chosen, reason, qlora_upcast if chosen == "qlora" else False, rank_used, resolved_targets,
                hp, fit, target, n_examples, notes=notes, seq_reason=seq_reason,
                batch_asked=batch is not None, grad_ckpt_asked=grad_ckpt is not None,
                distribution=distribution, distribution_reason=distribution_reason, mean_tokens=mean)
    plan.time_cost = _time_cost(plan, data_stats)
    plan.disk = _disk_plan(plan, getattr(gpu, "disk_free_bytes", None))
    _compile_only_if_it_pays(plan)
    _dropout_cost(plan)
    return plan


def _disk_plan(plan: Plan, free_bytes: int | None) -> Any:
    """Checkpoints, result and merged model against the free disk (known for this machine only);
    a note when the checkpoints kept were cut to fit, or when nothing fits."""
    from ftwiz.core.disk import plan_disk
    from ftwiz.core.parameters import trainable_lora_params

    info = plan.model
    trainable = info.total_params if plan.method == "full" else trainable_lora_params(info, plan.rank, plan.targets)
    disk = plan_disk(plan.method, info.total_params, trainable, plan.fit.optim, free_bytes=free_bytes)
    if len(disk.reasons) > 1:
        plan.notes.append(f"disk: {disk.reasons[-1]}")
    return disk


def _compile_only_if_it_pays(plan: Plan) -> None:
    """Compiled layers off for a run too short to repay the compile (recommend.COMPILE_PAYBACK_S)."""
    from ftwiz.core.recommend import COMPILE_PAYBACK_S, Recommendation, _compile_evidence

    hp, tc = plan.hyperparams, plan.time_cost
    if not hp["regional_compile"] or tc is None or tc.hours * 3600 >= COMPILE_PAYBACK_S:
        return
    hp.items["regional_compile"] = Recommendation(
        "regional_compile", False,
        f"off: this run trains ~{max(1, round(tc.hours * 60))} min, too short to repay the compile "
        f"(on for runs over {COMPILE_PAYBACK_S // 60} min: {_compile_evidence()})")
    # Liger's bf16 RMSNorm and SwiGLU now run (compiled layers would have replaced them): the estimate follows.
    plan.fit.estimate = estimate_for(plan.to_config("data.jsonl"), plan.model)


def _packing_as_asked(hp: Hyperparams, packing: bool) -> None:
    """--packing on|off over the recommendation; the attention follows (varlen is for packed rows)."""
    from ftwiz.core.recommend import Recommendation

    if packing:
        hp.items["packing"] = Recommendation("packing", True, "as asked (--packing on): examples share rows")
    else:
        hp.items["packing"] = Recommendation(
            "packing", False, "off, as asked (--packing off): each example its own row, padded to the longest of "
            "its micro-batch")
        if hp["attn_implementation"] == "varlen":
            hp.items["attn_implementation"] = Recommendation(
                "attn_implementation", "sdpa", "PyTorch's SDPA (its FlashAttention kernel): rows are not packed")


def _dropout_cost(plan: Plan) -> None:
    """The departure from the guide's LoRA dropout says what following the guide would cost here."""
    from ftwiz.core.recommend import Recommendation, dropout_reason

    hp = plan.hyperparams
    item = hp.items.get("lora_dropout")
    if item is None or item.reason != dropout_reason() or plan.fit.estimate is None or not plan.fit.fits:
        return
    try:
        config = plan.to_config("data.jsonl")
    except UserError:  # a plan no run config can hold (the CLI says why when it is written)
        return
    config.lora.lora_dropout = 0.05
    extra = estimate_for(config, plan.model).peak_bytes - plan.fit.estimate.peak_bytes
    if extra >= 0.05 * GIB:
        hp.items["lora_dropout"] = Recommendation(
            "lora_dropout", 0.0, dropout_reason(gib_text(extra)), item.guide)


def _fsdp_fit(info: Any, target: GpuTarget, replica: Fit, sharded_plan: Any, optim: str | None, dtype: str,
              notes: list[str]) -> tuple[tuple[Hyperparams, Fit], str] | None:
    """Full fine-tuning on several GPUs: the sharded plan and why, when FSDP is the better layout.

    A copy per GPU (DDP) wins when it fits with the same optimizer; FSDP wins when the copy does
    not fit at all, or fits only with 8-bit AdamW where the sharded model keeps standard AdamW.
    None (DDP stays) otherwise; a note says when even the sharded model does not fit.
    """
    count, standard = target.count, default_optim("full")
    if replica.fits and (optim or replica.optim == standard):
        return None
    hp, fit = sharded_plan()
    if not fit.fits:
        if not replica.fits:
            notes.append(f"not even sharded over {count} GPUs (FSDP): {fit.reasons[0]}")
        return None
    if replica.fits and fit.optim != standard:
        return None  # 8-bit AdamW either way: a copy per GPU is simpler and faster
    # Conservative until FSDP has run on GPUs: the whole fp32 model must fit one GPU, in case
    # accelerate's FSDP2 preparation moves the loaded model to the GPU before sharding it.
    load = 4 * info.total_params
    if load > fit.usable_bytes:
        notes.append(f"FSDP over {count} GPUs would fit once sharded, but the whole fp32 model may pass through "
                     f"one GPU while it is sharded ({load / GIB:.0f} GiB, over {fit.usable_bytes / GIB:.0f} GiB "
                     "usable); not planned until that is measured")
        return None
    opt = fit.optim
    floor = estimate_memory(info, "full", 1, fit.max_length, grad_ckpt=True, optim=opt, dtype=dtype)
    why = (f"a full copy per GPU needs {floor.required_bytes / GIB:.0f} GiB even at micro-batch 1 with "
           f"checkpointing ({opt}), over one GPU's {fit.usable_bytes / GIB:.0f} GiB usable" if not replica.fits
           else f"a full copy per GPU fits only with 8-bit AdamW ({replica.optim}); sharded, {opt} fits")
    reason = (f"{why}; weights, gradients and optimizer states sharded {count} ways: "
              f"{fit.estimate.required_bytes / GIB:.0f} GiB per GPU")
    return (hp, fit), reason


def _time_cost(plan: Plan, data_stats: dict | None) -> Any:
    """Time and cost from core.cost for a GPU it knows; None (with a note) otherwise."""
    from ftwiz.core.cost import estimate_time_cost, find_gpu_spec

    if plan.gpu.cpu_only or plan.n_examples is None:
        missing = [] if not plan.gpu.cpu_only else ["a GPU (--gpu NAME)"]
        missing += [] if plan.n_examples is not None else ["the number of examples (--examples N or --data FILE)"]
        plan.notes.append(f"time and cost: need {' and '.join(missing)}")
        return None
    spec = find_gpu_spec(plan.gpu.name, plan.gpu.total_bytes)
    if spec is None:
        plan.notes.append(f"time and cost: {plan.gpu.name} is not in the GPU table (give --gpu NAME)")
        return None
    per_example, measured = tokens_per_example(data_stats, plan.fit.max_length)
    if not measured:
        plan.notes.append("time: assumes every example is max_length tokens (no data given)")
    tokens = per_example * plan.n_examples * plan.hyperparams["num_train_epochs"]
    return estimate_time_cost(params=plan.model.total_params, tokens=tokens, gpu=spec.name,
                              num_gpus=plan.gpu.count, method=plan.method, grad_ckpt=plan.fit.grad_ckpt)


def mean_tokens(data_stats: dict | None) -> float | None:
    """Mean tokens per example from the data statistics (a word count x1.3 without a tokenizer)."""
    if not data_stats or not data_stats.get("mean"):
        return None
    return data_stats["mean"] * (TOKENS_PER_WORD if data_stats.get("estimate") else 1.0)


def tokens_per_example(data_stats: dict | None, max_length: int) -> tuple[float, bool]:
    """Mean tokens per example for the time estimate, and whether it rests on the data
    (False: no statistics, every example counted at max_length, an upper bound)."""
    if data_stats and data_stats.get("mean"):
        scale = TOKENS_PER_WORD if data_stats.get("estimate") else 1.0
        return min(data_stats["mean"] * scale, max_length), True
    return float(max_length), False


@dataclass
class ConfigTimeCost:
    """Time and cost of a RunConfig as edited, with what the token count rests on."""

    estimate: Any  # core.cost.CostEstimate
    tokens_per_example: float
    basis: str


def config_time_cost(config: Any, params: float, n_examples: int, data_stats: dict | None,
                     gpu: Any) -> ConfigTimeCost:
    """Time and cost of training `config` on `n_examples` examples on `gpu` (name or core.hardware
    GPU): the wizard's Settings line, recomputed on every edit. max_steps, when set, wins over
    epochs as it does in the Trainer. UserError for a GPU core.cost does not know."""
    from ftwiz.core.cost import estimate_time_cost

    t = config.training
    per_example, measured = tokens_per_example(data_stats, t.max_length)
    basis = (f"examples of ~{per_example:,.0f} tokens on average" if measured
             else "upper bound: every example counted at max_length")
    if t.max_steps > 0:
        examples = t.max_steps * t.per_device_train_batch_size * t.gradient_accumulation_steps
        basis += f", max_steps {t.max_steps}"
    else:
        examples = n_examples * t.num_train_epochs
    estimate = estimate_time_cost(params=params, tokens=examples * per_example, gpu=gpu,
                                  method=config.method, grad_ckpt=t.gradient_checkpointing)
    return ConfigTimeCost(estimate, per_example, basis)
