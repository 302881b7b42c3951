"""What planning needs to know about a model: its config and the shapes of its linear layers.

Shapes and the exact parameter count come from instantiating the model on the meta device
(no weights, no memory). That needs torch and transformers (seconds to import), so the result
is stored as a "shape manifest": the bundled catalog ships them precomputed
(core/catalog/*.json, written by `python -m ftwiz.core.catalog.build`), and a local directory or
Hub id is computed once and cached under $XDG_CACHE_HOME/ftwiz/shapes/. Reading a manifest needs
no torch, so `ftwiz params` and `ftwiz plan` answer at once.
"""

from __future__ import annotations

import hashlib
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ftwiz.core.errors import UserError

# Bump when the manifest layout or the way shapes are computed changes: old caches are ignored.
MANIFEST_VERSION = 1
CATALOG_DIR = Path(__file__).parent / "catalog"

# Queries and values, per architecture family: separate projections or a fused QKV layer.
_QUERY_NAMES = ("q_proj", "query", "q", "q_lin", "wq")
_VALUE_NAMES = ("v_proj", "value", "v", "v_lin", "wv")
_FUSED_QKV_NAMES = ("qkv_proj", "c_attn", "query_key_value", "Wqkv", "W_pack", "qkv", "wqkv")
_ATTENTION_SCOPE = re.compile(r"attn|attention", re.IGNORECASE)

TARGET_PRESETS: dict[str, str] = {
    "minimal": "queries and values (the original LoRA paper's choice)",
    "attention": "all attention projections (queries, keys, values, output)",
    "all-linear": "every linear layer except the output head (peft's 'all-linear')",
}

DEFAULT_TARGETS = "all-linear"
"""The preset ftwiz plans with: every linear projection of the decoder layers."""
TARGETS_REASON = (
    "every linear projection (q, k, v, o, gate, up, down or the model's own): the QLoRA paper (sec. 4: LoRA on "
    "all linear layers is needed to match full fine-tuning), Biderman et al. 2024 and LoRA Without Regret "
    "(2025) find it better than attention only; the guide's 'maximum' option (its example, q, k, v, o: "
    "targets 'attention')"
)


@dataclass(frozen=True)
class LinearGroup:
    """Linear layers (nn.Linear or GPT-2's Conv1D) sharing leaf name, parent and shape.

    `name` is the leaf name that peft's target_modules matches; `parent` is the enclosing
    module's leaf name ("self_attn", "mlp", ...), which tells attention from MLP layers that
    share a leaf name (GPT-2's c_proj). `count` is how many such layers the model has.
    """

    name: str
    in_features: int
    out_features: int
    count: int
    bias: bool
    parent: str = ""

    @property
    def is_attention(self) -> bool:
        return bool(_ATTENTION_SCOPE.search(self.parent))


@dataclass
class ModelInfo:
    """Everything planning reads about a model; built from a shape manifest, never from weights."""

    name: str
    source: str  # "catalog" | "local" | "hub"
    model_type: str
    architecture: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    total_params: int
    linear_groups: list[LinearGroup]
    config: dict[str, Any]
    gated: bool | None = None
    size_on_disk_bytes: int = 0  # the weights in bf16
    hub_id: str | None = None
    license: str | None = None
    note: str | None = None
    output_head: str | None = None  # the layer LoRA never targets (lm_head, embed_out, ...)
    embedding_params: int = 0
    base: bool | None = None
    """True: a base (pre-trained) checkpoint whose chat template's tokens were never trained; False:
    an instruct (post-trained) one; None: not known (a local or Hub model)."""
    instruct_name: str | None = None  # the catalog name of this model's instruct release, if any
    parameter_groups: list[LinearGroup] = field(default_factory=list)
    """Weights peft's 'all-linear' adapts that are not linear layers: with transformers 5, the fused
    expert weights and the router of Mixtral-style MoE layers (peft 0.21 targets them as
    parameters). `count` folds in the experts and peft's rank multiplier for fused projections, so
    count x rank x (in + out) is peft's count. Named "parent.name" (experts.gate_up_proj)."""

    def groups_named(self, target: str) -> list[LinearGroup]:
        """The groups a peft target_modules entry selects: a leaf name or "parent.leaf"."""
        return [g for g in self.linear_groups if target in (g.name, f"{g.parent}.{g.name}")] + [
            g for g in self.parameter_groups if target == f"{g.parent}.{g.name}"]

    def parameter_targets(self) -> list[str]:
        """The "parent.name" of each parameter group (only 'all-linear' reaches them)."""
        return list(dict.fromkeys(f"{g.parent}.{g.name}" for g in self.parameter_groups))

    def linear_names(self) -> list[str]:
        """Leaf names of the targetable linear layers, in model order, without repeats."""
        return list(dict.fromkeys(g.name for g in self.linear_groups))


# ---------------------------------------------------------------------------------------------
# Manifests: computed on the meta device, stored as JSON.


def compute_manifest(config: dict[str, Any]) -> dict[str, Any]:
    """Instantiate the model on the meta device and record every linear layer's shape.

    Slow (imports torch and transformers): call it once per config and store the result.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    config = dict(config)
    model_type = config.get("model_type")
    if not model_type:
        raise UserError("config.json: model_type: missing (cannot tell which architecture to build)")
    try:
        hf_config = AutoConfig.for_model(**config)
    except (ValueError, KeyError) as exc:
        raise UserError(
            f"config.json: model_type: {model_type!r} is not an architecture this transformers "
            f"knows ({str(exc).split('.')[0]}); upgrade transformers or pick a catalog model"
        ) from None
    except Exception as exc:  # transformers validates config fields with its own exception types
        detail = " ".join(line.strip() for line in str(exc).splitlines()[-1:])
        raise UserError(f"config.json: {detail[:300]}") from None
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config)
    except ValueError as exc:
        raise UserError(
            f"config.json: model_type: {model_type!r} has no causal language model class in "
            f"this transformers ({str(exc).splitlines()[0]})"
        ) from None

    head = model.get_output_embeddings()
    head_name = next((n for n, m in model.named_modules() if m is head), None) if head is not None else None
    groups: dict[tuple, int] = {}
    for path, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, Conv1D)) or path == head_name:
            continue
        parts = path.split(".")
        leaf, parent = parts[-1], (parts[-2] if len(parts) > 1 else "")
        if isinstance(module, Conv1D):  # GPT-2 stores the weight as (in, out)
            in_features, out_features = module.weight.shape
        else:
            in_features, out_features = module.in_features, module.out_features
        key = (leaf, parent, int(in_features), int(out_features), module.bias is not None)
        groups[key] = groups.get(key, 0) + 1
    parameter_groups = _peft_parameter_groups(model)

    embeddings = model.get_input_embeddings()
    tied = head is not None and head.weight is embeddings.weight
    text_config = hf_config.get_text_config()  # multimodal configs nest the language model's
    num_heads = text_config.num_attention_heads
    hidden = text_config.hidden_size
    summary = {
        "model_type": model_type,
        "architecture": type(model).__name__,
        "hidden_size": hidden,
        "num_layers": text_config.num_hidden_layers,
        "vocab_size": text_config.vocab_size,
        "intermediate_size": _intermediate_size(text_config, groups),
        "num_attention_heads": num_heads,
        "num_key_value_heads": getattr(text_config, "num_key_value_heads", None) or num_heads,
        "head_dim": getattr(text_config, "head_dim", None) or hidden // num_heads,
        "max_position_embeddings": getattr(text_config, "max_position_embeddings", 0) or 0,
        "tie_word_embeddings": bool(tied),
        "total_params": sum(p.numel() for p in model.parameters()),
        "embedding_params": embeddings.weight.numel(),
        "output_head": head_name.rsplit(".", 1)[-1] if head_name else None,
    }
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "config": config,
        "summary": summary,
        "linear_groups": [
            {"name": n, "parent": p, "in_features": i, "out_features": o, "bias": b, "count": c}
            for (n, p, i, o, b), c in groups.items()
        ],
    }
    if parameter_groups:  # MoE only: the catalog's dense models keep their manifests as they are
        manifest["parameter_groups"] = parameter_groups
    return manifest


def _peft_parameter_groups(model: Any) -> list[dict[str, Any]]:
    """What peft's 'all-linear' adapts beyond nn.Linear layers, asked of the installed peft itself.

    transformers 5 fuses Mixtral-style experts into 3-D parameters and makes the router a custom
    module; peft (0.18+) maps 'all-linear' onto them as target_parameters, with the rank doubled on
    the fused gate_up_proj. LoRA on a (experts, a, b) parameter trains rank x experts x (a + b).
    [] for every other model, or a peft without this conversion.
    """
    try:
        from peft import LoraConfig
        from peft.utils.transformers_weight_conversion import (
            convert_peft_config_for_transformers,
            get_model_conversion_mapping,
        )
    except ImportError:
        return []
    lora = LoraConfig(r=1, lora_alpha=1, target_modules="all-linear", task_type="CAUSAL_LM")
    try:
        convert_peft_config_for_transformers(lora, model=model, conversions=get_model_conversion_mapping(model))
    except Exception:  # noqa: BLE001 - a peft/transformers pairing that cannot convert: nothing beyond Linear
        return []
    targets = sorted(getattr(lora, "target_parameters", None) or [])
    found: dict[tuple, int] = {}
    for name, param in model.named_parameters():
        target = next((t for t in targets if name == t or name.endswith("." + t)), None)
        if target is None or param.dim() < 2:
            continue
        factor = next((r for pattern, r in (lora.rank_pattern or {}).items() if re.fullmatch(pattern, name)), 1)
        experts = int(param.shape[0]) if param.dim() == 3 else 1
        module, leaf = name[: -len(target) - 1], target
        parent = module.rsplit(".", 1)[-1]
        if "." in leaf:  # "gate.weight": the router module's own weight
            parent, leaf = leaf.split(".", 1)
        key = (leaf, parent, int(param.shape[-1]), int(param.shape[-2]), experts * factor)
        found[key] = found.get(key, 0) + 1
    return [{"name": n, "parent": p, "in_features": i, "out_features": o, "bias": False, "count": c * per}
            for (n, p, i, o, per), c in found.items()]


def _intermediate_size(hf_config: Any, groups: dict[tuple, int]) -> int:
    """The MLP width: from the config where it is named, else the widest non-attention layer."""
    for attr in ("intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim"):
        value = getattr(hf_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    widths = [o for (_, parent, _, o, _) in groups if not _ATTENTION_SCOPE.search(parent)]
    return max(widths, default=4 * hf_config.hidden_size)


def _info_from_manifest(manifest: dict[str, Any], name: str, source: str) -> ModelInfo:
    summary = manifest["summary"]
    groups = [LinearGroup(**g) for g in manifest["linear_groups"]]
    total = summary["total_params"]
    return ModelInfo(
        name=name,
        source=source,
        model_type=summary["model_type"],
        architecture=summary["architecture"],
        hidden_size=summary["hidden_size"],
        num_layers=summary["num_layers"],
        vocab_size=summary["vocab_size"],
        intermediate_size=summary["intermediate_size"],
        num_attention_heads=summary["num_attention_heads"],
        num_key_value_heads=summary["num_key_value_heads"],
        head_dim=summary["head_dim"],
        max_position_embeddings=summary["max_position_embeddings"],
        tie_word_embeddings=summary["tie_word_embeddings"],
        total_params=total,
        linear_groups=groups,
        parameter_groups=[LinearGroup(**g) for g in manifest.get("parameter_groups", [])],
        config=manifest["config"],
        gated=manifest.get("gated"),
        size_on_disk_bytes=2 * total,
        hub_id=manifest.get("hub_id"),
        license=manifest.get("license"),
        note=manifest.get("note"),
        output_head=summary.get("output_head"),
        embedding_params=summary.get("embedding_params", 0),
    )


def shapes_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ftwiz" / "shapes"


def cached_manifest(config: dict[str, Any]) -> dict[str, Any]:
    """The manifest for this config: from the cache, else computed once and cached."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    # "p": manifests now record peft's parameter targets (MoE experts); older cached ones lack them.
    key = hashlib.sha256(f"v{MANIFEST_VERSION}p:{canonical}".encode()).hexdigest()
    path = shapes_cache_dir() / f"{key}.json"
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("manifest_version") == MANIFEST_VERSION:
            return manifest
    except (OSError, ValueError):
        pass
    manifest = compute_manifest(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs speed next time
    return manifest


# ---------------------------------------------------------------------------------------------
# The catalog.


INSTRUCT_SUFFIX = "-instruct"
_INSTRUCT_ID = re.compile(r"-(instruct|it)\b", re.IGNORECASE)


def instruct_id(manifest: dict[str, Any]) -> str | None:
    """The Hub id of the instruct (post-trained) release beside a catalog entry's base checkpoint:
    an "-Instruct" / "-it" alias, or Qwen3's id without "-Base". None when the entry's own
    checkpoint is already post-trained or no instruct release is known."""
    hub_id = manifest.get("hub_id") or ""
    aliases = [a for a in manifest.get("aliases", []) if a != hub_id]
    if _INSTRUCT_ID.search(hub_id.split("/")[-1]) or (manifest.get("note") or "").find("post-trained") >= 0:
        return None
    if hub_id.endswith("-Base") and hub_id[: -len("-Base")] in aliases:
        return hub_id[: -len("-Base")]
    return next((a for a in aliases if _INSTRUCT_ID.search(a.split("/")[-1])), None)


def _catalog_index() -> dict[str, tuple[Path, str | None]]:
    """Catalog names and Hub ids (lower case) -> (manifest file, the Hub id to load: None for the
    entry's own; the instruct release for "<name>-instruct" and for an instruct alias)."""
    index: dict[str, tuple[Path, str | None]] = {}
    for path in sorted(CATALOG_DIR.glob("*.json")):
        manifest = json.loads(path.read_text())
        index[path.stem.lower()] = (path, None)
        instruct = instruct_id(manifest)
        if instruct:
            index[(path.stem + INSTRUCT_SUFFIX).lower()] = (path, instruct)
        for alias in manifest.get("aliases", []):
            index.setdefault(alias.lower(), (path, alias if alias == instruct else None))
    return index


def catalog_names() -> list[str]:
    """The bundled models, by the short names `--model` accepts: "<name>-instruct" beside a base
    checkpoint whose instruct release is known (same shapes, other weights)."""
    index = _catalog_index()
    return sorted({p.stem for p, _ in index.values()} | {p.stem + INSTRUCT_SUFFIX for p, hub in index.values() if hub})


def load_catalog_manifest(name: str) -> dict[str, Any]:
    found = _catalog_index().get(name.lower())
    if found is None:
        raise UserError(f"--model: {name!r} is not in the catalog (known: {', '.join(catalog_names())})")
    return json.loads(found[0].read_text())


# ---------------------------------------------------------------------------------------------
# Loading a model spec.

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_model_info(spec: str | os.PathLike) -> ModelInfo:
    """A local directory with config.json, a catalog name (or its Hub id), or a Hub id.

    Planning never needs the weights: only config.json is read (or fetched from the Hub).
    """
    text = os.fspath(spec).strip()
    if not text:
        raise UserError("--model: empty (give a local directory, a catalog name or a Hub id)")
    path = Path(text).expanduser()
    if path.exists():
        return _load_local(path)
    index = _catalog_index()
    if text.lower() in index:
        path, hub = index[text.lower()]
        manifest = json.loads(path.read_text())
        instruct = instruct_id(manifest)
        info = _info_from_manifest(manifest, path.stem + (INSTRUCT_SUFFIX if hub else ""), "catalog")
        info.hub_id = hub or info.hub_id
        info.base = hub is None and instruct is not None
        info.instruct_name = None if hub or not instruct else path.stem + INSTRUCT_SUFFIX
        return info
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise UserError(f"--model: {text}: no such directory")
    if _HUB_ID.match(text):
        return _load_hub(text)
    close = difflib.get_close_matches(text.lower(), list(index), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else "see the catalog with `ftwiz explore --help`"
    raise UserError(f"--model: {text!r} is not a local directory, a catalog name or a Hub id; {hint}")


def _read_config(path: Path, label: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{label}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise UserError(f"{label}: cannot read ({exc.strerror})") from None
    if not isinstance(config, dict):
        raise UserError(f"{label}: expected a JSON object")
    return config


def _load_local(path: Path) -> ModelInfo:
    config_path = path / "config.json" if path.is_dir() else path
    if not config_path.is_file():
        raise UserError(f"--model: {path}: no config.json in this directory")
    config = _read_config(config_path, str(config_path))
    try:
        manifest = cached_manifest(config)
    except UserError as exc:
        raise UserError(str(exc).replace("config.json:", f"{config_path}:", 1)) from None
    return _info_from_manifest(manifest, str(path), "local")


def _load_hub(repo_id: str) -> ModelInfo:
    """Only config.json: from the Hub cache when there, else fetched; offline and uncached is a user error."""
    from huggingface_hub import constants, hf_hub_download

    from ftwiz.core.hub import hub_reachable
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        try:
            config_path = hf_hub_download(repo_id, "config.json", local_files_only=True)
        except LocalEntryNotFoundError:
            if constants.HF_HUB_OFFLINE or not hub_reachable():
                raise
            config_path = hf_hub_download(repo_id, "config.json")
    except GatedRepoError:
        raise UserError(
            f"--model: {repo_id} is gated on the Hub: accept its license on huggingface.co and "
            f"run `hf auth login`, or pass a local directory holding its config.json"
        ) from None
    except RepositoryNotFoundError:
        raise UserError(f"--model: {repo_id}: no such model on the Hub (or it is private)") from None
    except LocalEntryNotFoundError:
        raise UserError(
            f"--model: {repo_id}: offline (or the Hub is unreachable) and its config.json is not in "
            f"the Hub cache; pass a local directory holding config.json, or a catalog name"
        ) from None
    except EntryNotFoundError:
        raise UserError(f"--model: {repo_id}: the repository has no config.json") from None
    except (HFValidationError, OSError) as exc:
        raise UserError(f"--model: {repo_id}: cannot fetch config.json ({str(exc).splitlines()[0]})") from None
    config = _read_config(Path(config_path), f"{repo_id}/config.json")
    manifest = cached_manifest(config)
    info = _info_from_manifest(manifest, repo_id, "hub")
    info.hub_id = repo_id
    return info


# ---------------------------------------------------------------------------------------------
# LoRA targets.


def preset_targets(info: ModelInfo, preset: str) -> list[str]:
    """The target_modules entries for a preset, as peft matches them (leaf or parent.leaf)."""
    attention = [g for g in info.linear_groups if g.is_attention]
    if preset == "all-linear":
        return info.linear_names() + info.parameter_targets()
    if preset == "minimal":
        names = set(info.linear_names())
        fused = [n for n in _FUSED_QKV_NAMES if n in names]
        picked = [n for n in _QUERY_NAMES if n in names][:1] + [n for n in _VALUE_NAMES if n in names][:1]
        if len(picked) == 2:
            return picked
        if fused:
            return fused[:1]
        # Unknown naming: fall back to every attention projection.
        preset = "attention"
    if preset == "attention":
        shared = {g.name for g in info.linear_groups if not g.is_attention}
        targets = [f"{g.parent}.{g.name}" if g.name in shared else g.name for g in attention]
        targets = list(dict.fromkeys(targets))
        if not targets:
            raise UserError(
                f"--targets: {preset}: found no attention layers in {info.name}; "
                f"name the modules (available: {', '.join(info.linear_names())})"
            )
        return targets
    raise UserError(f"--targets: unknown preset {preset!r} (allowed: {', '.join(TARGET_PRESETS)})")


def resolve_targets(info: ModelInfo, targets: str | Iterable[str]) -> list[str]:
    """A preset name, a comma list or a list -> peft target_modules names, checked."""
    if isinstance(targets, str):
        if targets.strip() in TARGET_PRESETS:
            return preset_targets(info, targets.strip())
        items = [t.strip() for t in targets.split(",")]
    else:
        items = [str(t).strip() for t in targets]
    items = [t for t in items if t]
    if not items:
        raise UserError(f"--targets: empty (allowed: {', '.join(TARGET_PRESETS)} or module names)")
    resolved: list[str] = []
    available = ", ".join(info.linear_names())
    for item in items:
        if item in TARGET_PRESETS:
            resolved.extend(preset_targets(info, item))
            continue
        if info.output_head and item == info.output_head:
            raise UserError(
                f"--targets: {item} is the output head; LoRA never targets it (available: {available})"
            )
        if not info.groups_named(item):
            raise UserError(f"--targets: {item}: no such linear module in {info.name} (available: {available})")
        resolved.append(item)
    return list(dict.fromkeys(resolved))


def targeted_groups(info: ModelInfo, targets: list[str]) -> list[LinearGroup]:
    """Each linear group selected by the (resolved) targets, once."""
    selected: dict[LinearGroup, None] = {}
    for target in targets:
        for group in info.groups_named(target):
            selected[group] = None
    return list(selected)
