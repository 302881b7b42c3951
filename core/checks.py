"""Checks of a run config against the model and this machine, before anything is written.

The config loader checks each field alone (types, ranges). These checks need the model's
config.json and the hardware: a sequence longer than the model's context, a method the
hardware cannot run, weights that would run code when loaded. Each failure is a UserError
that names the field and says what would work; softer findings come back as warnings.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from ftwiz.core.config import RunConfig
from ftwiz.core.errors import UserError
from ftwiz.core.hardware import Hardware
from ftwiz.core.memory import OPTIMIZERS, minimum_memory
from ftwiz.core.models import ModelInfo, resolve_targets

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
FTWIZ_ATTENTION = ("varlen",)
"""ftwiz's own attention implementations (core/engine/attention.py registers them with transformers
in the run process; planning may not import the engine, so the name is repeated here and a test
keeps the two equal)."""
REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json",
                     "generation_config.json")
"""JSON files of a model directory whose `auto_map` makes transformers import the model's own code."""


def _choices(value: str, allowed: list[str], field: str, what: str) -> str:
    close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(allowed[:12]) + (", ..." if len(allowed) > 12 else "")
    return f"{field}: {str(value)[:60]!r} is not {what} of the installed libraries; {hint}allowed: {shown}"


def check_library_fields(config: RunConfig) -> None:
    """Fields the run hands to transformers / TRL / peft that the config model leaves as free
    strings, checked against the installed libraries' own lists (the Trainer would only refuse
    them after the run had started)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    t = config.training
    optimizers = [o.value for o in OptimizerNames]
    if t.optim not in optimizers:
        raise UserError(_choices(t.optim, optimizers, "training.optim", "an optimizer"))
    schedulers = [s.value for s in SchedulerType]
    if t.lr_scheduler_type not in schedulers:
        raise UserError(_choices(t.lr_scheduler_type, schedulers, "training.lr_scheduler_type", "a scheduler"))
    attention = ["eager", "sdpa", *sorted(set(ALL_ATTENTION_FUNCTIONS.valid_keys()) - {"sdpa"}), *FTWIZ_ATTENTION]
    if config.model.attn_implementation not in attention:
        raise UserError(_choices(config.model.attn_implementation, attention, "model.attn_implementation",
                                 "an attention implementation"))


def check_local_model(config: RunConfig) -> None:
    """A local model directory holds loadable weights and a tokenizer, its safetensors index
    points inside it, and no file asks for remote code unless model.trust_remote_code is on."""
    path = Path(config.model.name_or_path).expanduser()
    if not path.is_dir():
        return
    try:
        files = {p.name for p in path.iterdir() if p.is_file()}
    except OSError as exc:
        raise UserError(f"model.name_or_path: {path}: cannot read it ({exc.strerror})") from None
    weights = [f for f in files if f.endswith(".safetensors")]
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES) and f != "training_args.bin"]
    if not weights and not pickles:
        raise UserError(
            f"model.name_or_path: {path} has no weights (no *.safetensors file); "
            "point it at a complete model directory (config.json, tokenizer and weights)"
        )
    root = path.resolve()
    for index_name in sorted(f for f in files if f.endswith(".index.json")):
        try:
            index = json.loads((path / index_name).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise UserError(f"model.name_or_path: {path / index_name}: not readable JSON ({str(exc)[:80]})") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise UserError(f"model.name_or_path: {path / index_name}: no weight_map")
        for shard in sorted({str(v) for v in weight_map.values()}):
            target = (path / shard).resolve()
            if target.parent != root and root not in target.parents:
                raise UserError(
                    f"model.name_or_path: {path / index_name}: shard {shard[:80]!r} lies outside the model directory"
                )
            if not target.is_file():
                raise UserError(f"model.name_or_path: {path / index_name}: shard {shard[:80]!r} is missing")
    if not config.model.trust_remote_code:
        for name in REMOTE_CODE_FILES:
            if name not in files:
                continue
            try:
                data = json.loads((path / name).read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                continue
            if isinstance(data, dict) and data.get("auto_map"):
                raise UserError(
                    f"model.trust_remote_code: {path / name} asks for the model's own Python code (auto_map); "
                    "it runs with your permissions when loaded. Set model.trust_remote_code: true only if you "
                    "trust its author"
                )


def check_model_files(config: RunConfig) -> list[str]:
    """Refuse pickle weights and remote code unless the config opts in; return warnings."""
    warnings = []
    path = Path(config.model.name_or_path).expanduser()
    if path.is_dir():
        files = [p.name for p in path.iterdir() if p.is_file()]
        safetensors = [f for f in files if f.endswith(".safetensors")]
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES) and f != "training_args.bin"]
        if pickles and not safetensors and not config.model.allow_pickle:
            raise UserError(
                f"model.allow_pickle: {path} holds only pickle weights ({', '.join(sorted(pickles)[:3])}), "
                "which can run arbitrary code when loaded; convert them to safetensors or set "
                "model.allow_pickle: true if you trust their source"
            )
        try:
            model_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            model_config = {}
        if isinstance(model_config, dict) and model_config.get("auto_map") and not config.model.trust_remote_code:
            raise UserError(
                f"model.trust_remote_code: {path} ships its own Python code (auto_map in config.json); "
                "it runs with your permissions when loaded. Set model.trust_remote_code: true only if "
                "you trust its author"
            )
    if config.model.trust_remote_code:
        warnings.append(
            f"model.trust_remote_code is on: Python code from {config.model.name_or_path} will run "
            "with your permissions (it can read your files and tokens)"
        )
    if config.model.allow_pickle:
        warnings.append("model.allow_pickle is on: pickle weights can run code when loaded")
    return warnings


def check_against_model(config: RunConfig, max_position_embeddings: int | None) -> None:
    """The sequence length must fit the model's context window."""
    if max_position_embeddings and config.training.max_length > max_position_embeddings:
        raise UserError(
            f"training.max_length: {config.training.max_length} is longer than the model's context "
            f"({max_position_embeddings} tokens, max_position_embeddings); use at most {max_position_embeddings}"
        )


def check_against_hardware(config: RunConfig, hardware: Hardware) -> None:
    """The method and precision must be ones this machine can run."""
    t = config.training
    if hardware.cpu_only:
        if config.method == "qlora":
            raise UserError(
                "method: qlora needs an NVIDIA GPU (bitsandbytes 4-bit kernels) and this machine has "
                "none; use method: lora (slow on a CPU, fine for the demo)"
            )
        if t.fp16 or t.bf16:
            field = "training.fp16" if t.fp16 else "training.bf16"
            raise UserError(f"{field}: mixed precision needs a GPU; on the CPU set it to false (fp32)")
        return
    if t.bf16 and not all(gpu.bf16 for gpu in hardware.gpus):
        names = ", ".join(sorted({g.name for g in hardware.gpus if not g.bf16}))
        raise UserError(f"training.bf16: {names} has no bf16 support (compute capability < 8.0); use fp16: true")


def _targets(config: RunConfig, info: ModelInfo) -> list[str]:
    try:
        return resolve_targets(info, config.lora.target_modules)
    except UserError as exc:
        raise UserError(str(exc).replace("--targets:", "lora.target_modules:")) from None


def check_expert_dropout(config: RunConfig, info: ModelInfo, targets: list[str]) -> None:
    """peft's LoRA on fused expert weights (ParamWrapper, Mixtral-style MoE under 'all-linear')
    takes no dropout: refuse before the run instead of failing in get_peft_model."""
    experts = [t for t in targets if t in info.parameter_targets()]
    if experts and config.lora.lora_dropout:
        raise UserError(
            f"lora.lora_dropout: {config.lora.lora_dropout}: {info.name}'s targets include its fused expert weights "
            f"({', '.join(experts)}), which peft adapts without dropout; set lora.lora_dropout: 0"
        )


def check_fits(config: RunConfig, info: ModelInfo, hardware: Hardware) -> None:
    """Refuse a method that cannot fit even at micro-batch 1 with checkpointing.

    Anything above that floor is left to the engine's OOM recovery (halve the micro-batch).
    """
    if hardware.cpu_only:
        return
    # Under FSDP each GPU holds 1/N of the model (N: the GPUs here; a launch on more machines shards further).
    shards = config.training.shards(len(hardware.gpus))
    floor = minimum_memory(
        info,
        config.method,
        seq_len=config.training.max_length,
        rank=config.lora.r,
        targets=_targets(config, info) if config.method != "full" else (),
        optim=config.training.optim if config.training.optim in OPTIMIZERS else None,
        qlora_upcast=config.quantization.upcast,
        dtype=config.training.precision,
        shards=shards,
    )
    smallest = min(gpu.memory_total_bytes or 0 for gpu in hardware.gpus)
    if floor.peak_bytes > smallest:
        hint = {"full": "use method: lora or qlora", "lora": "use method: qlora"}.get(
            config.method, "use a smaller model or a shorter training.max_length"
        )
        if config.method == "full" and shards == 1 and len(hardware.gpus) > 1:
            hint = "set training.fsdp: true to shard it over the GPUs, or " + hint
        sharded = f" sharded over {shards} GPUs (FSDP)" if shards > 1 else ""
        raise UserError(
            f"method: {config.method} of {info.name} needs at least {floor.peak_gib:.1f} GiB{sharded} even at "
            f"micro-batch 1 with checkpointing, more than this GPU's {smallest / 2**30:.0f} GiB; {hint}"
        )


def check_disk(config: RunConfig, info: ModelInfo, hardware: Hardware) -> None:
    """Refuse a run whose checkpoints, result and merged model cannot fit the free disk where runs
    are written (a full disk mid-run costs the steps since the last checkpoint)."""
    from ftwiz.core.disk import HEADROOM, plan_disk
    from ftwiz.core.parameters import trainable_lora_params

    free = hardware.disk_free_bytes
    if free is None:
        return
    t = config.training
    trainable = info.total_params if config.method == "full" else trainable_lora_params(
        info, config.lora.r, _targets(config, info))

    def needs(limit: int) -> int:
        return plan_disk(config.method, info.total_params, trainable, t.optim, save_total_limit=limit,
                         evaluates=config.data.eval_fraction > 0, merge=config.output.merge).total_bytes

    usable = free * HEADROOM
    if needs(t.save_total_limit) <= usable:
        return
    fix = ("set training.save_total_limit: 1 or free disk space" if t.save_total_limit > 1 and needs(1) <= usable
           else "free disk space, or choose a smaller model or LoRA")
    merged = ", merged model" if config.output.merge else ""
    raise UserError(f"training.save_total_limit: {t.save_total_limit}: the run writes about "
                    f"{needs(t.save_total_limit) / 2**30:.1f} GiB (checkpoints, result{merged}), over 90% of the "
                    f"{free / 2**30:.1f} GiB free at {hardware.disk_path}; {fix}")


def check_launch(config: RunConfig, gpu_count: int) -> None:
    """What the run needs from the GPUs it is launched on (checked again on each start and resume)."""
    if config.training.fsdp and gpu_count < 2:
        raise UserError(
            f"training.fsdp: FSDP shards the model over several GPUs and this launch has {gpu_count}; "
            "set training.fsdp: false (one GPU), or start the run where several GPUs are visible"
        )


def preflight(config: RunConfig, hardware: Hardware, info: ModelInfo | None) -> list[str]:
    """All checks a run must pass before its directory is created; returns warnings to show."""
    if info is not None:
        check_against_model(config, info.max_position_embeddings)
        if config.method != "full":
            check_expert_dropout(config, info, _targets(config, info))
    check_against_hardware(config, hardware)
    if info is not None:
        check_fits(config, info, hardware)
        check_disk(config, info, hardware)
    check_library_fields(config)
    from ftwiz.core.tracking import check_tracker

    check_tracker(config.training.report_to)
    warnings = check_model_files(config)
    check_local_model(config)
    return warnings


def model_available(name_or_path: str, hub_id: str | None = None, reachable: bool | None = None) -> bool:
    """The model can be loaded from here: a local directory, already in the Hugging Face cache
    (under `hub_id`, a catalog model's repository), or the Hub answers (`reachable`, asked when None)."""
    if Path(name_or_path).expanduser().is_dir():
        return True
    source = hub_id or name_or_path
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(source, "config.json"), str):
            return True
    except Exception:  # noqa: BLE001 - not a repo id: the Hub would not have it either
        return False
    if reachable is None:
        from ftwiz.core.hub import hub_reachable

        reachable = hub_reachable()
    return reachable


def blocking_problems(
    config: RunConfig, hardware: Hardware | None, info: ModelInfo | None, *, hub: bool | None = None
) -> list[str]:
    """Every reason this run cannot work here, each saying what to do (empty: it can start).

    The same checks as the engine's pre-flight, collected instead of stopping at the first, plus
    what the pre-flight cannot see from the run process: a model that is neither on this machine
    nor downloadable (offline), and a model too big for this machine's RAM when there is no GPU.
    `hub`: whether the Hub answers (asked when None and the model is not here).
    """
    from ftwiz.core import demo

    problems: list[str] = []

    def collect(check, *args) -> None:
        try:
            check(*args)
        except UserError as exc:
            problems.append(str(exc))

    if info is not None:
        collect(check_against_model, config, info.max_position_embeddings)
        if config.method != "full":
            collect(_targets, config, info)
    if hardware is not None:
        collect(check_against_hardware, config, hardware)
        if info is not None and not problems:
            collect(check_fits, config, info, hardware)
        if info is not None and hardware.cpu_only and not problems:
            from ftwiz.core.memory import estimate_for, gib_text

            need = estimate_for(config, info, hardware).peak_bytes
            if hardware.ram_available_bytes and need > hardware.ram_available_bytes:
                problems.append(
                    f"does not fit: {config.method} of {info.name} needs ~{gib_text(need)} "
                    f"({config.training.precision}, no GPU here) and this machine has "
                    f"{gib_text(hardware.ram_available_bytes)} of RAM free; train it on a machine with an "
                    "NVIDIA GPU (save this config, then `ftwiz train FILE` there), or pick the demo model"
                )
    collect(check_library_fields, config)
    collect(check_model_files, config)
    collect(check_local_model, config)
    is_demo_model = Path(config.model.name_or_path).name == f"demo-model-v{demo.DEMO_VERSION}"
    hub_id = getattr(info, "hub_id", None)
    if not is_demo_model and not model_available(config.model.name_or_path, hub_id, hub):
        problems.append(
            f"model not available: {config.model.name_or_path} is not on this machine and the Hugging Face "
            "Hub cannot be reached (offline); download it where there is network "
            "(`hf download ID`, then copy the folder here) and give its folder as the model"
        )
    return problems
