"""What the library offers, by name, without importing torch: methods, gold-selection strategies, stage plans.

The app lists methods and strategies from here (the Train page must not pay for a torch import). A method name
is resolved once, by :func:`resolve`, into a :class:`MethodPlan`: the pipeline that runs, its training stages in
order, whether it needs gold, the weighted terms of its bag objective and (``auto``) its candidates. The fit
carries the plan out (``fractal_core.fitting.fit``) and the worker's progress bar counts its stages, so both
read the one plan. Adding a method or a strategy is one line in :data:`METHOD_LIST` or :data:`STRATEGY_LIST`
(plus its implementation).

Descriptions of the methods that depend on tuned settings (which priors are on, whether PsLab runs) are
derived from :class:`~fractal_core.fitting.config.TrainConfig`, so they cannot drift from the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
standard errors of the best (the one-standard-error rule, ``fractal_core.fitting.auto_choice.choose``)."""
AUTO_SIMPLICITY: tuple[str, ...] = ("bagloss", "prior_only", "priors", "hybrid")
"""``auto``'s candidates from simplest to most elaborate (priors: smaller cosine weight first)."""

LOSS_TERMS: tuple[str, ...] = ("bag", "cosine", "correlation", "hybrid")
"""The terms of a bag stage's objective, named like the fields of ``LossWeights``."""
_METHOD_TERMS: dict[str, tuple[str, ...]] = {
    "bagloss": ("bag",),
    "priors": ("bag", "cosine", "correlation"),
    "pslab": ("bag", "cosine", "correlation"),
    "hybrid": ("bag", "cosine", "correlation", "hybrid"),
}


@dataclass(frozen=True)
class Candidate:
    """One fit ``auto`` makes: a single-method plan under its own config.

    ``warm_start``: its bag stage starts from the BagLoss candidate's scorer. ``fold``: hybrid trained without
    the gold of cross-fitting fold ``fold`` (0-based) and scored on it; ``None``: trained on all the gold.
    ``cosine``: the cosine weight of a priors candidate.
    """

    name: str
    plan: MethodPlan
    warm_start: bool = False
    fold: int | None = None
    cosine: float | None = None


@dataclass(frozen=True)
class MethodPlan:
    """A method name resolved once against the data (gold or not, aggregation) and a config: what runs.

    ``name`` is what was asked ("fractal"), ``pipeline`` what runs ("auto"). ``stages``: every training stage in
    order (an ``auto`` plan lists its candidates' stages under :func:`auto_stage` names). ``losses``: the terms
    of the bag stage's objective with a positive weight, their weights renormalised to sum to 1 (empty without
    a bag stage). ``candidates``: ``auto``'s fits, in the order they run.
    """

    name: str
    pipeline: str
    config: TrainConfig
    aggregation: str
    stages: tuple[str, ...]
    needs_gold: bool = False
    trained: bool = True
    losses: tuple[tuple[str, float], ...] = ()
    candidates: tuple[Candidate, ...] = ()

    @property
    def loss_weights(self) -> dict[str, float]:
        """{term: weight} of the bag stage's objective (weights sum to 1)."""
        return dict(self.losses)

    def runs(self, stage: str) -> bool:
        """Whether the (single-method) plan has the training stage ``stage``."""
        return stage in self.stages


def _loss_weights(name: str, config: TrainConfig) -> tuple[tuple[str, float], ...]:
    """The bag objective's terms of ``name`` with a positive weight, renormalised (a zero-weight term is
    neither built nor computed). ValueError when the used terms' weights sum to 0."""
    raw = {t: float(getattr(config.weights, t)) for t in _METHOD_TERMS.get(name, ())}
    raw = {t: w for t, w in raw.items() if w > 0}
    total = sum(raw.values())
    if name in _METHOD_TERMS and total <= 0:
        raise ValueError(
            f"method {name!r}: the loss weights of its terms ({', '.join(_METHOD_TERMS[name])}) sum to 0"
        )
    return tuple((t, w / total) for t, w in raw.items())


def _single_stages(name: str, aggregation: str, config: TrainConfig) -> tuple[str, ...]:
    """The training stages of a single (not ``auto``) method. PsLab is undefined for ``mean`` bags (there the
    bag model is the output); ``hybrid`` ends with PsLab only when ``TrainConfig.pslab`` is on."""
    pslab_ok = aggregation in ("max", "min")
    if not _METHODS[name].trained:
        return ()
    if name == "supervised":
        return (STAGE_SUPERVISED,)
    if name in ("bagloss", "priors"):
        return (STAGE_BAG,)
    if name == "pslab":
        return (STAGE_BAG, STAGE_PSLAB) if pslab_ok else (STAGE_BAG,)
    if name == "hybrid":
        tail = (STAGE_PSLAB,) if config.pslab and pslab_ok else ()
        return (STAGE_TEACHER, STAGE_BAG, *tail)
    raise ValueError(f"method {name!r} has no stage plan in fractal_core.fitting.registry")


def _single_plan(name: str, *, asked: str, aggregation: str, config: TrainConfig) -> MethodPlan:
    entry = _METHODS[name]
    return MethodPlan(
        name=asked,
        pipeline=name,
        config=config,
        aggregation=aggregation,
        stages=_single_stages(name, aggregation, config),
        needs_gold=entry.needs_gold,
        trained=entry.trained,
        losses=_loss_weights(name, config),
    )


def auto_stage(candidate: str, stage: str) -> str:
    """The progress / history name of a training stage of one of ``auto``'s candidates."""
    return f"auto:{candidate}/{stage}"


def auto_prior_weights(config: TrainConfig | None = None) -> tuple[float, ...]:
    """The cosine weights ``auto`` tries, the config's own first."""
    weights = (config or TrainConfig()).weights
    first = weights.cosine if weights.cosine > 0 else AUTO_PRIOR_WEIGHTS[0]
    return (first, *[w for w in AUTO_PRIOR_WEIGHTS if abs(w - first) > 1e-9])


def _auto_candidates(*, has_gold: bool, aggregation: str, config: TrainConfig) -> tuple[Candidate, ...]:
    """``auto``'s fits in the order they run: the calibrated prior (no training stage), BagLoss, BagLoss +
    cosine prior at each weight (warm-started from BagLoss, shorter patience) and, with gold, hybrid on each
    cross-fitting fold's complement and then on all the gold."""

    def plan(name: str, cfg: TrainConfig = config) -> MethodPlan:
        return _single_plan(name, asked=name, aggregation=aggregation, config=cfg)

    out = [Candidate("prior_only(calibrated)", plan("prior_only")), Candidate("bagloss", plan("bagloss"))]
    for w in auto_prior_weights(config):
        cfg = replace(
            config,
            weights=replace(config.weights, bag=1.0 - w, cosine=w, correlation=0.0),
            patience=min(config.patience, AUTO_WARM_PATIENCE),
        )
        out.append(Candidate(f"priors(cosine={w:g})", plan("priors", cfg), warm_start=True, cosine=w))
    if has_gold:
        hybrid = plan("hybrid")
        out += [Candidate(f"hybrid(fold {f + 1})", hybrid, fold=f) for f in range(AUTO_CROSS_FIT_FOLDS)]
        out.append(Candidate("hybrid", hybrid))
    return tuple(out)


def resolve(name: str, *, has_gold: bool, aggregation: str, config: TrainConfig | None = None) -> MethodPlan:
    """Resolve ``name`` once into the plan that runs on such data: ``fractal`` is ``auto`` (which picks the
    concrete pipeline itself, on the data). Unknown names, gold-needing methods without gold and loss weights
    that sum to 0 raise ValueError."""
    config = config or TrainConfig()
    entry = method(name)
    if training_refusal(name, has_gold=has_gold):
        raise ValueError(f"method {name!r} needs gold sentence labels on some training responses")
    pipeline = "auto" if name == "fractal" else entry.name
    if pipeline != "auto":
        return _single_plan(pipeline, asked=name, aggregation=aggregation, config=config)
    candidates = _auto_candidates(has_gold=has_gold, aggregation=aggregation, config=config)
    return MethodPlan(
        name=name,
        pipeline="auto",
        config=config,
        aggregation=aggregation,
        stages=tuple(auto_stage(c.name, s) for c in candidates for s in c.plan.stages),
        needs_gold=entry.needs_gold,
        candidates=candidates,
    )


def training_stages(
    name: str, *, has_gold: bool, aggregation: str, config: TrainConfig | None = None
) -> tuple[str, ...]:
    """The training stages ``name`` runs on such data, in order (empty for training-free baselines)."""
    return resolve(name, has_gold=has_gold, aggregation=aggregation, config=config).stages


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
    "LOSS_TERMS",
    "METHOD_LIST",
    "METHOD_NAMES",
    "Candidate",
    "MethodPlan",
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
    "describe_method",
    "method",
    "method_descriptions",
    "prior_terms",
    "resolve",
    "strategy",
    "training_refusal",
    "training_stages",
]
