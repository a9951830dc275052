"""Sentence scores given the response's own label: P(level_i >= 1 | Y, model), exact under independence.

The model's marginal p_i ignores what the user already knows about the response. Conditioning on Y is the
principled way to use it: for a max bag with Y = 0 every sentence is 0; for Y = 1 the mass is spread by the
model, p_i / (1 - prod_j (1 - p_j)). The naive baseline (every sentence inherits Y) is this posterior under a
model that cannot tell sentences apart. Everything is a segment reduction (no loop over bags).
"""

from __future__ import annotations

import torch

from fractal_core.aggregate import log1mexp, log_positive, positive_score
from fractal_core.segments import segment_argmax, segment_count, segment_logsumexp, segment_sum


def _max_posterior(
    logp: torch.Tensor, bag_index: torch.Tensor, target: torch.Tensor, n_bags: int
) -> torch.Tensor:
    """P(level_i >= 1 | max = Y) for max bags with levels Y (N,); binary or ordinal."""
    n_classes = logp.shape[1]
    log_cdf = torch.logcumsumexp(logp, dim=1)  # (N, C): log F_i(c)
    bag_cdf = segment_sum(log_cdf, bag_index, n_bags)  # (B, C): log P(max <= c)
    y = target[bag_index].clamp(0, n_classes - 1)  # (N,)
    y_prev = (y - 1).clamp_min(0)
    own = log_cdf.gather(1, torch.stack([y, y_prev], 1))  # (N, 2)
    bag = bag_cdf[bag_index].gather(1, torch.stack([y, y_prev], 1))  # (N, 2)
    others = bag - own  # log P(max over the other sentences <= Y), <= Y-1
    # log P(y_i = 0, max = Y) = log p_i0 + log P(max_others = Y); log P(max = Y) for the bag.
    log_joint = logp[:, 0] + others[:, 0] + log1mexp(others[:, 1] - others[:, 0])
    log_bag = bag[:, 0] + log1mexp(bag[:, 1] - bag[:, 0])
    posterior = 1.0 - torch.exp((log_joint - log_bag).clamp(max=0.0))
    return torch.where(y >= 1, posterior, torch.zeros_like(posterior))


def _min_posterior(
    logp: torch.Tensor, bag_index: torch.Tensor, target: torch.Tensor, n_bags: int
) -> torch.Tensor:
    """P(y_i = 1 | min = Y) for binary min bags (N,)."""
    all_pos = segment_sum(logp[:, 1], bag_index, n_bags)[bag_index]  # log prod_j p_j
    others = all_pos - logp[:, 1]
    posterior = torch.exp((logp[:, 1] + log1mexp(others) - log1mexp(all_pos)).clamp(max=0.0))
    return torch.where(target[bag_index] >= 1, torch.ones_like(posterior), posterior)


def posterior_scores(
    logp: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor, *, aggregation: str
) -> torch.Tensor:
    """P(level_i >= 1 | the bag's label) per sentence (N,) from log-probabilities (N, C).

    Bags whose label is unknown (NaN) keep the marginal score; so do ``mean`` bags, where conditioning on a
    proportion has no closed form (the LLP model is already fitted to the proportions).
    """
    marginal = positive_score(logp)
    if aggregation not in ("max", "min"):
        return marginal
    known = torch.isfinite(bag_labels)
    target = torch.where(known, bag_labels, torch.zeros_like(bag_labels)).round().long()
    n_bags = int(bag_labels.shape[0])
    fn = _max_posterior if aggregation == "max" else _min_posterior
    conditioned = fn(logp, bag_index, target, n_bags)
    return torch.where(known[bag_index], conditioned, marginal).clamp(0.0, 1.0)


def first_error_log_distribution(logp: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """log P(first positive = i | the bag has a positive) per sentence (N,), for max bags in step order.

    Under independent sentences, P(first = i | Y >= 1) ∝ p_i · prod_{j<i} (1 - p_j), with p_i = P(level_i >= 1):
    what a reviewer of a response labelled "has an error" should read, rather than the marginal argmax (a late
    step that looks wrong matters less when an earlier one probably already is). Exclusive prefix sums of
    log(1 - p_j) within each bag (one flat cumulative sum minus each bag's offset) and a segment log-sum-exp
    normalise it: no loop over bags. Exponentiated, each bag's values sum to 1.
    """
    log_pos = log_positive(logp)  # (N,)
    log_neg = log1mexp(log_pos)  # (N,) log(1 - p_i)
    cumulative = torch.cumsum(log_neg.double(), 0)  # (N,)
    counts = segment_count(bag_index, n_bags, torch.long)
    starts = torch.cumsum(counts, 0) - counts
    before_bag = (cumulative[starts] - log_neg[starts].double())[bag_index]  # (N,)
    earlier = (cumulative - log_neg.double() - before_bag).to(logp.dtype)  # sum_{j<i} log(1 - p_j)
    joint = log_pos + earlier  # log P(first = i) without conditioning
    return joint - segment_logsumexp(joint, bag_index, n_bags)[bag_index]


def most_likely_first_error(
    logp: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per max bag, its most likely first positive sentence given its label -> (index, probability), (B,) each.

    ``index`` is the position inside the bag (0-based) or -1 when the label says there is none (Y = 0); bags
    without a label (NaN) are read as if they had a positive. ``probability`` is P(first = index | Y >= 1).
    """
    n_bags = int(bag_labels.shape[0])
    if n_bags == 0:
        empty = torch.zeros(0, dtype=torch.long, device=logp.device)
        return empty, empty.to(logp.dtype)
    log_first = first_error_log_distribution(logp, bag_index, n_bags)  # (N,)
    best = segment_argmax(log_first, bag_index, n_bags)  # (B,) flat index
    counts = segment_count(bag_index, n_bags, torch.long)
    starts = torch.cumsum(counts, 0) - counts
    probability = torch.exp(log_first[best.clamp_min(0)])
    none = (bag_labels < 1) | (best < 0)  # NaN labels compare False: read as having a positive
    index = torch.where(none, torch.full_like(best, -1), best - starts)
    return index, torch.where(none, torch.zeros_like(probability), probability)


def first_error_from_scores(
    scores: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`most_likely_first_error` from stored sentence scores P(level >= 1) (N,) instead of log-probabilities:
    what a client that only kept the scores (the app's store) calls. Scores are clipped to [1e-6, 1 - 1e-6]."""
    p = scores.clamp(1e-6, 1.0 - 1e-6)
    logp = torch.stack([torch.log1p(-p), torch.log(p)], dim=1)  # (N, 2)
    return most_likely_first_error(logp, bag_index, bag_labels)
