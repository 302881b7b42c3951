"""F1 / ?: the words of fine-tuning, explained for a software engineer."""

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


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,f1,question_mark", "close", "Close help"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP_TEXT)

    def action_close(self) -> None:
        self.dismiss()
