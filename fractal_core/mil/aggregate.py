"""Bag aggregations of sentence predictions, all as segment reductions.

Sentence predictions are log-probabilities ``logp`` (N, C) over C label levels (C == 2 for binary labels).
A max/min aggregation returns the bag's log-probabilities (B, C) over its own label; ``mean`` returns the
bag's expected proportion of positive sentences (B,).
"""

from __future__ import annotations

import math

import torch

from fractal_core.mil.reductions import (
    segment_argmax,
    segment_argmin,
    segment_logsumexp,
    segment_mean,
    segment_sum,
)
from fractal_core.mil.variants import DEFAULT_BAG_VARIANT, check_variant

_LOG_HALF = -math.log(2.0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012)."""
    x = x.clamp(max=-1e-12)
    return torch.where(x > _LOG_HALF, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_positive(logp: torch.Tensor) -> torch.Tensor:
    """log P(level >= 1) per sentence: (N, C) -> (N,)."""
    if logp.shape[1] == 2:
        return logp[:, 1]
    return torch.logsumexp(logp[:, 1:], dim=1)


def positive_score(logp: torch.Tensor) -> torch.Tensor:
    """P(level >= 1) per sentence, the score users see: (N, C) -> (N,)."""
    return torch.exp(log_positive(logp))


def binary_logit(logp: torch.Tensor) -> torch.Tensor:
    """logit of P(level >= 1): (N, C) -> (N,)."""
    return log_positive(logp) - logp[:, 0]


def _two_class(log_neg: torch.Tensor, log_pos: torch.Tensor) -> torch.Tensor:
    return torch.stack([log_neg, log_pos], dim=1)


def aggregate_max(
    logp: torch.Tensor,
    bag_index: torch.Tensor,
    n_bags: int,
    *,
    variant: str = DEFAULT_BAG_VARIANT,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Bag log-probabilities of Y = max_i y_i: (N, C) -> (B, C).

    variant "hard": the bag takes the prediction of its highest-scoring sentence (paper-faithful, one sentence
    gets the gradient); "prob": exact under independent sentences (noisy-OR for C == 2, the exact ordinal max
    for C > 2, in log space); "lse": tempered log-sum-exp of sentence logits (binary only; ordinal bags use the
    exact form since a smooth max of class distributions is not a distribution).
    """
    n_classes = logp.shape[1]
    if variant == "hard":
        if n_classes == 2:
            pick = segment_argmax(logp[:, 1], bag_index, n_bags)
        else:
            levels = torch.arange(n_classes, dtype=logp.dtype, device=logp.device)
            pick = segment_argmax((logp.exp() * levels).sum(1), bag_index, n_bags)
        return logp[pick]
    if variant == "lse" and n_classes == 2:
        z = binary_logit(logp) / temperature
        bag_logit = temperature * segment_logsumexp(z, bag_index, n_bags)
        return _two_class(
            torch.nn.functional.logsigmoid(-bag_logit), torch.nn.functional.logsigmoid(bag_logit)
        )
    check_variant(variant)
    if n_classes == 2:
        log_all_neg = segment_sum(logp[:, 0], bag_index, n_bags)  # log P(max = 0) = sum log(1 - p_i)
        return _two_class(log_all_neg, log1mexp(log_all_neg))
    # Exact ordinal max: P(max <= c) = prod_i F_i(c), P(max = c) = P(max <= c) - P(max <= c-1).
    log_cdf = torch.logcumsumexp(logp, dim=1)  # (N, C)
    log_bag_cdf = segment_sum(log_cdf, bag_index, n_bags)  # (B, C)
    first = log_bag_cdf[:, :1]
    rest = log_bag_cdf[:, 1:] + log1mexp(log_bag_cdf[:, :-1] - log_bag_cdf[:, 1:])
    return torch.cat([first, rest], dim=1)


def aggregate_min(
    logp: torch.Tensor,
    bag_index: torch.Tensor,
    n_bags: int,
    *,
    variant: str = DEFAULT_BAG_VARIANT,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Bag log-probabilities of Y = min_i y_i for binary labels: (N, 2) -> (B, 2)."""
    if logp.shape[1] != 2:
        raise ValueError("min aggregation is defined for binary labels only")
    if variant == "hard":
        return logp[segment_argmin(logp[:, 1], bag_index, n_bags)]
    if variant == "lse":
        z = binary_logit(logp) / temperature
        bag_logit = -temperature * segment_logsumexp(-z, bag_index, n_bags)
        return _two_class(
            torch.nn.functional.logsigmoid(-bag_logit), torch.nn.functional.logsigmoid(bag_logit)
        )
    check_variant(variant)
    log_all_pos = segment_sum(logp[:, 1], bag_index, n_bags)  # log P(min = 1) = sum log p_i
    return _two_class(log1mexp(log_all_pos), log_all_pos)


def aggregate_mean(logp: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Expected proportion of positive sentences per bag (LLP): (N, C) -> (B,)."""
    return segment_mean(positive_score(logp), bag_index, n_bags)


def aggregate(
    logp: torch.Tensor,
    bag_index: torch.Tensor,
    n_bags: int,
    *,
    aggregation: str,
    variant: str = DEFAULT_BAG_VARIANT,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Dispatch on the bag's aggregation ("max", "min", "mean")."""
    if aggregation == "max":
        return aggregate_max(logp, bag_index, n_bags, variant=variant, temperature=temperature)
    if aggregation == "min":
        return aggregate_min(logp, bag_index, n_bags, variant=variant, temperature=temperature)
    if aggregation == "mean":
        return aggregate_mean(logp, bag_index, n_bags)
    raise ValueError(f"unknown aggregation {aggregation!r}")


def bag_positive_score(bag_out: torch.Tensor) -> torch.Tensor:
    """P(Y >= 1) from aggregate(...)'s output (B, C) or the proportion itself (B,)."""
    if bag_out.dim() == 1:
        return bag_out
    return torch.exp(log_positive(bag_out))
