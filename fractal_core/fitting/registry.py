"""What the library offers, by name, without importing torch: methods, gold-selection strategies, stage plans.

The app lists methods and strategies from here (the Train page must not pay for a torch import). A method name
is resolved once, by :func:`resolve`, into a :class:`MethodPlan`: the pipeline that runs, its training stages in
order, whether it needs gold, the weighted terms of its bag objective and (``auto``) its candidates. The fit
carries the plan out (``fractal_core.fitting.fit``) and the worker's progress bar counts its stages, so both
read the one plan. Adding a method or a strategy is one line in :data:`METHOD_LIST` or :data:`STRATEGY_LIST`
(plus its implementation).

Descriptions of the methods that depend on tuned settings (which priors are on, whether PsLab runs) are
derived from :class:`~fractal_core.fitting.config.TrainConfig`, so they cannot drift from the defaults.

This module resolves names and describes methods; it re-exports the rest, which lives in
:mod:`~fractal_core.fitting.method_table` (the methods and strategies), :mod:`~fractal_core.fitting.method_plan`
(a single method's stages and objective) and :mod:`~fractal_core.fitting.auto_plan` (``auto``'s candidates).
"""

from __future__ import annotations

from fractal_core.fitting.auto_plan import (
    AUTO_BLEND,
    AUTO_CROSS_FIT_FOLDS,
    AUTO_GOLD_DEFAULT,
    AUTO_GOLD_RESAMPLES,
    AUTO_HAZARD_SCORER,
    AUTO_PRIOR_WEIGHTS,
    AUTO_SE_MULTIPLE,
    AUTO_SE_MULTIPLE_GOLD,
    AUTO_SIMPLICITY,
    AUTO_WARM_PATIENCE,
    AUTO_WEAK_GOLD_RESPONSES,
    AUTO_WEAK_GOLD_SENTENCES,
    BLEND,
    auto_candidates,
    auto_prior_weights,
    auto_stage,
)
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.method_plan import (
    LOSS_TERMS,
    STAGE_BAG,
    STAGE_EMBED,
    STAGE_PSLAB,
    STAGE_SUPERVISED,
    STAGE_TEACHER,
    Candidate,
    MethodPlan,
    single_plan,
)
from fractal_core.fitting.method_table import (
    METHOD_LIST,
    METHOD_NAMES,
    ONE_PASS_METHODS,
    QUEUE_STRATEGIES,
    STRATEGY_LIST,
    STRATEGY_NAMES,
    Method,
    Strategy,
    method,
    one_pass_refusal,
    strategy,
    training_refusal,
)

CRITERIA_METHODS: tuple[str, ...] = ("bagloss", "priors", "pslab")
"""The methods a joint fit of several criteria runs (``fitting.criteria_fit``): no gold-sentence method, no
``auto`` choice."""


def resolve(
    name: str,
    *,
    has_gold: bool,
    aggregation: str,
    config: TrainConfig | None = None,
    first_error: bool = False,
) -> MethodPlan:
    """Resolve ``name`` once into the plan that runs on such data: ``fractal`` is ``auto`` (which picks the
    concrete pipeline itself, on the data). ``first_error``: the gold follows the first-error protocol of step
    data (``mil.hazard.first_error_protocol``), which adds the hazard method to ``auto``'s candidates. Unknown
    names, gold-needing methods without gold and loss weights that sum to 0 raise ValueError."""
    config = config or TrainConfig()
    entry = method(name)
    if training_refusal(name, has_gold=has_gold):
        raise ValueError(f"method {name!r} needs gold sentence labels on some training responses")
    pipeline = "auto" if name == "fractal" else entry.name
    if pipeline != "auto":
        return single_plan(pipeline, asked=name, aggregation=aggregation, config=config)
    candidates = auto_candidates(
        has_gold=has_gold, aggregation=aggregation, config=config, first_error=first_error
    )
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
    name: str,
    *,
    has_gold: bool,
    aggregation: str,
    config: TrainConfig | None = None,
    first_error: bool = False,
) -> tuple[str, ...]:
    """The training stages ``name`` runs on such data, in order (empty for training-free baselines)."""
    plan = resolve(name, has_gold=has_gold, aggregation=aggregation, config=config, first_error=first_error)
    return plan.stages


def prior_terms(config: TrainConfig | None = None) -> str:
    """The bag objective of the prior methods under ``config``, e.g. "BagLoss + cosine prior"."""
    weights = (config or TrainConfig()).weights
    terms = ["BagLoss"]
    if weights.cosine > 0:
        terms.append("cosine prior")
    if weights.correlation > 0:
        terms.append("correlation prior")
    return " + ".join(terms)


def hazard_terms(config: TrainConfig | None = None) -> str:
    """The extra terms of the hazard method's objective under ``config``, e.g. ", + the first error given the
    label (weight 1) + cosine prior"."""
    config = config or TrainConfig()
    terms = ""
    if config.hazard_rank > 0:
        terms += f", + the gold first error given the label (weight {config.hazard_rank:g})"
    if config.weights.cosine > 0:
        terms += " + cosine prior"
    return terms


def describe_method(name: str, config: TrainConfig | None = None) -> str:
    """One line on what ``name`` does under ``config`` (default: the tuned defaults)."""
    config = config or TrainConfig()
    return method(name).description.format(
        priors=prior_terms(config),
        hybrid_tail=", then PsLab" if config.pslab else "",
        auto_se=f"{AUTO_SE_MULTIPLE:g}",
        hazard_terms=hazard_terms(config),
    )


def method_descriptions(config: TrainConfig | None = None) -> dict[str, str]:
    """{name: one-line description} in registry order (what ``fractal_core.fitting.methods.METHODS`` holds)."""
    return {m.name: describe_method(m.name, config) for m in METHOD_LIST}


__all__ = [
    "AUTO_BLEND",
    "AUTO_CROSS_FIT_FOLDS",
    "AUTO_GOLD_DEFAULT",
    "AUTO_GOLD_RESAMPLES",
    "AUTO_HAZARD_SCORER",
    "AUTO_PRIOR_WEIGHTS",
    "AUTO_SE_MULTIPLE",
    "AUTO_SE_MULTIPLE_GOLD",
    "AUTO_SIMPLICITY",
    "AUTO_WARM_PATIENCE",
    "AUTO_WEAK_GOLD_RESPONSES",
    "AUTO_WEAK_GOLD_SENTENCES",
    "BLEND",
    "CRITERIA_METHODS",
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
    "ONE_PASS_METHODS",
    "Strategy",
    "auto_prior_weights",
    "auto_stage",
    "describe_method",
    "hazard_terms",
    "method",
    "method_descriptions",
    "one_pass_refusal",
    "prior_terms",
    "resolve",
    "strategy",
    "training_refusal",
    "training_stages",
]
