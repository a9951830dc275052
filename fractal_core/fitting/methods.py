"""The single-method fit: one resolved plan (``registry.MethodPlan``) turns training bags into a sentence scorer.

Pipelines (stages are fresh models unless said otherwise):
- naive: every sentence inherits its bag's label (no training).
- prior_only: the cosine target (1 + cos) / 2 is the score (no training).
- constant: one probability vector for every sentence, the one under which the training response labels are
  most likely (``calibration.fit_constant``; no training stage, no scorer).
- bagloss: BagLoss alone.
- priors: BagLoss + the cosine and correlation priors (each only when its weight is > 0).
- pslab: priors, then PsLab pseudo-labels and a fresh instance model (FRACTAL without gold).
- hybrid: an instance model on gold sentence labels gives frozen soft targets (hybrid prior); BagLoss + priors
  + hybrid prior; then PsLab with the gold labels kept when ``TrainConfig.pslab`` is on. Needs some gold
  labels. ``TrainConfig.teacher_implied`` adds the sentence labels implied by the response labels to the
  teacher's data (off: no valid gain).
- hazard: for step data (max): the exact first-error likelihood (``fractal_core.mil.hazard``) of the response
  labels and of the gold first errors, + its ranking term and the cosine prior (by their weights).
- supervised: an instance model on all gold sentence labels (the ceiling).
PsLab is undefined for mean (LLP) bags: there the soft bag model is the output. Which priors run is decided by
their weights: the tuned defaults use the cosine prior only (correlation weight 0).

``auto`` / ``fractal`` (a choice among these fits) sits above this module, in ``fractal_core.fitting.auto``;
``fractal_core.fitting.fit.fit_method`` runs either. What runs, in which order and with which loss terms is
the plan's (``fractal_core.fitting.registry``); this module only carries it out.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.calibration import fit_constant
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.context import FitContext, FitResult
from fractal_core.fitting.model import SentenceScorer, build_scorer
from fractal_core.fitting.objectives import bag_objective, instance_objective, make_validator
from fractal_core.fitting.train import Objective, StageResult, cpu_threads, train_stage
from fractal_core.mil.hazard import first_error_protocol
from fractal_core.mil.losses import proportion_target
from fractal_core.mil.pslab import pseudo_labels

METHODS: dict[str, str] = registry.method_descriptions()
"""{name: one-line description under the tuned defaults}, in registry order."""
TRAINED = frozenset(m.name for m in registry.METHOD_LIST if m.trained)


def first_error_annotated(bags: BagSet) -> bool:
    """Whether the gold labels of ``bags`` follow the first-error protocol of step data
    (``mil.hazard.first_error_protocol``: nothing labelled after a bag's first positive, and some bag has
    sentences there)."""
    return first_error_protocol(bags.gold, bags.bag_index, bags.n_bags)


def scorer_spec(config: TrainConfig, *data: BagSet | None) -> dict[str, object]:
    """The scorer every stage of a fit builds (``model.build_scorer``), its direction read from the data.

    ``context_direction="auto"`` is causal when the gold labels of ``data`` follow the first-error protocol of
    reasoning steps (:func:`first_error_annotated`), else bidirectional.
    """
    if config.scorer == "mlp":
        return {"kind": "mlp"}
    direction = config.context_direction
    if direction == "auto":
        steps = any(b is not None and b.n_bags and first_error_annotated(b) for b in data)
        direction = "causal" if steps else "bidirectional"
    return {"kind": config.scorer, "causal": direction == "causal"}


def fresh_scorer(
    spec: dict[str, object],
    dim: int,
    n_classes: int,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
) -> SentenceScorer:
    """A new scorer of ``spec`` with seeded initial weights, on ``device``."""
    return build_scorer(spec, dim, n_classes=n_classes, hidden=config.hidden, generator=generator).to(device)


def gold_bag_ids(data: BagSet) -> torch.Tensor:
    """The ids of the bags with at least one gold sentence label (instance models train on these only)."""
    return torch.unique(data.bag_index[data.gold >= 0])


def _gold_bags(data: BagSet) -> BagSet:
    return data.select(gold_bag_ids(data))


def implied_labels(bags: BagSet, aggregation: str, *, n_classes: int = 2) -> torch.Tensor:
    """Sentence labels that the response label alone implies -> (N,) long, -1 where nothing is implied.

    max (binary or ordinal): a response labelled 0 has only level-0 sentences (a label Y > 0 only bounds its
    sentences by Y, which is not a label). min: a response at the top level ``n_classes - 1`` has only top-level
    sentences. mean: nothing is implied (by convention of the hybrid teacher; proportions are soft).
    """
    if aggregation == "max":
        per_bag = torch.where(bags.labels == 0, 0, -1)
    elif aggregation == "min":
        top = n_classes - 1
        per_bag = torch.where(bags.labels == top, top, -1)
    elif aggregation == "mean":
        per_bag = torch.full_like(bags.labels, -1)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    return per_bag.long()[bags.bag_index]


def _teacher_bags(train: BagSet, aggregation: str, n_classes: int, config: TrainConfig) -> BagSet:
    """The hybrid teacher's training bags: gold-labelled ones, plus (``teacher_implied``) the ones whose
    response label implies sentence labels; gold wins where both exist."""
    if not config.teacher_implied:
        return _gold_bags(train)
    labels = torch.where(train.gold >= 0, train.gold, implied_labels(train, aggregation, n_classes=n_classes))
    return _gold_bags(BagSet(**{**train.__dict__, "gold": labels}))


def sentence_targets(
    plan: registry.MethodPlan,
    train: BagSet,
    n_classes: int,
    *,
    teacher: Callable[[BagSet], SentenceScorer],
) -> BagSet:
    """``train`` with the constant per-sentence targets of ``plan``'s bag objective, computed once from its
    frozen vectors: the cosine target (for mean bags moved to each bag's proportion), the correlation pairs and
    (hybrid) the teacher's soft predictions; ``teacher(bags)`` trains the teacher on ``bags`` and returns it.
    The frozen fit and the one-pass scorer (``experimental.one_pass_methods``) both take their targets here."""
    weights, aggregation = plan.loss_weights, plan.aggregation
    if "cosine" in weights:
        train = train.with_cosine_target()
        if aggregation == "mean":  # the prior keeps its ranking inside a bag but meets the bag's proportion
            assert train.cos_target is not None
            train.cos_target = proportion_target(train.cos_target, train.bag_index, train.labels)
    if "correlation" in weights:  # O(sum of squared bag sizes): only built when its weight is > 0
        train = train.with_correlation_pairs()
    if plan.runs(registry.STAGE_TEACHER):
        model = teacher(_teacher_bags(train, aggregation, n_classes, plan.config))
        with torch.inference_mode():
            train.hyb_target = model(train).exp()  # frozen soft targets, computed once
    return train


def fit_pipeline(
    plan: registry.MethodPlan, context: FitContext, *, init: SentenceScorer | None = None
) -> FitResult:
    """Carry out a single-method ``plan`` on ``context``'s bags under the plan's config (an ``auto`` candidate
    runs under its own). ``init``: the bag stage starts from a copy of this fitted scorer instead of a fresh one
    (a warm start, e.g. ``auto``'s priors candidates from its BagLoss fit)."""
    if plan.pipeline == "auto":
        raise ValueError("auto is a choice among fits: run it through fractal_core.fitting.fit.fit_method")
    with cpu_threads(plan.config.cpu_threads, context.device):
        return _run(plan, context, init)


class FrozenStages:
    """The training stages of a frozen-vector fit of ``plan`` on ``context``: fresh seeded scorers of the plan's
    spec and :func:`train_stage` under its config and validation rule, each stage's history kept in ``stages``."""

    def __init__(self, plan: registry.MethodPlan, context: FitContext) -> None:
        self.plan, self.context = plan, context
        self.generator = torch.Generator().manual_seed(context.seed)
        self.validate, _ = make_validator(context.valid, aggregation=context.aggregation, config=plan.config)
        self.spec = scorer_spec(plan.config, context.train, context.valid)
        self.stages: list[StageResult] = []

    def fresh(self) -> SentenceScorer:
        dim = int(self.context.train.sent_emb.shape[1])
        return fresh_scorer(
            self.spec, dim, self.context.n_classes, self.plan.config, self.generator, self.context.device
        )

    def run(self, name: str, model: SentenceScorer, data: BagSet, objective: Objective) -> SentenceScorer:
        self.stages.append(
            train_stage(
                model,
                data,
                objective,
                config=self.plan.config,
                generator=self.generator,
                validate=self.validate,
                stage=name,
                progress=self.context.progress,
            )
        )
        return model

    def targets(self) -> BagSet:
        """The training bags with the plan's constant targets (:func:`sentence_targets`; the hybrid teacher
        trained here as a fresh scorer)."""
        return sentence_targets(
            self.plan,
            self.context.train,
            self.context.n_classes,
            teacher=lambda bags: self.run(registry.STAGE_TEACHER, self.fresh(), bags, instance_objective),
        )


def _run(plan: registry.MethodPlan, context: FitContext, init: SentenceScorer | None) -> FitResult:
    aggregation = context.aggregation
    result = FitResult(method=plan.pipeline, model=None)
    if not plan.trained:
        if plan.pipeline == "constant":  # a few parameters fitted to the labels, read through the calibration
            fitted = fit_constant(context.train, aggregation=aggregation, n_classes=context.n_classes)
            result.calibration = fitted.to_dict()
        return result
    stages = FrozenStages(plan, context)
    result.stages = stages.stages
    if plan.runs(registry.STAGE_SUPERVISED):
        result.model = stages.run(
            registry.STAGE_SUPERVISED, stages.fresh(), _gold_bags(context.train), instance_objective
        )
        return result
    train = stages.targets()
    model = stages.run(
        registry.STAGE_BAG,
        copy.deepcopy(init) if init is not None else stages.fresh(),
        train,
        bag_objective(plan.config, aggregation, plan.loss_weights),
    )
    if plan.runs(registry.STAGE_PSLAB):
        with torch.inference_mode():
            labels = pseudo_labels(
                model(train), train.bag_index, train.labels, aggregation=aggregation, gold=train.gold
            )
        pseudo = BagSet(**{**train.__dict__, "gold": labels})
        model = stages.run(registry.STAGE_PSLAB, stages.fresh(), pseudo, instance_objective)
    result.model = model
    return result


__all__ = [
    "METHODS",
    "TRAINED",
    "FrozenStages",
    "first_error_annotated",
    "fit_pipeline",
    "fresh_scorer",
    "gold_bag_ids",
    "implied_labels",
    "scorer_spec",
    "sentence_targets",
]
