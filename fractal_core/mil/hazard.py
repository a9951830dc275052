"""The first-error (hazard) objective over flat ragged bags of ordered steps.

A step's problem probability is read as a hazard: h_i = P(step i has a problem | steps before it are fine), so
P(first problem = i) = h_i prod_{j<i} (1 - h_j) and P(no problem) = prod_j (1 - h_j). A problem is level >= 1
(``log_positive``); log(1 - h_i) is the level-0 log-probability. What each bag contributes is the exact
log-likelihood of what is known about it:

- a gold first problem at step k (its first gold positive): log h_k + sum_{j<k} log(1 - h_j); the steps after
  it are not judged (first-error protocol) and are ignored;
- otherwise its response label: log P(no problem) for a response labelled 0, log(1 - P(no problem)) (the
  noisy-OR) for one labelled >= 1.

The ranking term is the first-error distribution given the label, log P(first = k | a problem) =
log P(first = k) - log(1 - P(no problem)), averaged over the bags with a gold first problem: the distribution
the F key's ``first_error_mode`` ranks steps by. Unlike the exact term it also reaches the steps after k, the
alternatives to it (their first-error mass is lowered, the gold step's raised). Any scorer that gives step log-probabilities (N, C) trains with it.
Segment sums only: no Python loop over bags or steps.
"""

from __future__ import annotations

import torch

from fractal_core.mil.aggregate import log_positive
from fractal_core.mil.reductions import segment_sum


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends (tiny in magnitude and very negative)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def step_positions(bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Position of each step inside its bag (N,) long; ``bag_index`` sorted ascending (steps in order)."""
    n = bag_index.shape[0]
    counts = torch.bincount(bag_index, minlength=n_bags)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(n, device=bag_index.device) - starts[bag_index]


def first_gold_problem(gold: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Position of each bag's first gold problem (level >= 1) (B,) long, -1 when it has none."""
    pos = step_positions(bag_index, n_bags)
    big = bag_index.shape[0] + 1
    first = torch.full((n_bags,), big, dtype=torch.long, device=bag_index.device)
    positive = gold >= 1
    first = first.scatter_reduce(0, bag_index[positive], pos[positive], reduce="amin")
    return torch.where(first < big, first, torch.full_like(first, -1))


def first_error_protocol(gold: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> bool:
    """Whether gold labels (N,) follow the first-error protocol of step data: in every bag with a positive,
    nothing after its first positive is labelled, and some bag has steps there (steps after the first wrong
    one are not judged, because they follow from it). ``bag_index`` sorted, steps in order."""
    first = first_gold_problem(gold, bag_index, n_bags)
    own = first[bag_index]
    after = (own >= 0) & (step_positions(bag_index, n_bags) > own)
    return bool(after.any()) and not bool((after & (gold >= 0)).any())


def hazard_terms(
    logp: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor, gold: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per bag (B,): (exact log-likelihood of what is known, log P(first = gold first problem | a problem),
    whether the bag has a gold first problem). logp (N, C) step log-probabilities, bag_index (N,) sorted with
    steps in order, bag_labels (B,) response levels, gold (N,) long, -1 where unknown."""
    n_bags = int(bag_labels.shape[0])
    log_fine = logp[:, 0]  # log(1 - h_i)
    log_problem = log_positive(logp)  # log h_i
    log_none = segment_sum(log_fine, bag_index, n_bags)  # log P(no problem)
    log_some = _log1mexp(log_none)  # log P(a problem)
    first = first_gold_problem(gold, bag_index, n_bags)
    has_first = first >= 0
    pos = step_positions(bag_index, n_bags)
    own_first = first[bag_index]
    before = (pos < own_first) & (own_first >= 0)
    at = pos == own_first
    zero = torch.zeros_like(log_fine)
    log_first = segment_sum(
        torch.where(before, log_fine, zero) + torch.where(at, log_problem, zero), bag_index, n_bags
    )
    says_problem = bag_labels >= 1
    label_ll = torch.where(says_problem, log_some, log_none)
    exact = torch.where(has_first, log_first, label_ll)
    conditional = torch.where(has_first, log_first - log_some, torch.zeros_like(log_first))
    return exact, conditional, has_first


def hazard_loss(
    logp: torch.Tensor,
    bag_index: torch.Tensor,
    bag_labels: torch.Tensor,
    gold: torch.Tensor,
    *,
    rank: float = 0.0,
) -> torch.Tensor:
    """Negative mean exact log-likelihood over bags (:func:`hazard_terms`) plus ``rank`` times the mean negative
    log P(first = k | a problem) over the bags with a gold first problem (0 when there are none)."""
    exact, conditional, has_first = hazard_terms(logp, bag_index, bag_labels, gold)
    loss = -exact.mean()
    if rank > 0 and bool(has_first.any()):
        loss = loss - rank * conditional[has_first].mean()
    return loss


__all__ = ["first_error_protocol", "first_gold_problem", "hazard_loss", "hazard_terms", "step_positions"]
