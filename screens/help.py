"""F1 / ?: what this step decides and what its fields mean, then the words of fine-tuning,
explained for a software engineer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP_TEXT = """\
# Fine-tuning in plain words

**Keys:** `ctrl+n` next step · `esc` back · `F1` or `?` this help · `ctrl+p` command palette
(jump to any step, change theme) · `ctrl+q` quit. Quitting never stops a training run:
start `ftwiz` again (or `ftwiz attach NAME`) to come back to it.

## LoRA
Think of LoRA as **monkey-patching a frozen model with a small learned diff**. The original
weights `W` never change; beside some of its matrices LoRA adds two thin matrices `A` and `B`
and the layer computes `W·x + B·A·x`. Only `A` and `B` are trained, usually well under 1% of
the parameters, so the gradients and optimizer state are tiny and the result (the *adapter*)
is a file of a few MB that you load on top of the unchanged base model.

## Rank (`r`)
The width of that diff: `A` is `r × in`, `B` is `out × r`. A higher rank lets the patch express
more, costs more parameters, and rarely helps beyond 16–64 for a style or format task.
Start at 8–16; go up when the task is large or very different from what the model knows.

## Alpha (`lora_alpha`)
A volume knob: the patch's output is scaled by `alpha / r`. The usual default is
`alpha = 2 × r`, so changing the rank does not silently change the learning rate.

## Targets (`target_modules`)
Which layers get a patch. *minimal*: queries and values; *attention*: q, k, v, o;
*all-linear*: the MLP as well. More targets = more capacity, more memory.

## QLoRA, NF4 and double quantization
QLoRA is LoRA on a base model stored in **4 bits** instead of 16: an 8B model drops from ~16 GB
to ~5 GB, so it fits a smaller GPU. **NF4** ("normal float 4") is a 4-bit format whose 16 levels
are placed where neural-network weights actually cluster, so it loses less than plain 4-bit
integers. **Double quantization** also compresses the per-block scale factors (~0.4 bit per
weight saved). The patch itself still trains in 16 bits. Cost: ~20–40% slower; quality close to
LoRA's (the QLoRA paper matched 16-bit fine-tuning; the guide says ~96% of full, ~98% for LoRA).

## Gradient checkpointing
Training keeps every layer's intermediate results for the backward pass; that is most of the
memory for long sequences. Checkpointing keeps only a few and **recomputes** the rest when
needed: much less memory, ~30% more time. A classic space-for-time trade.

## Micro-batch vs gradient accumulation
The **micro-batch** (`per_device_train_batch_size`) is how many examples go through the GPU at
once: it sets the memory. **Gradient accumulation** adds up the gradients of several
micro-batches before one optimizer step. Effective batch = micro-batch × accumulation.
4 × 4 and 16 × 1 learn the same way; the first needs less memory and is a bit slower.

## Learning rate
How big each update step is. LoRA tolerates higher rates (1e-4 to 3e-4) than full fine-tuning
(1e-5 to 2e-5). Too high: the loss jumps around or explodes. Too low: nothing changes. A
*warmup* ramps it up over the first few percent of steps; a *cosine* schedule lowers it toward
the end.

## Epochs
How many times the training goes over the whole dataset. Small datasets need more (3–5), big
ones fewer (1–2). Too many and the model memorises your examples (*overfitting*): the training
loss keeps falling while the eval loss rises.

## Packing
Short examples are concatenated into full-length sequences so no compute is wasted on padding.
Faster with many short examples; ftwiz keeps it off by default because it mixes examples.

## Completion-only loss
The model is graded only on the **answer** tokens, not on re-typing your prompt. In the data
preview the prompt tokens that carry no loss are shown dimmed.

## Full fine-tuning
Every weight is trained: best quality, but it needs ~16 bytes per parameter for weights,
gradients and optimizer state (an 8B model needs far more than one 80 GB GPU).
"""


STEP_HELP: dict[str, str] = {
    "welcome": """\
# This step: Hardware
**What it decides:** whether this machine can train at all, and which model sizes and methods
fit its GPU. Nothing here is a choice yet; it is what the later steps plan against.

- **GPU table**: every GPU NVML reports, its memory and what is free now, driver and CUDA
  versions, and **bf16** (Ampere or newer): without it training runs in fp16, which needs loss
  scaling and is a little less stable.
- **What this hardware can train**: the smallest memory each method needs for four common model
  sizes, at micro-batch 1, 1024 tokens, LoRA rank 16 on every linear layer, checkpointing on, bf16. The
  guide's rule of thumb: full fine-tuning needs ~16 bytes per parameter, LoRA ~2 (the bf16
  weights), QLoRA ~0.7 (4-bit weights). The Model and Settings steps give the figure for your
  own model and settings, under the same assumptions where they say so.
- **Demo (`d`)**: a tiny model trained on the CPU in about a minute: the whole path, no GPU.
""",
    "decide": """\
# This step: Method
**What it decides:** whether to fine-tune at all, and with which method. The guide's order:
try prompt engineering, then few-shot prompting; fine-tune when those are not good enough and
you have examples of the behaviour you want.

- **Questions**: each answer re-ranks the table at once. Unanswered questions are assumed
  (the line under the table says how), so answer the ones you know.
- **The ranking**: cost and time bands from the guide; quality against full fine-tuning
  (LoRA ~98%, QLoRA ~96%). Memory here is rough, from the model size alone (the line under
  the method says what it assumes); the Model step gives the chosen model's own figure.
- **Next** takes the highlighted method; prompting and continued pre-training need no run from ftwiz.
""",
    "model": """\
# This step: Model
**What it decides:** the base model you start from. Type to search the catalog (up/down move
the highlight, enter takes it), or give a Hub id (`org/name`) or a local folder.

- **Memory per method**: what must fit on the GPU for this model, at the assumptions shown
  under the table; "too big" means pick QLoRA, a smaller model, or a bigger GPU.
- **LoRA can patch**: the layers each targets preset covers and what it trains at rank 16.
- **Gated models** need their license accepted on the Hub and `hf auth login` (or `HF_TOKEN`).
- **trust_remote_code** runs Python shipped with the model on this machine: leave it off unless
  the model needs it and you trust its author.
""",
    "data": """\
# This step: Data
**What it decides:** the examples the model learns from. A JSONL/JSON/CSV/Parquet file, a Hub
dataset id, or `demo` (`ctrl+o`).

- **Formats**: prompt/completion, alpaca (instruction/input/output), chat (`messages`),
  sharegpt, or plain text. Every problem is listed as file:line.
- **Lengths**: in tokens of the model's own tokenizer when it is on this machine, else in words.
  The suggested max length covers 99% of rows; longer rows are cut.
- **The example**: one row exactly as the model sees it; dimmed text carries no loss (the
  model is graded on the answer, not on re-typing your prompt).
""",
    "settings": """\
# This step: Settings
**What it decides:** the hyperparameters. Each starts at the guide's recommendation for your
data size and GPU; the line under the table gives the focused field's reason in full.

- **learning rate**: LoRA 1e-4 to 2e-4; too high and the loss jumps, too low and nothing changes.
- **epochs**: more for small datasets (3-5), fewer for big ones (1-2); too many memorise.
- **micro-batch × grad. accumulation** = the effective batch; the micro-batch sets the memory.
- **max length**: from your data; longer costs memory and time.
- **gradient checkpointing**: much less memory for ~30% more time.
- **LoRA rank, alpha, dropout, targets**: see the glossary below.
- **Memory**: the bar is this config's estimate on this GPU, with its assumptions in the title;
  the line under it gives the Hardware and Model steps' figure and what this one assumes
  differently (Review repeats both, from the same estimate).
""",
    "review": """\
# This step: Review
**What it decides:** nothing new: it shows the whole config and checks that it can work here.

- **Problems listed in red** block the start (does not fit, no GPU for QLoRA, model not
  available offline): go back (esc) and change what they name. You can still save the config.
- **Memory**: the Settings step's figure and assumptions, from the same estimate.
- **Save (`ctrl+s`)**: a YAML file for `ftwiz train FILE` later or on another machine; an
  existing file is never overwritten without asking.
- **Start training**: the run gets its own process; quitting ftwiz leaves it training. `ctrl+r`
  lists runs from any screen.
""",
    "train": """\
# This screen: the training dashboard
It follows the run's directory; the run is its own process. Closing this screen or ftwiz
leaves it training.

- **Loss**: training loss should fall; evaluation loss (held-out examples) should fall with it.
  Evaluation loss rising while training loss falls is overfitting: fewer epochs, more data or
  a lower learning rate.
- **s** stops the run gracefully (a checkpoint, then exit); a second **s** asks, then kills.
  **r** resumes a stopped or failed run from its last checkpoint. **d** opens the results.
""",
    "runs": """\
# This screen: runs
Every run in the runs directory, newest first. **enter** opens one (the live dashboard, or the
results when done), **r** resumes a stopped or failed run, **s** stops a live one, **x** deletes
a run that is not live (after asking). Esc goes back.
""",
    "done": """\
# This screen: results
Where the adapter is, before/after answers on held-out examples, and the code to use it.
**m** merges base and adapter into one model for serving.
""",
}
"""What each screen decides and what its fields mean, shown above the glossary."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,f1,question_mark", "close", "Close help"),
    ]

    def __init__(self, step: str | None = None) -> None:
        super().__init__()
        self.step = step

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            section = STEP_HELP.get(self.step or "")
            yield Markdown((section + "\n---\n\n" if section else "") + HELP_TEXT)

    def action_close(self) -> None:
        self.dismiss()
