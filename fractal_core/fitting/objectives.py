"""What a training stage minimises and how it early-stops: the suite's objectives over a minibatch of bags, and
the validation rules (a score of a scorer, higher is better) every scorer, frozen or fine-tuned, stops by."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from fractal_core.evaluation.metrics import auc_roc
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.model import SentenceScorer
from fractal_core.fitting.train import Data, Objective, Validator
from fractal_core.mil.aggregate import positive_score
from fractal_core.mil.hazard import hazard_loss, hazard_terms
from fractal_core.mil.losses import (
    bag_log_likelihood,
    bag_loss,
    correlation_prior,
    cosine_prior,
    instance_loss,
    pref_bag_loss,
    soft_cross_entropy,
)

LogpRule = Callable[[torch.Tensor], float]  # validation sentences' log-probabilities (N, C) -> score
BALANCE_BAGS = 2048
"""Bags (or units) on which each term's starting loss is measured (:func:`balance_sample`)."""


def balance_sample(data: Data, n: int = BALANCE_BAGS) -> Data:
    """The first (up to) ``n`` bags of ``data``: where :func:`balancing_scales` measures the starting losses."""
    return data.select(torch.arange(min(data.n_bags, n), device=data.device))


def balancing_scales(start: Sequence[torch.Tensor]) -> list[float]:
    """1 / each term's loss under the fresh model (``start``, measured on :func:`balance_sample`), so every term
    of a summed objective starts at 1. Why: summed as they are, a term of small scale (a proportion's squared
    error, ~0.01-0.05) is dwarfed by one of large scale (a max bag's log-loss, ~0.3-0.7) in the shared
    scorer's gradient, and its task then trails its alone fit by far (several criteria on synthetic planted
    tasks: sentence AUC 0.72 against 0.99 alone). The joint fit of several criteria (``criteria_fit``) and the
    preference loss beside response labels (``preference``) both balance by it."""
    return [1.0 / max(float(loss), 1e-8) for loss in start]


LogpObjective = Callable[[torch.Tensor, BagSet], torch.Tensor]
"""A loss of sentence log-probabilities (N, C) of a minibatch of bags (labels, gold and constant targets)."""


def bag_terms(config: TrainConfig, aggregation: str, weights: Mapping[str, float]) -> LogpObjective:
    """BagLoss (or the first-error hazard likelihood, ``mil.hazard``) + the priors on a minibatch's
    log-probabilities, each term scaled by ``weights`` (``MethodPlan.loss_weights``; absent terms are neither
    built nor computed). Any scorer's log-probabilities: the frozen scorers' and the one-pass scorer's."""

    def terms(logp: torch.Tensor, batch: BagSet) -> torch.Tensor:
        n = batch.n_bags
        loss = logp.new_zeros(())
        if "bag" in weights:
            loss = loss + weights["bag"] * bag_loss(
                logp,
                batch.bag_index,
                batch.labels,
                aggregation=aggregation,
                variant=config.bag_variant,
                temperature=config.lse_temperature,
                proportion=config.proportion_loss,
            )
        if "hazard" in weights:
            loss = loss + weights["hazard"] * hazard_loss(
                logp, batch.bag_index, batch.labels, batch.gold, rank=config.hazard_rank
            )
        if "cosine" in weights:
            assert batch.cos_target is not None
            loss = loss + weights["cosine"] * cosine_prior(logp, batch.bag_index, n, batch.cos_target)
        if "correlation" in weights:
            assert batch.pair_i is not None and batch.pair_j is not None and batch.pair_r is not None
            loss = loss + weights["correlation"] * correlation_prior(
                logp, batch.bag_index, n, batch.pair_i, batch.pair_j, batch.pair_r
            )
        if "hybrid" in weights:
            assert batch.hyb_target is not None
            loss = loss + weights["hybrid"] * soft_cross_entropy(logp, batch.hyb_target)
        return loss

    return terms


def instance_terms(logp: torch.Tensor, batch: BagSet) -> torch.Tensor:
    """Plain instance NLL of log-probabilities on ``batch.gold`` (gold, pseudo- or implied labels; -1 ignored)."""
    return instance_loss(logp, batch.gold)


def bag_objective(config: TrainConfig, aggregation: str, weights: Mapping[str, float]) -> Objective:
    """:func:`bag_terms` on the scorer's log-probabilities of the minibatch."""
    terms = bag_terms(config, aggregation, weights)

    def objective(model: SentenceScorer, batch: BagSet) -> torch.Tensor:
        return terms(model(batch), batch)

    return objective


def instance_objective(model: SentenceScorer, batch: BagSet) -> torch.Tensor:
    """:func:`instance_terms` on the scorer's log-probabilities of the minibatch."""
    return instance_terms(model(batch), batch)


def preference_objective(model: SentenceScorer, batch: BagSet) -> torch.Tensor:
    """PrefBagLoss on bags laid out as pairs (``preference.preference_bags``)."""
    first = torch.arange(0, batch.n_bags, 2, device=batch.device)
    second = first + 1
    return pref_bag_loss(model(batch), batch.bag_index, batch.n_bags, first, second, batch.labels[second])


def logp_validator(
    valid: BagSet | None, *, aggregation: str, config: TrainConfig
) -> tuple[LogpRule | None, str]:
    """The early-stopping rule as a function of the validation sentences' log-probabilities (N, C): sentence AUC
    on validation gold, else the exact bag log-likelihood (mean over bags; for mean bags the Poisson-binomial
    likelihood of the count); ``valid_metric="first_error"``: the exact first-error log-likelihood of the
    validation bags (``mil.hazard.hazard_terms``: gold first errors where known, else the response labels). Returns ``(rule or None, mode)``; any scorer (the MLP, a fine-tuned encoder)
    early-stops by it."""
    if valid is None or valid.n_bags == 0:
        return None, "train_loss"
    gold = valid.gold
    labelled = gold >= 0
    positives = int((gold[labelled] >= 1).sum())
    enough_gold = int(labelled.sum()) >= config.min_gold_for_valid and 0 < positives < int(labelled.sum())
    mode: str = config.valid_metric
    if mode == "auto":
        mode = "sentence" if enough_gold else "bag"
    if mode == "sentence" and not enough_gold:
        raise ValueError("valid_metric='sentence' needs gold labels of both classes on the validation bags")

    def validate_sentence(logp: torch.Tensor) -> float:
        score = positive_score(logp)
        return auc_roc((gold[labelled] >= 1).cpu().numpy(), score[labelled].cpu().numpy())

    def validate_bag(logp: torch.Tensor) -> float:
        return float(bag_log_likelihood(logp, valid.bag_index, valid.labels, aggregation=aggregation).mean())

    def validate_first_error(logp: torch.Tensor) -> float:
        return float(hazard_terms(logp, valid.bag_index, valid.labels, gold)[0].mean())

    if mode == "first_error":
        if aggregation != "max":
            raise ValueError(
                "valid_metric='first_error' needs step responses labelled by their worst step (max)"
            )
        return validate_first_error, mode
    return (validate_sentence if mode == "sentence" else validate_bag), mode


def make_validator(
    valid: BagSet | None, *, aggregation: str, config: TrainConfig
) -> tuple[Validator | None, str]:
    """Early-stopping score (higher is better) of a scorer: :func:`logp_validator` on ``model(valid)``."""
    rule, mode = logp_validator(valid, aggregation=aggregation, config=config)
    if rule is None or valid is None:
        return None, mode
    judge = rule

    def validate(model: SentenceScorer) -> float:
        with torch.inference_mode():
            return judge(model(valid))

    return validate, mode


__all__ = [
    "BALANCE_BAGS",
    "balance_sample",
    "balancing_scales",
    "LogpObjective",
    "bag_objective",
    "bag_terms",
    "instance_objective",
    "instance_terms",
    "logp_validator",
    "make_validator",
    "preference_objective",
]
