"""The FRACTAL loss suite over flat ragged bags.

Shapes: N sentences, B bags, C levels, P sentence pairs. ``bag_index`` (N,) maps sentences to bags.
Every loss returns a scalar and is a mean over bags (bag terms) or sentences (instance terms).
"""

from __future__ import annotations

import torch

from fractal_core.mil.aggregate import aggregate, aggregate_mean, log_positive
from fractal_core.mil.posterior import count_log_likelihood
from fractal_core.mil.reductions import segment_count, segment_mean
from fractal_core.mil.variants import DEFAULT_BAG_VARIANT


def bag_loss(
    logp: torch.Tensor,
    bag_index: torch.Tensor,
    bag_labels: torch.Tensor,
    *,
    aggregation: str,
    variant: str = DEFAULT_BAG_VARIANT,
    temperature: float = 0.1,
    proportion: str = "mse",
) -> torch.Tensor:
    """BagLoss (DLLP-style): NLL of the bag label under the aggregate (max/min); for mean (LLP) bags the
    squared error of the expected proportion (``proportion="mse"``) or the exact NLL of the count of positive
    sentences the proportion implies (``"count"``, Poisson-binomial).

    logp (N, C); bag_labels (B,) float holding levels (max/min) or proportions (mean).
    """
    n_bags = bag_labels.shape[0]
    if aggregation == "mean" and proportion == "count":
        return -count_log_likelihood(logp, bag_index, bag_labels).mean()
    if aggregation == "mean" and proportion != "mse":
        raise ValueError(f"unknown proportion loss {proportion!r}")
    out = aggregate(
        logp, bag_index, n_bags, aggregation=aggregation, variant=variant, temperature=temperature
    )
    if aggregation == "mean":
        return torch.mean((out - bag_labels) ** 2)
    target = bag_labels.long().clamp(0, out.shape[1] - 1)
    return -out.gather(1, target.view(-1, 1)).mean()


def bag_log_likelihood(
    logp: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor, *, aggregation: str
) -> torch.Tensor:
    """Exact log-likelihood of every bag's label (B,) under independent sentences.

    max/min: the exact aggregate (noisy-OR / product / exact ordinal max); mean: the Poisson-binomial
    probability of the count of positive sentences. The yardstick for early stopping and method choice.
    """
    if aggregation == "mean":
        return count_log_likelihood(logp, bag_index, bag_labels)
    out = aggregate(logp, bag_index, bag_labels.shape[0], aggregation=aggregation, variant="prob")
    target = bag_labels.long().clamp(0, out.shape[1] - 1)
    return out.gather(1, target.view(-1, 1)).squeeze(1)


def _bag_weights(bag_index: torch.Tensor, n_bags: int, dtype: torch.dtype) -> torch.Tensor:
    """1 / (bag size * number of bags) per sentence, so sums are a mean over a bag then over bags."""
    counts = segment_count(bag_index, n_bags, dtype)
    return 1.0 / (counts[bag_index] * n_bags)


def soft_bce(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE(target, P(level >= 1)) per sentence with a soft target in [0, 1]: (N, C), (N,) -> (N,)."""
    return -(target * log_positive(logp) + (1.0 - target) * logp[:, 0])


def proportion_target(
    target: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor, *, iterations: int = 40
) -> torch.Tensor:
    """A prior target (N,) in [0, 1] moved to each proportion bag's own share: sigmoid(logit(t_i) + c_b) with the
    shift c_b (found by bisection, all bags at once) making the bag's mean target equal its label q_b.

    The raw cosine target (1 + cos) / 2 sits near 0.5-0.8 whatever the bag's proportion; pulling sentences of a
    bag labelled 0.1 towards it fights the BagLoss. The shifted target keeps the prior's ranking inside the bag.
    """
    n_bags = int(bag_labels.shape[0])
    logit = torch.logit(target.clamp(1e-4, 1 - 1e-4))
    q = bag_labels.clamp(0.0, 1.0).to(logit.dtype)
    lo = torch.full((n_bags,), -30.0, dtype=logit.dtype, device=logit.device)
    hi = torch.full((n_bags,), 30.0, dtype=logit.dtype, device=logit.device)
    for _ in range(iterations):  # bisection steps, each over every bag
        mid = (lo + hi) / 2
        share = segment_mean(torch.sigmoid(logit + mid[bag_index]), bag_index, n_bags)
        too_high = share > q
        hi = torch.where(too_high, mid, hi)
        lo = torch.where(too_high, lo, mid)
    return torch.sigmoid(logit + ((lo + hi) / 2)[bag_index])


def cosine_prior(
    logp: torch.Tensor, bag_index: torch.Tensor, n_bags: int, target: torch.Tensor, *, kind: str = "bce"
) -> torch.Tensor:
    """Cosine prior: pull P(level >= 1) towards t_i = (1 + cos(context, sentence)) / 2 (precomputed, (N,)).

    kind "bce" (QA runs) or "l1" (the summarisation runs' |t - p|). Mean over a bag, then over bags.
    """
    if kind == "bce":
        per_sentence = soft_bce(logp, target)
    elif kind == "l1":
        per_sentence = (torch.exp(log_positive(logp)) - target).abs()
    else:
        raise ValueError(f"unknown cosine prior kind {kind!r}")
    return (per_sentence * _bag_weights(bag_index, n_bags, logp.dtype)).sum()


def correlation_prior(
    logp: torch.Tensor,
    bag_index: torch.Tensor,
    n_bags: int,
    pair_i: torch.Tensor,
    pair_j: torch.Tensor,
    pair_r: torch.Tensor,
) -> torch.Tensor:
    """Correlation prior: per bag (1/n) sum_{i,j} |(1-p_i)(1-p_j) - R_ij| * |p_i p_j - R_ij|, mean over bags.

    pair_i, pair_j (P,) flat sentence indices of every ordered pair inside a bag (i == j included);
    pair_r (P,) = (1 + pearson(e_i, e_j)) / 2, precomputed.
    """
    p = torch.exp(log_positive(logp))
    pi, pj = p[pair_i], p[pair_j]
    per_pair = ((1 - pi) * (1 - pj) - pair_r).abs() * (pi * pj - pair_r).abs()
    counts = segment_count(bag_index, n_bags, logp.dtype)
    weight = 1.0 / (counts[bag_index[pair_i]] * n_bags)
    return (per_pair * weight).sum()


def soft_cross_entropy(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hybrid prior: mean over sentences of CE(q_i, p_i) with frozen soft targets q (N, C)."""
    return -(target * logp).sum(1).mean()


def instance_loss(logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plain instance NLL on labelled sentences; labels (N,) long with -1 for unlabelled (ignored)."""
    mask = labels >= 0
    if not bool(mask.any()):
        return logp.sum() * 0.0
    picked = logp.gather(1, labels.clamp_min(0).view(-1, 1)).squeeze(1)
    return -(picked * mask).sum() / mask.sum()


def pref_bag_loss(
    logp: torch.Tensor,
    bag_index: torch.Tensor,
    n_bags: int,
    first: torch.Tensor,
    second: torch.Tensor,
    second_better: torch.Tensor,
) -> torch.Tensor:
    """PrefBagLoss: s(B) = mean P(level >= 1) of a bag; P(B2 > B1) = s2 / (s1 + s2); BCE with the preference.

    first, second (K,) bag indices of each pair; second_better (K,) float in {0, 1} (or a soft preference).
    """
    score = aggregate_mean(logp, bag_index, n_bags).clamp_min(1e-6)
    s1, s2 = score[first], score[second]
    p_second = s2 / (s1 + s2)
    return torch.nn.functional.binary_cross_entropy(p_second.clamp(1e-6, 1 - 1e-6), second_better)
