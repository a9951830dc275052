"""The methods and gold-selection strategies the library offers, by name: one line each, looked up here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """A named pipeline. ``description`` may use ``{priors}`` (the BagLoss + prior terms the config turns on)
    and ``{hybrid_tail}`` (", then PsLab" when the config finishes hybrid with PsLab); ``{auto_se}`` is
    :data:`~fractal_core.fitting.auto_plan.AUTO_SE_MULTIPLE`."""

    name: str
    description: str
    trained: bool = True  # False: a training-free baseline
    needs_gold: bool = False  # refuses to train without gold sentence labels
    baseline: bool = False  # a reference point, not a method one would deploy
    one_pass: bool = (
        True  # a trained method the one-pass token scorer also trains (False: frozen vectors only)
    )


METHOD_LIST: tuple[Method, ...] = (
    Method(
        "fractal",
        "Recommended: the same as auto (prior-only, BagLoss, BagLoss + cosine prior and, with gold sentence "
        "labels, hybrid, and hazard when the gold stops at each first error, chosen on held-out data; the "
        "simplest when they tie).",
        one_pass=False,
    ),
    Method(
        "auto",
        "Fits prior-only, BagLoss, BagLoss + cosine prior (warm-started from BagLoss) and, with gold, hybrid "
        "(and hazard on step data whose gold stops at each first error); keeps the "
        "simplest within {auto_se} paired standard error(s) of the best held-out figure: the bag likelihood, or "
        "the gold AUC given the label when there is gold.",
        one_pass=False,
    ),
    Method("naive", "Baseline: every sentence inherits its response's label.", trained=False, baseline=True),
    Method(
        "constant",
        "Baseline: one probability for every sentence, the one that fits the training response labels best "
        "(given the label, sentences rank by their response's label and length only).",
        trained=False,
        baseline=True,
    ),
    Method(
        "prior_only",
        "Baseline: cosine similarity between sentence and context as the score.",
        trained=False,
        baseline=True,
    ),
    Method("bagloss", "BagLoss alone (response labels only)."),
    Method("priors", "{priors} (response labels only)."),
    Method("pslab", "{priors}, then maximum-likelihood pseudo-labels and a fresh model (no gold needed)."),
    Method(
        "hybrid",
        "Hybrid prior from a model of the gold sentence labels + {priors}{hybrid_tail} (needs some gold).",
        needs_gold=True,
    ),
    Method(
        "hazard",
        "First-error hazard (step data): a step's score is P(wrong | earlier steps fine), trained on the exact "
        "likelihood of the response labels and of the gold first errors{hazard_terms}.",
    ),
    Method(
        "supervised",
        "Instance model on gold sentence labels only (the ceiling).",
        needs_gold=True,
        baseline=True,
    ),
)
METHOD_NAMES: tuple[str, ...] = tuple(m.name for m in METHOD_LIST)
ONE_PASS_METHODS: tuple[str, ...] = tuple(m.name for m in METHOD_LIST if m.trained and m.one_pass)
"""The methods the one-pass token scorer trains (``fractal_core.experimental.one_pass_methods``)."""
_METHODS = {m.name: m for m in METHOD_LIST}


@dataclass(frozen=True)
class Strategy:
    """A gold-selection strategy (``fractal_core.evaluation.selection``). ``label`` is the short text a UI shows;
    ``queue``: the app ranks every new model version's responses by it (the Gold queue, which offers them in
    this order: the first is its default)."""

    name: str
    label: str
    description: str
    queue: bool = True
    needs_embeddings: bool = False


STRATEGY_LIST: tuple[Strategy, ...] = (
    # The first is the Gold queue's default: the measured best at equal annotation effort (BENCHMARKS.md,
    # "Active gold selection at equal sentence budgets": random, 5 seeds on ProcessBench and DelucionQA; no
    # strategy chosen on valid beat it on both).
    Strategy("random", "Random (the paper's protocol; the best measured at 5% gold)", "Seeded uniform draw."),
    Strategy(
        "balanced",
        "Informative, keeping the share of each response label",
        "'posterior' inside each response-label stratum, the strata's shares of the candidates kept.",
    ),
    Strategy(
        "representative",
        "Uncertain, keeping the pool's mix of response labels and lengths",
        "'uncertainty' inside each response-label x length-quartile stratum, the strata's shares kept.",
    ),
    Strategy(
        "representative-posterior",
        "Informative, keeping the pool's mix of response labels and lengths",
        "'posterior' inside each response-label x length-quartile stratum, the strata's shares kept.",
    ),
    Strategy(
        "stratified",
        "Random, keeping the pool's mix of response labels and lengths",
        "Seeded random order inside each response-label x length-quartile stratum, the strata's shares kept.",
    ),
    Strategy(
        "posterior",
        "Most informative: sentence labels still uncertain given the response label",
        "Mean entropy of the sentence labels given the response label.",
    ),
    Strategy(
        "inconsistency",
        "Inconsistent: sentence scores contradict the response label",
        "|P(response label = 1 | sentence scores) - response label|.",
    ),
    Strategy(
        "uncertainty",
        "Most uncertain sentence scores",
        "Mean binary entropy of the model's sentence scores in the response.",
    ),
    Strategy(
        "diverse",
        "Informative and spread over the data",
        "Greedy k-center on mean sentence embeddings, weighted by posterior uncertainty.",
        needs_embeddings=True,
    ),
)
STRATEGY_NAMES: tuple[str, ...] = tuple(s.name for s in STRATEGY_LIST)
QUEUE_STRATEGIES: tuple[str, ...] = tuple(s.name for s in STRATEGY_LIST if s.queue)
_STRATEGIES = {s.name: s for s in STRATEGY_LIST}


def method(name: str) -> Method:
    """The registry entry of ``name``; ValueError naming the choices when unknown."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}")
    return _METHODS[name]


def strategy(name: str) -> Strategy:
    """The registry entry of strategy ``name``; ValueError naming the choices when unknown."""
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}")
    return _STRATEGIES[name]


def one_pass_refusal(name: str) -> str | None:
    """Why the one-pass token scorer cannot train ``name``, in words for a user; ``None`` when it can."""
    entry = method(name)
    if entry.name in ONE_PASS_METHODS:
        return None
    why = "a training-free baseline" if not entry.trained else "a choice among frozen-vector fits"
    return (
        f"{name} is {why}; the one-pass scorer trains one of {', '.join(ONE_PASS_METHODS)} "
        "(or pick the frozen scorer)"
    )


def training_refusal(name: str, *, has_gold: bool) -> str | None:
    """Why ``name`` cannot train on data with (``has_gold``) or without gold sentence labels, in words for a
    user; ``None`` when it can. The same rule :func:`resolve` enforces, asked before a job is queued."""
    entry = method(name)
    if entry.needs_gold and not has_gold:
        return (
            f"{name} trains on gold sentence labels and this dataset has none yet. Label some sentences on the "
            "Review page (the Gold queue proposes which), or pick a method that needs no gold, such as fractal."
        )
    return None
