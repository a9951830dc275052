"""Every trained method of the suite on the one-pass scorer, through the suite's own objective code.

A method name resolves into the frozen route's plan (``registry.resolve``): the same stages in the same order and
the same weighted loss terms. Each stage that trains a scorer trains a one-pass scorer on
``objectives.bag_terms`` / ``objectives.instance_terms`` (via ``one_pass_scorer.one_pass_loss``). What a method
needs per sentence from frozen vectors (the cosine target, the correlation pairs, the hybrid teacher's soft
targets) is computed once, exactly as the frozen fit computes it (``methods.FrozenStages.targets`` on the
responses' frozen sentence vectors), and fed as constant targets. PsLab's pseudo-labels come from the one-pass
bag stage (its first fit), and a fresh one-pass scorer learns them. ``auto`` / ``fractal`` (a choice among
frozen fits) and the training-free baselines are refused (``registry.one_pass_refusal``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import EncoderConfig, get_encoder
from fractal_core.embedding.features import embed_records
from fractal_core.errors import InputError
from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.context import FitContext
from fractal_core.fitting.methods import FrozenStages
from fractal_core.fitting.objectives import LogpObjective, bag_terms, instance_terms
from fractal_core.fitting.train import ProgressFn, StageResult


def one_pass_plan(
    method: str, train: BagSet, *, aggregation: str, config: TrainConfig
) -> registry.MethodPlan:
    """``method`` resolved for the one-pass scorer on training bags ``train`` (their gold decides whether a
    gold-needing method may run); ``InputError`` on field ``method`` for a method it does not train."""
    if method not in registry.METHOD_NAMES:
        raise InputError(
            f"unknown method {method!r}; choose one of {', '.join(registry.ONE_PASS_METHODS)}", field="method"
        )
    refusal = registry.one_pass_refusal(method)
    if refusal is not None:
        raise InputError(refusal, field="method")
    has_gold = bool((train.gold >= 0).any())
    try:
        return registry.resolve(method, has_gold=has_gold, aggregation=aggregation, config=config)
    except InputError:
        raise
    except ValueError as err:
        raise InputError(str(err), field="method") from None


def needs_frozen_vectors(plan: registry.MethodPlan) -> bool:
    """Whether ``plan``'s objective has a target computed from frozen sentence vectors (cosine or correlation
    prior, hybrid teacher)."""
    return bool({"cosine", "correlation"} & set(plan.loss_weights)) or plan.runs(registry.STAGE_TEACHER)


def frozen_targets(
    plan: registry.MethodPlan,
    view: BagSet,
    train: Sequence[ResponseRecord],
    valid: Sequence[ResponseRecord] | None,
    *,
    n_classes: int,
    seed: int,
    encoder: EncoderConfig,
    progress: ProgressFn | None = None,
) -> tuple[BagSet, list[StageResult]]:
    """The training bags the one-pass stages read labels, gold and constant targets from, and the frozen
    stages run to make them (the hybrid teacher). Without a frozen-vector target: ``view`` (the windows' own
    bags, no embeddings). Else the records of ``train`` embedded by ``encoder`` (its cache), their targets set
    as the frozen fit sets them; ``valid`` is embedded too when a teacher early-stops on it."""
    if not needs_frozen_vectors(plan):
        return view, []
    model = get_encoder(encoder)
    bags = embed_records(train, model)
    if not torch.equal(bags.bag_index, view.bag_index):
        raise ValueError("the frozen vectors do not line up with the one-pass windows' steps")
    held = embed_records(valid, model) if valid and plan.runs(registry.STAGE_TEACHER) else None
    context = FitContext(
        bags, held, plan.aggregation, n_classes, config=plan.config, seed=seed, progress=progress
    )
    stages = FrozenStages(plan, context)
    return stages.targets(), stages.stages


def bag_stage_objective(plan: registry.MethodPlan, gold_weight: float) -> LogpObjective:
    """The plan's bag objective (``objectives.bag_terms``), + ``gold_weight`` x the instance NLL on gold."""
    terms = bag_terms(plan.config, plan.aggregation, plan.loss_weights)
    if gold_weight <= 0:
        return terms

    def objective(logp: torch.Tensor, batch: BagSet) -> torch.Tensor:
        return terms(logp, batch) + gold_weight * instance_terms(logp, batch)

    return objective


def pseudo_bags(targets: BagSet, labels: torch.Tensor) -> BagSet:
    """``targets`` with PsLab's pseudo-labels (N,) as the labels its instance stage learns."""
    return BagSet(**{**targets.__dict__, "gold": labels})


__all__ = [
    "bag_stage_objective",
    "frozen_targets",
    "needs_frozen_vectors",
    "one_pass_plan",
    "pseudo_bags",
]
