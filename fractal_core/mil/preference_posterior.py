"""Sentence scores given a preference: P(level_i >= 1 | "the rejected response has more errors"), exact.

The given-label view of a labelled response (``mil.posterior``) conditions each sentence on the response's own
label. A preference pair carries no label of either response, only which one lost. Under the same model of
independent sentences, the count of erroneous sentences of a response is Poisson-binomial, and the preference
is the event E = {N_rejected > N_chosen}. Each sentence is scored by its posterior given E:

    i in the rejected response: P(y_i = 1 | E) = p_i P(N_rejected without i >= N_chosen) / P(E)
    i in the chosen response:   P(y_i = 1 | E) = p_i P(N_rejected > N_chosen without i + 1) / P(E)

A sentence that explains the loss (likely wrong and in the loser) rises, a likely error in the winner falls. A
soft preference (strength s in [0, 1], P(chosen better) = (1 + s) / 2) mixes the posteriors given E and given the
opposite event by that weight (Jeffrey's rule); ties belong to neither event.

Labels a person entered are known: under the same independence, conditioning on them sets each labelled
sentence's probability to its label (1 for level >= 1, 0 for level 0) and re-conditions the rest, so
P(y_i = 1 | the preference, the labels) is the same computation on those probabilities. Labels can make one
event impossible (the chosen response already has more errors than the rejected one has sentences): the
mixture then keeps the event still possible, and a pair where neither is (a sure tie) keeps the probabilities
given the labels alone.

Counts are computed once per response (a loop over the positions of the longest response, vectorised over
responses and counts); a sentence's leave-one-out count distribution is the response's divided by its own
Bernoulli factor, from the low end when p_i <= 1/2 and from the high end otherwise (stable both ways), a loop
over counts vectorised over sentences. Probabilities are float64: the counts of a response of a few hundred
sentences stay accurate.
"""

from __future__ import annotations

import torch

from fractal_core.mil.aggregate import positive_score
from fractal_core.mil.reductions import segment_count


def _padded(p: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Sentence probabilities (N,) laid out per bag (B, L), padded with 0 (a sentence that is never positive)."""
    sizes = segment_count(bag_index, n_bags, torch.long)
    width = max(int(sizes.max()) if n_bags else 0, 1)
    starts = torch.cumsum(sizes, 0) - sizes
    pos = torch.arange(bag_index.shape[0], device=p.device) - starts[bag_index]
    out = p.new_zeros((n_bags, width))
    out[bag_index, pos] = p
    return out


def count_pmf(p: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """P(the bag has k positive sentences) (B, L + 1) for sentence probabilities p (N,) in [0, 1], bag_index
    (N,) sorted ascending; L = the longest bag's size."""
    padded = _padded(p.double(), bag_index, n_bags)  # (B, L)
    width = padded.shape[1]
    state = padded.new_zeros((n_bags, width + 1))
    state[:, 0] = 1.0
    for j in range(width):  # positions of the longest bag; every bag and count at once
        pj = padded[:, j : j + 1]
        shifted = torch.nn.functional.pad(state[:, :-1], (1, 0))
        state = state * (1.0 - pj) + shifted * pj
    return state


def leave_one_out(pmf: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The count distribution of a sentence's bag without that sentence (N, L + 1) from its bag's distribution
    ``pmf`` (N, L + 1) (one row per sentence) and its own probability ``p`` (N,)."""
    p = p.double().view(-1, 1)
    q = 1.0 - p
    width = pmf.shape[1]
    low = pmf.new_zeros(pmf.shape)  # divide from count 0 up: stable for p <= 1/2
    low[:, :1] = pmf[:, :1] / q.clamp_min(0.5)
    for k in range(1, width):
        low[:, k : k + 1] = (pmf[:, k : k + 1] - p * low[:, k - 1 : k]) / q.clamp_min(0.5)
    high = pmf.new_zeros(pmf.shape)  # divide from the top count down: stable for p > 1/2
    high[:, width - 2 : width - 1] = pmf[:, width - 1 : width] / p.clamp_min(0.5)
    for k in range(width - 2, 0, -1):
        high[:, k - 1 : k] = (pmf[:, k : k + 1] - q * high[:, k : k + 1]) / p.clamp_min(0.5)
    return torch.where(p <= 0.5, low, high).clamp_min(0.0)


def _given_worse(
    p: torch.Tensor, bag_index: torch.Tensor, pmf: torch.Tensor, worse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """P(y_i = 1 | N_worse > N_better) (N,) on bags laid out as pairs (bag 2k, 2k + 1), and P(N_worse >
    N_better) of each sentence's pair (N,); ``worse`` (B,) bool marks the bag of each pair that lost."""
    partner = torch.arange(pmf.shape[0], device=pmf.device) ^ 1
    cdf = pmf.cumsum(1)  # (B, L + 1): P(N <= a)
    tail = pmf.flip(1).cumsum(1).flip(1)  # (B, L + 1): P(N >= t)
    # P(E) per bag: sum_a P(N_worse = a) P(N_better <= a - 1), from the worse bag's side of each pair.
    w = torch.where(worse, torch.arange(pmf.shape[0], device=pmf.device), partner)  # (B,) the pair's loser
    b = w ^ 1
    below = torch.nn.functional.pad(cdf[b, :-1], (1, 0))  # (B, L + 1): P(N_better <= a - 1)
    p_event = (pmf[w] * below).sum(1)  # (B,)
    others = leave_one_out(pmf[bag_index], p)  # (N, L + 1)
    mine = bag_index
    # In the loser: P(N_others + 1 > N_better) = sum_a P(N_others = a) P(N_better <= a).
    in_worse = (others * cdf[partner[mine]]).sum(1)
    # In the winner: P(N_worse > N_others + 1) = sum_b P(N_others = b) P(N_worse >= b + 2).
    shifted_tail = torch.nn.functional.pad(tail[partner[mine], 2:], (0, 2))
    in_better = (others * shifted_tail).sum(1)
    joint = p.double() * torch.where(worse[mine], in_worse, in_better)
    return (joint / p_event[mine].clamp_min(1e-300)).clamp(0.0, 1.0), p_event[mine]


def preference_posterior(
    logp: torch.Tensor,
    bag_index: torch.Tensor,
    strength: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """P(level_i >= 1 | the preference[, the labels]) per sentence (N,) float64 on bags laid out as pairs: bag
    2k is pair k's chosen (preferred) response, bag 2k + 1 its rejected one.

    logp (N, C) sentence log-probabilities (level >= 1 counts as positive), bag_index (N,) sorted ascending,
    strength (K,) in [0, 1] per pair (1: the chosen one is surely better; 0: no preference), labels (N,) the
    levels people entered, NaN where unlabelled (a labelled sentence comes back as 1.0 or 0.0, the others
    re-conditioned on it).
    """
    n_bags = 2 * int(strength.shape[0])
    if int(bag_index.shape[0]) and int(bag_index.max()) >= n_bags:
        raise ValueError("bag_index refers to a bag outside the pairs")
    p = positive_score(logp).double()
    known = torch.zeros_like(p, dtype=torch.bool)
    if labels is not None:
        if labels.shape != p.shape:
            raise ValueError(f"labels has shape {tuple(labels.shape)}, expected {tuple(p.shape)}")
        known = ~torch.isnan(labels)
        p = torch.where(known, (labels.double() >= 1.0).double(), p)
    pmf = count_pmf(p, bag_index, n_bags)
    rejected = torch.arange(n_bags, device=p.device) % 2 == 1
    lost, p_lost = _given_worse(p, bag_index, pmf, rejected)
    won, p_won = _given_worse(p, bag_index, pmf, ~rejected)
    weight = ((1.0 + strength.double().clamp(0.0, 1.0)) / 2.0).repeat_interleave(2)[bag_index]  # (N,)
    # Jeffrey's rule over the events still possible; a sure tie keeps p (given the labels).
    w_lost = weight * (p_lost > 0)
    w_won = (1.0 - weight) * (p_won > 0)
    total = w_lost + w_won
    mixed = (w_lost * lost + w_won * won) / total.clamp_min(1e-300)
    # A labelled sentence is its label exactly (the division above leaves rounding).
    return torch.where(known | (total <= 0), p, mixed)


__all__ = ["count_pmf", "leave_one_out", "preference_posterior"]
