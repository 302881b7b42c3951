"""Should you fine-tune at all? The guide's decision framework as data and deterministic rules.

QUESTIONS are data (id, text, choices, help, default) so the wizard renders them and the CLI
turns them into options. `recommend_method(answers)` scores the six methods with explicit,
additive rules; every rule that moves a score adds a reason that cites the answer behind it.
Memory needs here are rules of thumb for the method choice; `ftwiz plan` (core.memory) gives
the exact estimate for a chosen model and settings.
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ftwiz.core.errors import UserError
from ftwiz.core.memory import GIB
from ftwiz.core.methods import METHOD_NAMES


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    help: str
    choices: tuple[tuple[str, str], ...] = ()  # (value, label); empty for a number
    default: Any = None
    kind: str = "choice"  # "choice" or "number"

    def to_dict(self) -> dict:
        return asdict(self)


YES_NO = (("yes", "Yes, and it was not good enough"), ("no", "No, not yet"))
EXAMPLE_BANDS = {"0": 0, "under-100": 50, "100-1k": 500, "1k-10k": 5_000, "over-10k": 20_000}
BUDGETS = {"none": 0, "under-100": 100, "under-1k": 1_000, "under-10k": 10_000, "10k-plus": None, "not-sure": None}
DEADLINES = ("hours", "days", "weeks", "not-sure")

QUESTIONS: tuple[Question, ...] = (
    Question("tried_prompting", "Have you tried prompt engineering (clear instructions, a system prompt)?",
             "Often solves the problem for $0 in an afternoon. Try it before training anything.",
             YES_NO, "yes"),
    Question("tried_few_shot", "Have you tried few-shot prompting (a few worked examples in the prompt)?",
             "Three to five good examples in the prompt teach a format without any training.",
             YES_NO, "yes"),
    Question("examples", "How many labeled examples (input -> desired output) do you have?",
             "Fine-tuning learns from examples: 100 is a start, 1,000+ works well. A number is fine too.",
             (("0", "None"), ("under-100", "Under 100"), ("100-1k", "100 to 1,000"),
              ("1k-10k", "1,000 to 10,000"), ("over-10k", "Over 10,000")), "100-1k"),
    Question("strict_format", "Must outputs follow a strict format or a consistent style or tone?",
             "JSON that always parses, a house style, a persona: what fine-tuning teaches most reliably.",
             (("yes", "Yes"), ("no", "No")), "no"),
    Question("new_knowledge", "Does the model need a new language or domain knowledge it lacks?",
             "Fine-tuning on examples teaches behaviour more than facts. New languages or deep domains "
             "need continued pre-training on a large unlabeled corpus (and facts that change need RAG).",
             (("no", "No"), ("some", "Some domain vocabulary"),
              ("corpus", "Yes, and I have a large unlabeled corpus (many millions of tokens)")), "no"),
    Question("budget", "What compute budget do you have?",
             "Rough bands from the guide: QLoRA $5-50, LoRA $10-100, full fine-tuning $1,000s+, "
             "continued pre-training $10k+.",
             (("none", "$0"), ("under-100", "Under $100"), ("under-1k", "Under $1,000"),
              ("under-10k", "Under $10,000"), ("10k-plus", "$10,000 or more"), ("not-sure", "Not sure")),
             "not-sure"),
    Question("deadline", "When do you need the result?",
             "LoRA and QLoRA take hours to a day; full fine-tuning days; continued pre-training weeks.",
             (("hours", "Today"), ("days", "This week"), ("weeks", "Weeks are fine"), ("not-sure", "Not sure")),
             "not-sure"),
    Question("gpu_memory_gib", "GPU memory per GPU (GiB)?",
             "Prefilled from this machine's GPUs; 0 means no GPU here.", (), None, "number"),
    Question("num_gpus", "How many GPUs?", "Prefilled from this machine.", (), 1, "number"),
    Question("model_params_b", "Model size you have in mind (billions of parameters)?",
             "7-8B is the usual first choice; 1-3B trains anywhere. You pick the model in a later step.",
             (), 8.0, "number"),
)

METHODS = ("prompt_engineering", "few_shot", "lora", "qlora", "full", "continued_pretraining")

_PROFILE = {
    # method: title, cost band, time band, hardware
    "prompt_engineering": ("Prompt engineering", "$0", "hours", "none (any inference endpoint)"),
    "few_shot": ("Few-shot prompting", "~$0", "hours", "none (any inference endpoint)"),
    "lora": ("LoRA", "~$10-100", "hours to a day", "one GPU with the bf16 model in memory"),
    "qlora": ("QLoRA", "~$5-50", "hours to a day", "one consumer GPU (4-bit base model)"),
    "full": ("Full fine-tuning", "$1,000s+", "days", "several GPUs (~16 bytes per parameter)"),
    "continued_pretraining": ("Continued pre-training", "$10k+", "weeks", "a multi-GPU cluster for weeks"),
}

LARGE_CORPUS = 10_000
"""Examples above which an adapter's capacity may run short (the guide's "over 10K" column)."""


def adapter_quality(method: str, examples: int, new_knowledge: str) -> tuple[str | None, str | None]:
    """LoRA's and QLoRA's quality against full fine-tuning as a condition, not a constant: (a short
    verdict for the table, the reason with its sources); (None, None) where it does not compare."""
    if method == "full":
        return "reference", None
    if method not in ("lora", "qlora"):
        return None, None
    guide = "~98%" if method == "lora" else "~96%"
    four_bit = (" QLoRA's 4-bit base weights cost little more: the QLoRA paper matched 16-bit fine-tuning on "
                "its benchmarks." if method == "qlora" else "")
    if examples > LARGE_CORPUS or new_knowledge != "no":
        what = f"{examples:,} examples" if examples > LARGE_CORPUS else "new domain knowledge"
        return "may trail", (
            f"Quality: with {what}, LoRA can fall behind full fine-tuning (Biderman et al. 2024 found it trails on "
            f"large code and math corpora); a higher rank narrows the gap. The guide's {guide} of full is the "
            f"small-data case.{four_bit}")
    return "= full", (
        f"Quality: LoRA on every linear layer matches full fine-tuning while the data fits the adapter's "
        f"capacity (the QLoRA paper, sec. 4; LoRA Without Regret, 2025), as {examples:,} examples do "
        f"(the guide: {guide} of full).{four_bit}")

_BYTES_PER_PARAM = {"full": 16.0, "lora": 2.0, "qlora": 0.71}
"""Weights plus training state: full = fp32 weights, grads and AdamW moments under bf16 autocast;
LoRA = bf16 weights; QLoRA = NF4 with double quantisation, bf16 embeddings (5.32 GiB for 8B)."""
_WORKING_GIB = {"full": 2.0, "lora": 1.8, "qlora": 1.8}
"""Activations, LoRA states and overhead at micro-batch 1 x 512 tokens with checkpointing."""


ROUGH_MEMORY_NOTE = ("GiB here: a rule of thumb from the model's size alone (micro-batch 1, 512 tokens, gradient "
                     "checkpointing on, bf16); the Model step computes the chosen model's own figure.")
"""Said wherever min_memory_gib's figures are shown: they assume other things than the floor the
Hardware and Model steps show (core.memory.FLOOR_ASSUMPTIONS)."""


def min_memory_gib(method: str, params_b: float) -> float:
    """Rough smallest memory to train `params_b` billion parameters with `method`."""
    return params_b * 1e9 * _BYTES_PER_PARAM[method] / GIB + _WORKING_GIB[method]


@dataclass
class Recommendation:
    method: str
    title: str
    rank: int
    score: int
    verdict: str  # "recommended", "possible" or "not advised"
    reasons: list[str]
    cost_band: str
    time_band: str
    quality: str | None  # against full fine-tuning, for these answers ("= full", "may trail"); None: n/a
    hardware: str
    memory_gib: float | None  # rough need per GPU (total for full fine-tuning); None: no GPU needed
    fits: bool | None  # None when the GPU memory is unknown or no GPU is needed

    def to_dict(self) -> dict:
        return asdict(self)


def questions_for(hardware: Any = None) -> list[Question]:
    """QUESTIONS with GPU memory and count prefilled from a core.hardware.Hardware."""
    if hardware is None:
        return list(QUESTIONS)
    gpus = getattr(hardware, "gpus", [])
    memory = round(max(g.memory_total_bytes for g in gpus) / GIB, 1) if gpus else 0.0
    prefill = {"gpu_memory_gib": memory, "num_gpus": max(len(gpus), 1)}
    return [replace(q, default=prefill[q.id]) if q.id in prefill else q for q in QUESTIONS]


class AnswerError(UserError):
    """A bad answer to one question. str() names the CLI option (`--model-params-b: ...`); a form
    shows `problem` next to the question itself (`question` is its id)."""

    def __init__(self, question: str, problem: str) -> None:
        super().__init__(f"--{question.replace('_', '-')}: {problem}")
        self.question = question
        self.problem = problem


def assumed_answers(answers: dict[str, Any], hardware: Any = None) -> list[tuple[str, str]]:
    """(question in two or three words, default answer as shown) for every choice question left
    unanswered: what a ranking computed now assumes, to be said beside it."""
    assumed = []
    for question in questions_for(hardware):
        if question.kind == "choice" and answers.get(question.id) in (None, ""):
            label = dict(question.choices).get(question.default, str(question.default))
            assumed.append((question.id.replace("_", " "), label))
    return assumed


def normalize_answers(answers: dict[str, Any], hardware: Any = None) -> dict[str, Any]:
    """Answers with defaults filled in and every value checked; UserError names the question."""
    questions = {q.id: q for q in questions_for(hardware)}
    unknown = sorted(set(answers) - set(questions))
    if unknown:
        raise UserError(f"answers: unknown question {unknown[0]!r} (allowed: {', '.join(questions)})")
    result: dict[str, Any] = {}
    if answers.get("tried_prompting") == "no" and answers.get("tried_few_shot") is None:
        answers = {**answers, "tried_few_shot": "no"}  # few-shot comes after prompting
    for qid, question in questions.items():
        value = answers.get(qid)
        value = question.default if value is None else value
        if qid == "examples":
            result[qid] = _examples_count(value)
        elif question.kind == "number":
            result[qid] = None if value is None else _number(qid, value, integer=qid == "num_gpus")
        else:
            value = str(value).strip().lower()
            allowed = [choice for choice, _ in question.choices]
            if value not in allowed:
                raise AnswerError(qid, f"{value!r} is not a choice (allowed: {', '.join(allowed)})")
            result[qid] = value
    if result["model_params_b"] is not None and result["model_params_b"] <= 0:
        raise AnswerError("model_params_b", f"must be > 0, got {result['model_params_b']:g}")
    if result["num_gpus"] < 1:
        raise AnswerError("num_gpus", f"must be >= 1, got {result['num_gpus']}")
    return result


def _examples_count(value: Any) -> int:
    text = str(value).strip().lower().replace(",", "").replace("_", "")
    if text in EXAMPLE_BANDS:
        return EXAMPLE_BANDS[text]
    if text.isdigit():
        return int(text)
    raise AnswerError("examples", f"{value!r} is not a count or a band (allowed: a number, {', '.join(EXAMPLE_BANDS)})")


def _number(qid: str, value: Any, integer: bool) -> float:
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise AnswerError(qid, f"{value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise AnswerError(qid, f"must be >= 0 and finite, got {value}")
    return number


class _Card:
    """A method's running score and the reasons behind it."""

    def __init__(self, base: int) -> None:
        self.score = base
        self.reasons: list[str] = []

    def add(self, points: int, reason: str) -> None:
        self.score += points
        self.reasons.append(reason)


def recommend_method(answers: dict[str, Any], hardware: Any = None) -> list[Recommendation]:
    """All six methods ranked best first, each with the reasons that placed it there.

    Deterministic: fixed points per rule, ties broken by cost (cheapest first)."""
    a = normalize_answers(answers, hardware)
    n, params_b = a["examples"], a["model_params_b"]
    gpu_gib, num_gpus = a["gpu_memory_gib"], a["num_gpus"]
    budget_max = BUDGETS[a["budget"]]
    finetune_base = 50 if a["tried_prompting"] == "yes" and a["tried_few_shot"] == "yes" else 30
    cards = {m: _Card(base) for m, base in zip(METHODS, (10, 8, finetune_base, finetune_base, finetune_base, 0))}
    pe, fs, lora, qlora, full, cpt = (cards[m] for m in METHODS)
    finetunes = (lora, qlora, full)

    # Prompting first: it is free and fast.
    if a["tried_prompting"] == "no":
        pe.add(100, "You have not tried prompt engineering yet: it costs $0, takes hours, and often suffices.")
    else:
        pe.add(-50, "You tried prompt engineering and it was not enough.")
    if a["tried_few_shot"] == "no":
        if n > 0:
            fs.add(90, f"You have ~{n:,} examples but have not tried few-shot: put 3-5 of them in the prompt first, for $0.")
        else:
            fs.add(20, "You have not tried few-shot: write 3-5 examples by hand and put them in the prompt.")
    else:
        fs.add(-50, "You tried few-shot prompting and it was not enough.")

    # Data.
    if n == 0:
        for card in finetunes:
            card.add(-150, "You have no labeled examples: fine-tuning needs input/output pairs (100+, better 1,000+).")
    elif n < 100:
        for card in finetunes:
            card.add(-20, f"Only ~{n} examples: fine-tuning may overfit; collect 100+ (1,000+ is better).")
    else:
        for card in (lora, qlora):
            card.add(10, f"~{n:,} examples is enough for a LoRA-style fine-tune.")
        if n < 10_000:
            full.add(-15, f"~{n:,} examples is few for full fine-tuning: it tends to overfit and forget; LoRA keeps the base intact.")
        else:
            full.add(10, f"~{n:,} examples can justify full fine-tuning.")

    if a["strict_format"] == "yes":
        for card in finetunes:
            card.add(15, "You need a strict format or style: what fine-tuning teaches most reliably.")
        for card in (pe, fs):
            card.add(-10, "You need a strict format or style: prompts hold it only loosely.")

    if a["new_knowledge"] == "corpus":
        cpt.add(120, "You need a new language or domain and have a large unlabeled corpus: continued "
                     "pre-training teaches knowledge that instruction examples cannot.")
    elif a["new_knowledge"] == "some":
        for card in (lora, qlora):
            card.add(5, "Some domain vocabulary: a fine-tune picks it up; for facts that change, add retrieval (RAG).")
        cpt.add(-50, "Only some domain vocabulary: continued pre-training (billions of tokens, weeks) is overkill.")
    else:
        cpt.add(-50, "No new language or domain to learn: continued pre-training is not needed.")

    # Budget and deadline.
    if budget_max is not None:
        if budget_max < 10_000:
            cpt.add(-80, f"Your budget ({_label('budget', a['budget'])}) is below continued pre-training's $10k+.")
        if budget_max < 1_000:
            full.add(-40, f"Your budget ({_label('budget', a['budget'])}) is below full fine-tuning's $1,000s+.")
        if budget_max <= 100:
            qlora.add(5, f"Your budget ({_label('budget', a['budget'])}) fits QLoRA, the cheapest fine-tune ($5-50).")
        if budget_max == 0 and not gpu_gib:
            for card in finetunes:
                card.add(-30, "A $0 budget and no GPU here: any fine-tune needs rented GPU time.")
    if a["deadline"] == "hours":
        full.add(-30, "You need it today: full fine-tuning takes days.")
        cpt.add(-80, "You need it today: continued pre-training takes weeks.")
    elif a["deadline"] == "days":
        cpt.add(-40, "You need it this week: continued pre-training takes weeks.")

    # Memory: the rough need of each training method against this GPU.
    needs = {m: min_memory_gib(m, params_b) for m in METHOD_NAMES}
    fits: dict[str, bool | None] = {m: None for m in METHODS}
    if gpu_gib is None:
        for m in METHOD_NAMES:
            cards[m].reasons.append(f"GPU memory unknown: the {params_b:g}B model needs ~{needs[m]:.0f} GiB for {_PROFILE[m][0]}.")
    elif gpu_gib == 0:
        for m in METHOD_NAMES:
            cards[m].add(-20, f"No GPU here: rent one with ~{needs[m]:.0f} GiB+ for the {params_b:g}B model.")
        qlora.add(5, "QLoRA needs the least memory: a single rented 24 GB GPU is enough for 7-8B.")
    else:
        usable = gpu_gib * 0.95
        for m, card in (("lora", lora), ("qlora", qlora)):
            fits[m] = needs[m] <= usable
            if fits[m]:
                card.add(20, f"Fits: the {params_b:g}B model needs ~{needs[m]:.0f} GiB, your GPU has {gpu_gib:g} GiB.")
            else:
                card.add(-30, f"Does not fit: the {params_b:g}B model needs ~{needs[m]:.0f} GiB, your GPU has {gpu_gib:g} GiB.")
        if fits["lora"]:
            lora.add(5, "Both fit: LoRA keeps the base model in 16 bits and runs ~1.75x faster than QLoRA.")
        elif fits["qlora"]:
            qlora.add(5, "QLoRA fits where LoRA does not: the 4-bit base model needs ~4x less memory.")
        else:
            largest = max((usable - _WORKING_GIB["qlora"]) * GIB / _BYTES_PER_PARAM["qlora"] / 1e9, 0)
            qlora.add(10, f"QLoRA needs the least memory: on {gpu_gib:g} GiB a model up to ~{largest:.1f}B fits.")
        fits["full"] = needs["full"] <= usable * num_gpus
        where = f"{num_gpus} x {gpu_gib:g} GiB" if num_gpus > 1 else f"{gpu_gib:g} GiB"
        if fits["full"]:
            full.add(10, f"Fits: full fine-tuning of {params_b:g}B needs ~{needs['full']:.0f} GiB in total, you have {where}.")
        else:
            full.add(-40, f"Does not fit: full fine-tuning of {params_b:g}B needs ~{needs['full']:.0f} GiB in total, you have {where}.")

    order = sorted(METHODS, key=lambda m: (-cards[m].score, METHODS.index(m)))
    ranked = []
    for rank, method in enumerate(order, start=1):
        card = cards[method]
        title, cost_band, time_band, hardware_text = _PROFILE[method]
        quality, quality_reason = adapter_quality(method, n, a["new_knowledge"])
        if method in needs:
            per = "in total" if method == "full" else "per GPU"
            hardware_text = f"{hardware_text}; ~{needs[method]:.0f} GiB {per} for {params_b:g}B"
        reasons = list(card.reasons) + ([quality_reason] if quality_reason else [])
        if rank == 1 and card.score < 0:
            reasons.append("No method suits all your answers; this one conflicts least with them.")
        if rank == 1:
            verdict = "recommended"
        else:
            verdict = "not advised" if card.score < 0 or fits[method] is False else "possible"
        ranked.append(Recommendation(
            method=method, title=title, rank=rank, score=card.score, verdict=verdict,
            reasons=reasons or ["No answer speaks for or against it."],
            cost_band=cost_band, time_band=time_band, quality=quality,
            hardware=hardware_text, memory_gib=round(needs[method], 1) if method in needs else None,
            fits=fits[method],
        ))
    return ranked


def _label(qid: str, value: str) -> str:
    question = next(q for q in QUESTIONS if q.id == qid)
    return dict(question.choices)[value]
