"""Sentence scores given the response's own label: P(level_i >= 1 | Y, model), exact under independence.

The model's marginal p_i ignores what the user already knows about the response. Conditioning on Y is the
principled way to use it: for a max bag with Y = 0 every sentence is 0; for Y = 1 the mass is spread by the
model, p_i / (1 - prod_j (1 - p_j)). The naive baseline (every sentence inherits Y) is this posterior under a
model that cannot tell sentences apart. Everything is a segment reduction (no loop over bags).

``mean`` (proportion) bags: a label q on a bag of n sentences is the count k = round(q n) of positive sentences;
under independent sentences the count is Poisson-binomial, and P(y_i = 1 | sum = k) = p_i P(sum of the others
= k - 1) / P(sum = k). Both come from one forward and one backward dynamic programme over the padded bags in
log space (a loop over the positions of the longest bag, vectorised over bags and counts).
"""

from __future__ import annotations

import torch

from fractal_core.mil.aggregate import log1mexp, log_positive, positive_score
from fractal_core.mil.reductions import segment_argmax, segment_count, segment_logsumexp, segment_sum

_NEG = -1e4  # log of a probability that is zero for every practical purpose (finite: gradients stay finite)
_PAD_BUDGET = 4_000_000  # elements of one (bags, L + 1, L + 1) table: longer data is processed in bag chunks


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


def bag_counts(bag_labels: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Proportion labels (B,) of bags of ``sizes`` (B,) as counts of positive sentences, rounded, in [0, n]."""
    return torch.minimum((bag_labels * sizes).round().clamp_min(0), sizes.to(bag_labels.dtype)).long()


def _positions(bag_index: torch.Tensor, n_bags: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of each sentence inside its bag (N,) (flat order kept) and the bag sizes (B,)."""
    order = torch.argsort(bag_index, stable=True)
    sizes = segment_count(bag_index, n_bags, torch.long)
    starts = torch.cumsum(sizes, 0) - sizes
    pos = torch.empty_like(bag_index)
    pos[order] = torch.arange(bag_index.shape[0], device=bag_index.device) - starts[bag_index[order]]
    return pos, sizes


def _pad(values: torch.Tensor, bags: torch.Tensor, pos: torch.Tensor, n_rows: int, width: int, fill: float):
    out = values.new_full((n_rows, width), fill)
    out[bags, pos] = values
    return out


def _count_dp(log_p: torch.Tensor, log_q: torch.Tensor, *, every_prefix: bool = True) -> torch.Tensor:
    """Every prefix's Poisson-binomial log-pmf: (R, L) padded log p, log(1 - p) -> (R, L + 1, L + 1).

    out[r, j, s] = log P(the first j sentences of row r sum to s). Padding has log p = _NEG, log(1 - p) = 0.
    With ``every_prefix=False`` only the whole bag's log-pmf (R, L + 1).
    """
    rows, length = log_p.shape
    state = log_p.new_full((rows, length + 1), _NEG)
    state[:, 0] = 0.0
    states = [state]
    edge = log_p.new_full((rows, 1), _NEG)
    for j in range(length):  # positions of the longest bag; every bag and count at once
        stay = state + log_q[:, j : j + 1]
        move = torch.cat([edge, state[:, :-1]], 1) + log_p[:, j : j + 1]
        state = torch.logaddexp(stay, move).clamp_min(_NEG)
        if every_prefix:
            states.append(state)
    return torch.stack(states, 1) if every_prefix else state


def count_log_likelihood(
    logp: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor
) -> torch.Tensor:
    """log P(sum_i y_i = k_b) per bag (B,) under independent sentences, k_b = round(q_b n_b); differentiable.

    logp (N, C) sentence log-probabilities (level >= 1 counts as positive); bag_labels (B,) proportions.
    """
    n_bags = int(bag_labels.shape[0])
    pos, sizes = _positions(bag_index, n_bags)
    out = logp.new_zeros(n_bags)
    for chunk, row, member, width in _chunks(bag_index, pos, sizes):
        p_pad = _pad(log_positive(logp)[member], row, pos[member], chunk.shape[0], width, _NEG)
        q_pad = _pad(logp[member, 0], row, pos[member], chunk.shape[0], width, 0.0)
        last = _count_dp(p_pad, q_pad, every_prefix=False)  # (R, L + 1)
        out = out.index_put(
            (chunk,), last.gather(1, bag_counts(bag_labels[chunk], sizes[chunk]).view(-1, 1))[:, 0]
        )
    return out


def _chunks(bag_index: torch.Tensor, pos: torch.Tensor, sizes: torch.Tensor):
    """Bags sorted by size, cut into chunks whose (rows, L + 1, L + 1) tables fit the budget.

    Yields (bag ids (R,), row of each member sentence, member mask (N,), padded width L). A handful of chunks,
    each vectorised over its bags (one chunk unless the data has very long responses).
    """
    n_bags = int(sizes.shape[0])
    by_size = torch.argsort(sizes, stable=True)
    rank = torch.empty_like(by_size)
    rank[by_size] = torch.arange(n_bags, device=sizes.device)
    sorted_sizes = sizes[by_size]
    lo = 0
    while lo < n_bags:
        cost = (torch.arange(n_bags - lo, device=sizes.device) + 1) * (sorted_sizes[lo:] + 1) ** 2
        hi = lo + max(1, int((cost <= _PAD_BUDGET).sum()))
        member = (rank[bag_index] >= lo) & (rank[bag_index] < hi)
        yield by_size[lo:hi], rank[bag_index[member]] - lo, member, max(int(sorted_sizes[hi - 1]), 1)
        lo = hi


def _mean_posterior(logp: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor) -> torch.Tensor:
    """P(y_i = 1 | sum of the bag = k) for proportion bags (N,): exact Poisson-binomial forward-backward."""
    n_bags = int(bag_labels.shape[0])
    pos, sizes = _positions(bag_index, n_bags)
    counts = bag_counts(bag_labels, sizes)
    lp, lq = log_positive(logp), logp[:, 0]
    out = torch.zeros_like(lp)
    for chunk, row, member, width in _chunks(bag_index, pos, sizes):
        rows = int(chunk.shape[0])
        p_pad = _pad(lp[member], row, pos[member], rows, width, _NEG)
        q_pad = _pad(lq[member], row, pos[member], rows, width, 0.0)
        prefix = _count_dp(p_pad, q_pad)  # prefix[:, j]: sum of sentences 0..j-1
        suffix = _count_dp(p_pad.flip(1), q_pad.flip(1)).flip(1)  # suffix[:, j]: sum of sentences j..L-1
        k = counts[chunk]  # (R,)
        a = torch.arange(width + 1, device=lp.device).view(1, 1, -1)
        other = (k - 1).view(-1, 1, 1) - a  # the others hold k - 1: prefix a, so the suffix k - 1 - a
        ok = (other >= 0) & (other <= width)
        after = suffix[:, 1:, :].gather(2, other.clamp(0, width).expand(rows, width, width + 1))
        terms = torch.where(ok, prefix[:, :width, :] + after, torch.full_like(after, 2 * _NEG))
        log_others = torch.logsumexp(terms, 2)  # (R, L): log P(sum over the others = k - 1)
        log_total = prefix[:, -1].gather(1, k.view(-1, 1))  # (R, 1): log P(sum = k)
        post = (p_pad + log_others - log_total).clamp(max=0.0).exp()
        post = torch.where(k.view(-1, 1) > 0, post, torch.zeros_like(post))
        out[member] = post[row, pos[member]]
    return out


def posterior_scores(
    logp: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor, *, aggregation: str
) -> torch.Tensor:
    """P(level_i >= 1 | the bag's label) per sentence (N,) from log-probabilities (N, C).

    Bags whose label is unknown (NaN) keep the marginal score. ``mean`` bags condition on the count of positive
    sentences their proportion implies (Poisson-binomial, see the module docstring).
    """
    marginal = positive_score(logp)
    known = torch.isfinite(bag_labels)
    if aggregation == "mean":
        filled = torch.where(known, bag_labels, torch.zeros_like(bag_labels))
        conditioned = _mean_posterior(logp, bag_index, filled)
        return torch.where(known[bag_index], conditioned, marginal).clamp(0.0, 1.0)
    if aggregation not in ("max", "min"):
        raise ValueError(f"unknown aggregation {aggregation!r}")
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
