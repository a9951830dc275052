"""What the library offers, by name, without importing torch: methods, gold-selection strategies, stages.

The app lists methods and strategies from here (the Train page must not pay for a torch import), the worker's
progress bar asks :func:`training_stages` how many stages a job really runs, and ``fractal_core.fitting.methods`` /
``fractal_core.evaluation.selection`` take their names from here (a test checks that the pipelines agree). Adding a
method or a strategy is one line in :data:`METHOD_LIST` or :data:`STRATEGY_LIST` (plus its implementation).

Descriptions of the methods that depend on tuned settings (which priors are on, whether PsLab runs) are
derived from :class:`~fractal_core.fitting.config.TrainConfig`, so they cannot drift from the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from fractal_core.fitting.config import TrainConfig

# Training stage names, as reported to progress callbacks and stored in a model's history.
STAGE_TEACHER = "hybrid-teacher"  # instance model on gold labels whose predictions are the hybrid prior
STAGE_BAG = "bag"  # BagLoss (+ priors) on response labels
STAGE_PSLAB = "pslab"  # fresh instance model on maximum-likelihood pseudo-labels
STAGE_SUPERVISED = "supervised"  # instance model on gold sentence labels only
STAGE_EMBED = "embed"  # not a training stage: embedding look-up / computation before training


@dataclass(frozen=True)
class Method:
    """A named pipeline. ``description`` may use ``{priors}`` (the BagLoss + prior terms the config turns on)
    and ``{hybrid_tail}`` (", then PsLab" when the config finishes hybrid with PsLab); ``{auto_se}`` is
    :data:`AUTO_SE_MULTIPLE`."""

    name: str
    description: str
    trained: bool = True  # False: a training-free baseline
    needs_gold: bool = False  # refuses to train without gold sentence labels
    baseline: bool = False  # a reference point, not a method one would deploy


METHOD_LIST: tuple[Method, ...] = (
    Method(
        "fractal",
        "Recommended: the same as auto (prior-only, BagLoss, BagLoss + cosine prior and, with gold sentence "
        "labels, hybrid, chosen on held-out data; the simplest when they tie).",
    ),
    Method(
        "auto",
        "Fits prior-only, BagLoss, BagLoss + cosine prior (warm-started from BagLoss) and, with gold, hybrid; "
        "keeps the "
        "simplest within {auto_se} paired standard error(s) of the best held-out bag likelihood, or the best held-out gold "
        "AUC when there is gold.",
    ),
    Method("naive", "Baseline: every sentence inherits its response's label.", trained=False, baseline=True),
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
        "supervised",
        "Instance model on gold sentence labels only (the ceiling).",
        needs_gold=True,
        baseline=True,
    ),
)
METHOD_NAMES: tuple[str, ...] = tuple(m.name for m in METHOD_LIST)
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


def resolve_method(name: str, *, has_gold: bool, pslab: bool) -> str:
    """The pipeline ``name`` runs: ``fractal`` is ``auto`` (which picks the concrete pipeline itself, on the
    data). Unknown names and gold-needing methods without gold raise. ``pslab`` is kept for callers."""
    method(name)
    if name == "fractal":
        return "auto"
    if training_refusal(name, has_gold=has_gold):
        raise ValueError(f"method {name!r} needs gold sentence labels on some training responses")
    return name


def training_refusal(name: str, *, has_gold: bool) -> str | None:
    """Why ``name`` cannot train on data with (``has_gold``) or without gold sentence labels, in words for a
    user; ``None`` when it can. The same rule :func:`resolve_method` enforces, asked before a job is queued."""
    entry = method(name)
    if entry.needs_gold and not has_gold:
        return (
            f"{name} trains on gold sentence labels and this dataset has none yet. Label some sentences on the "
            "Review page (the Gold queue proposes which), or pick a method that needs no gold, such as fractal."
        )
    return None


AUTO_PRIOR_WEIGHTS: tuple[float, ...] = (0.1,)
"""Cosine-prior weights ``auto`` tries (BagLoss weight 1 - w, correlation prior off); the config's own cosine
weight (the tuned default) is tried first. 0.3 was a candidate too, but on the validation splits the
one-standard-error rule never chose it (BENCHMARKS.md), so it no longer costs a fit."""
AUTO_WARM_PATIENCE = 2
"""Early-stopping patience (epochs) of ``auto``'s priors candidates, which start from its BagLoss scorer rather
than from scratch (the config's patience applies to every other fit)."""
AUTO_CROSS_FIT_FOLDS = 2
"""Gold responses are cut into this many folds to judge hybrid on gold it did not train on."""
AUTO_SE_MULTIPLE = 1.0
"""``auto`` without gold keeps the simplest candidate whose held-out log-likelihood lies within this many paired
standard errors of the best (the one-standard-error rule, ``fractal_core.fitting.auto.choose``)."""
AUTO_SIMPLICITY: tuple[str, ...] = ("bagloss", "prior_only", "priors", "hybrid")
"""``auto``'s candidates from simplest to most elaborate (priors: smaller cosine weight first)."""


def auto_stage(candidate: str, stage: str) -> str:
    """The progress / history name of a training stage of one of ``auto``'s candidates."""
    return f"auto:{candidate}/{stage}"


def auto_prior_weights(config: TrainConfig | None = None) -> tuple[float, ...]:
    """The cosine weights ``auto`` tries, the config's own first."""
    weights = (config or TrainConfig()).weights
    first = weights.cosine if weights.cosine > 0 else AUTO_PRIOR_WEIGHTS[0]
    return (first, *[w for w in AUTO_PRIOR_WEIGHTS if abs(w - first) > 1e-9])


def auto_stages(*, has_gold: bool, aggregation: str, config: TrainConfig | None = None) -> tuple[str, ...]:
    """Every training stage ``auto`` runs, in order (fractal_core.fitting.auto follows this plan)."""
    config = config or TrainConfig()
    out = [auto_stage("bagloss", STAGE_BAG)]
    out += [auto_stage(f"priors(cosine={w:g})", STAGE_BAG) for w in auto_prior_weights(config)]
    if has_gold:
        hybrid = training_stages("hybrid", has_gold=True, aggregation=aggregation, config=config)
        for fold in range(AUTO_CROSS_FIT_FOLDS):
            out += [auto_stage(f"hybrid(fold {fold + 1})", s) for s in hybrid]
        out += [auto_stage("hybrid", s) for s in hybrid]
    return tuple(out)


def training_stages(
    name: str, *, has_gold: bool, aggregation: str, config: TrainConfig | None = None
) -> tuple[str, ...]:
    """The training stages ``name`` runs on such data, in order (empty for training-free baselines).

    PsLab is undefined for ``mean`` bags (there the bag model is the output); ``hybrid`` ends with PsLab only
    when ``TrainConfig.pslab`` is on.
    """
    config = config or TrainConfig()
    concrete = resolve_method(name, has_gold=has_gold, pslab=config.pslab)
    if concrete == "auto":
        return auto_stages(has_gold=has_gold, aggregation=aggregation, config=config)
    pslab_ok = aggregation in ("max", "min")
    if not _METHODS[concrete].trained:
        return ()
    if concrete == "supervised":
        return (STAGE_SUPERVISED,)
    if concrete in ("bagloss", "priors"):
        return (STAGE_BAG,)
    if concrete == "pslab":
        return (STAGE_BAG, STAGE_PSLAB) if pslab_ok else (STAGE_BAG,)
    if concrete == "hybrid":
        tail = (STAGE_PSLAB,) if config.pslab and pslab_ok else ()
        return (STAGE_TEACHER, STAGE_BAG, *tail)
    raise ValueError(f"method {concrete!r} has no stage plan in fractal_core.fitting.registry")


def prior_terms(config: TrainConfig | None = None) -> str:
    """The bag objective of the prior methods under ``config``, e.g. "BagLoss + cosine prior"."""
    weights = (config or TrainConfig()).weights
    terms = ["BagLoss"]
    if weights.cosine > 0:
        terms.append("cosine prior")
    if weights.correlation > 0:
        terms.append("correlation prior")
    return " + ".join(terms)


def describe_method(name: str, config: TrainConfig | None = None) -> str:
    """One line on what ``name`` does under ``config`` (default: the tuned defaults)."""
    config = config or TrainConfig()
    return method(name).description.format(
        priors=prior_terms(config),
        hybrid_tail=", then PsLab" if config.pslab else "",
        auto_se=f"{AUTO_SE_MULTIPLE:g}",
    )


def method_descriptions(config: TrainConfig | None = None) -> dict[str, str]:
    """{name: one-line description} in registry order (what ``fractal_core.fitting.methods.METHODS`` holds)."""
    return {m.name: describe_method(m.name, config) for m in METHOD_LIST}


__all__ = [
    "AUTO_CROSS_FIT_FOLDS",
    "AUTO_PRIOR_WEIGHTS",
    "AUTO_SE_MULTIPLE",
    "AUTO_SIMPLICITY",
    "AUTO_WARM_PATIENCE",
    "METHOD_LIST",
    "METHOD_NAMES",
    "QUEUE_STRATEGIES",
    "STAGE_BAG",
    "STAGE_EMBED",
    "STAGE_PSLAB",
    "STAGE_SUPERVISED",
    "STAGE_TEACHER",
    "STRATEGY_LIST",
    "STRATEGY_NAMES",
    "Method",
    "Strategy",
    "auto_prior_weights",
    "auto_stage",
    "auto_stages",
    "describe_method",
    "method",
    "method_descriptions",
    "prior_terms",
    "resolve_method",
    "strategy",
    "training_stages",
]
