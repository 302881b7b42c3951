"""Push a run's adapter (or merged model) to the Hugging Face Hub with a model card.

The token is huggingface_hub's own: HF_TOKEN, or what `hf auth login` stored. ftwiz passes it
to huggingface_hub and writes it nowhere (not in the card, not in the run directory). One
commit holds the model files and README.md (the card: base model, data, hyperparameters,
final losses, the before/after score, the command to reproduce).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ftwiz.core.errors import UserError
from ftwiz.core.runs import RunDir

SKIP_FILES = frozenset({"training_args.bin", "README.md"})
"""Left out of the upload: the Trainer's pickled arguments, peft's placeholder card (ours replaces it)."""


REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
"""One side of ORG/NAME as the Hub accepts it: letters, digits, '-', '_', '.' (96 characters at most)."""
CARD_PREVIEW_LINES = 8


def check_repo_id(repo_id: str, field: str = "push --repo") -> str:
    """ORG/NAME, stripped; otherwise a one-line error naming the field."""
    repo_id = (repo_id or "").strip()
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(REPO_PART.match(part) for part in parts):
        shown = repo_id or "(empty)"
        raise UserError(f"{field} {shown}: use ORG/NAME (your user name or an organisation, then the model name; "
                        "letters, digits, - _ .)")
    return repo_id


@dataclass
class UploadPlan:
    """What a push sends: the model files (path in the repo, local path, bytes) and the card."""

    repo_id: str
    merged: bool
    folder: Path
    files: list[tuple[str, Path, int]]
    card: str

    @property
    def total_bytes(self) -> int:
        return sum(size for _, _, size in self.files) + len(self.card.encode("utf-8"))

    def card_preview(self, lines: int = CARD_PREVIEW_LINES) -> list[str]:
        """The card's first lines after its metadata header: the title and the table's start."""
        body = self.card.split("\n---\n", 1)[-1] if self.card.startswith("---") else self.card
        return [line for line in body.splitlines() if line.strip()][:lines]

    def summary_lines(self) -> list[str]:
        from ftwiz.core.export import size_text

        what = "merged model" if self.merged else f"{self.folder.name}/"
        rows = [f"{len(self.files) + 1} files, {size_text(self.total_bytes)}, from {what} ({self.folder}):"]
        rows += [f"  {name}  {size_text(size)}" for name, _, size in self.files]
        rows.append(f"  README.md (model card)  {size_text(len(self.card.encode('utf-8')))}")
        return rows


def upload_plan(run: RunDir, repo_id: str, merged: bool = False) -> UploadPlan:
    """The files and card push() would send to repo_id, without contacting the Hub."""
    folder = model_folder(run, merged)
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in SKIP_FILES)
    files = [(str(p.relative_to(folder)), p, p.stat().st_size) for p in paths]
    return UploadPlan(repo_id=repo_id, merged=merged, folder=folder, files=files,
                      card=model_card(run, repo_id, merged))


@dataclass
class Pushed:
    repo_id: str
    url: str
    files: list[str]
    private: bool


def _last(run: RunDir, kind: str) -> dict[str, Any] | None:
    found = None
    for event in run.iter_events():
        if event.get("type") == kind:
            found = event
    return found


def model_folder(run: RunDir, merged: bool) -> Path:
    config = run.read_config()
    if config.get("method") == "full":
        folder = run.adapter_dir
    elif merged:
        folder = run.merged_dir
        if not (folder / "config.json").exists():
            raise UserError(f"push --merged: run {run.name} has no merged model; run `ftwiz merge {run.name}` first")
    else:
        folder = run.adapter_dir
    if not folder.is_dir() or not any(folder.iterdir()):
        raise UserError(f"run {run.name}: nothing to push in {folder.name}/ (state {run.state()})")
    return folder


def model_card(run: RunDir, repo_id: str, merged: bool) -> str:
    """README.md for the Hub: metadata header, then what a reader needs to trust and rerun it."""
    config = run.read_config()
    model = config.get("model") or {}
    data = config.get("data") or {}
    training = config.get("training") or {}
    lora = config.get("lora") or {}
    method = config.get("method", "lora")
    base = model.get("name_or_path", "unknown")
    adapter = method != "full" and not merged
    started = _last(run, "started") or {}
    finished = _last(run, "finished") or {}
    evaluation = _last(run, "eval") or {}
    from ftwiz.core.engine.model_source import model_source

    hub_id = model_source(base)
    header = {
        # The Hub links base_model to its page: a Hub id only, never a local directory.
        **({} if Path(hub_id).expanduser().exists() else {"base_model": hub_id}),
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": "text-generation",
        "tags": list(dict.fromkeys(["ftwiz", "sft", method] + (["lora"] if method != "full" else []))),
    }
    data_name = Path(str(data.get("path", "?"))).name if Path(str(data.get("path", ""))).exists() else data.get("path")
    rows = [
        ("Base model", f"`{base}`"),
        ("Method", method + (" (adapter)" if adapter else " (merged into the base)" if merged else "")),
        ("Data", f"`{data_name}`" + (f", {started['data_format']} format" if started.get("data_format") else "")
         + (f", {started['train_examples']} training / {started.get('eval_examples', 0)} held-out examples"
            if started.get("train_examples") else "")),
        ("Steps", str(finished.get("step", "?"))),
        ("Final training loss", _num(finished.get("final_loss"))),
        ("Final eval loss", _num(evaluation.get("eval_loss"))),
    ]
    hyper = {k: training.get(k) for k in ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                                          "gradient_accumulation_steps", "max_length", "lr_scheduler_type",
                                          "warmup_ratio", "weight_decay", "seed") if k in training}
    if method != "full":
        hyper.update({f"lora_{k}" if not k.startswith("lora") else k: lora.get(k)
                      for k in ("r", "lora_alpha", "lora_dropout", "target_modules") if k in lora})
    score = finished.get("demo_score") or {}
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# {repo_id.split('/')[-1]}", "",
             f"A {'LoRA adapter for' if adapter else 'fine-tune of'} `{base}`, trained with "
             "[ftwiz](https://pypi.org/project/ftwiz/) (transformers + peft + TRL).", "",
             "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if score.get("before") and score.get("after"):
        lines += [f"| Held-out score before → after | {json.dumps(score['before'])} → {json.dumps(score['after'])} |"]
    lines += ["", "## Hyperparameters", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in hyper.items()]
    if adapter:
        use = (f"from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
               f"base = AutoModelForCausalLM.from_pretrained({json.dumps(base)}, dtype=\"auto\")\n"
               f"model = PeftModel.from_pretrained(base, {json.dumps(repo_id)})\n"
               f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(repo_id)})")
    else:
        use = (f"from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
               f"model = AutoModelForCausalLM.from_pretrained({json.dumps(repo_id)}, dtype=\"auto\")\n"
               f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(repo_id)})")
    lines += ["", "## Use it", "", "```python", use, "```", "",
              "## Reproduce", "", "Save this as `config.yaml` (point `data.path` at your copy of the data), then run "
              "`pip install ftwiz && ftwiz train config.yaml`:", "",
              "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


def push(run: RunDir, repo_id: str, merged: bool = False, private: bool = False, api: Any = None) -> Pushed:
    """Create the repo (if needed) and upload the model files and the card in one commit."""
    from ftwiz.core.hub import hub_reachable

    repo_id = check_repo_id(repo_id)
    plan = upload_plan(run, repo_id, merged)
    if not hub_reachable():
        raise UserError("push: the Hugging Face Hub is not reachable (offline, or HF_HUB_OFFLINE=1); try again online")
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    token = get_token()
    if not token:
        raise UserError("push: no Hugging Face token; set HF_TOKEN or run `hf auth login` (ftwiz never stores it)")
    api = api or HfApi()
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path, _ in plan.files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=plan.card.encode("utf-8")))
    folder = plan.folder
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
        api.create_commit(repo_id, operations=operations, repo_type="model", token=token,
                          commit_message=f"ftwiz: {'merged model' if merged else folder.name} of run {run.name}")
    except Exception as exc:  # noqa: BLE001 - HfHubHTTPError, network errors: one line for the user
        first = (str(exc).splitlines() or [type(exc).__name__])[0].replace(token, "***")
        raise UserError(f"push to {repo_id}: {first[:300]}") from None
    url = str(getattr(repo, "url", None) or f"https://huggingface.co/{repo_id}")
    return Pushed(repo_id=repo_id, url=url, files=[op.path_in_repo for op in operations], private=private)
