"""What a reviewer should see: sentence scores given the response label and the labels already entered.

The model stores a marginal score p_i = P(level_i >= 1) per sentence. Once the response label Y and some
sentence labels are known, the probability that an unlabelled sentence is positive is
P(level_i >= 1 | Y, entered labels), exact under the model's own assumption that sentences are independent
given the response (the same assumption :mod:`fractal_core.mil.posterior` makes at training time):

- ``max`` (a response is positive iff some sentence is): Y = 0 makes every sentence 0; Y >= 1 with no sentence
  entered positive spreads the mass over the unlabelled ones, p_i / (1 - prod_unlabelled (1 - p_j)); once a
  sentence is entered positive the event is already satisfied and the others keep their marginals.
- ``min`` (positive iff every sentence is): Y >= 1 makes every sentence 1; Y = 0 with no sentence entered 0
  gives p_i (1 - prod_{others} p_j) / (1 - prod_unlabelled p_j).
- ``mean`` (a proportion q of n sentences): the count k = round(q n) of positive sentences, minus the entered
  positives, must come from the unlabelled ones; the count is Poisson-binomial and
  P(y_i = 1 | count = k') = p_i P(others = k' - 1) / P(count = k'), from a forward and a backward dynamic
  programme over the padded responses in log space (a loop over the positions of the longest response,
  vectorised over responses and counts).
- Ordinal ``max`` with only P(level >= 1) stored: conditioning on max = Y would need P(level = c) for every
  level, which the store does not keep; the view conditions on {max >= 1} when Y >= 1 and on {max = 0} when
  Y = 0 (exact for Y = 0 and for binary data). Ordinal ``min`` is exact: min >= 1 iff every level is >= 1.

Entered sentences return their indicator 1[level >= 1]. Evidence that contradicts the response label (the
product's consistency rule, :func:`fractal_core.mil.semantics.inconsistent`; for ``mean``, an implied count
that the unlabelled sentences cannot reach) has probability zero under the model: the view then returns the
marginal scores for the unlabelled sentences instead of dividing by zero, and leaves the contradiction for a
person to resolve. An unknown response label (NaN / None) also gives the marginals.

Direction: the view is P(level >= 1) whatever a level means. Whether level >= 1 is a problem is the dataset's
reading (with ``max`` and ``mean`` responses a positive sentence is a defect, with ``min`` a positive sentence
is good: :func:`~fractal_core.mil.reviewer.evidence.problem_is_positive`, which exports may override); the
caller maps the view to "problem" colours. The first-error functions
(:mod:`fractal_core.mil.reviewer.first_error`) read "problem" by that default direction.

numpy only (no torch): the store and the app call these without loading the library's models. The ``_flat``
forms work on a flat sentence axis with a response index (no Python loop over responses or sentences); each
one-response function calls its flat form.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import numpy as np

from fractal_core.mil.reviewer.evidence import Evidence, positions, segment_sum
from fractal_core.mil.semantics import binary_labels

_PAD_BUDGET: Final = 4_000_000  # elements of one (responses, L + 1, L + 1) table for the mean DP


def label_conditioned_flat(
    scores: np.ndarray,
    entered: np.ndarray,
    bag_index: np.ndarray,
    response_labels: np.ndarray,
    *,
    aggregation: str,
    n_levels: int = 2,
) -> np.ndarray:
    """P(level_i >= 1 | response label, entered labels) per sentence (N,), for many responses at once.

    scores (N,): stored P(level >= 1) per sentence (may be NaN where a label is entered); entered (N,): labels
    already entered, NaN where unlabelled; bag_index (N,): the response of each sentence, sentences of a
    response in their order; response_labels (B,): NaN when unknown (marginals). See the module docstring for
    the rules, the ordinal ``max`` reading and what contradicting evidence returns.
    """
    ev = Evidence(scores, entered, bag_index, response_labels, aggregation, n_levels)
    return view_given_label(ev)


def view_given_label(ev: Evidence) -> np.ndarray:
    """:func:`label_conditioned_flat` on inputs checked already (the first-error rules and accept-the-rest
    share them)."""
    out = ev.marginal.copy()
    if not len(out):
        return out
    b = ev.index
    label = binary_labels(ev.labels, ev.aggregation)
    positive_label = ev.usable & (np.nan_to_num(label) >= 1)
    zero_label = ev.usable & ~positive_label
    if ev.aggregation == "max":
        # log P(no unlabelled sentence is positive), per response
        log_none = segment_sum(np.where(ev.unl, np.log1p(-ev.p), 0.0), b, ev.n_bags)
        spread = ev.unl & (positive_label & (ev.pos_entered == 0))[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            given_any = ev.p / -np.expm1(log_none[b])
        out = np.where(spread, given_any, out)
        out = np.where(ev.unl & zero_label[b], 0.0, out)
    elif ev.aggregation == "min":
        log_all = segment_sum(np.where(ev.unl, np.log(ev.p), 0.0), b, ev.n_bags)  # log P(every one positive)
        out = np.where(ev.unl & positive_label[b], 1.0, out)
        spread = ev.unl & (zero_label & (ev.neg_entered == 0))[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            given_some_zero = ev.p * -np.expm1(log_all[b] - np.log(ev.p)) / -np.expm1(log_all[b])
        out = np.where(spread, given_some_zero, out)
    else:
        counted = ev.unl & ev.usable[b]
        out = np.where(counted, _count_posterior(ev, counted), out)
    return np.clip(out, 0.0, 1.0)


def _chunks(sizes: np.ndarray, bags: np.ndarray) -> Iterator[np.ndarray]:
    """``bags`` sorted by size, cut into chunks whose (rows, L + 1, L + 1) tables fit the budget."""
    ordered = bags[np.argsort(sizes[bags], kind="stable")]
    lo = 0
    while lo < len(ordered):
        cost = (np.arange(len(ordered) - lo) + 1) * (sizes[ordered[lo:]] + 1) ** 2
        hi = lo + max(1, int((cost <= _PAD_BUDGET).sum()))
        yield ordered[lo:hi]
        lo = hi


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(values, axis=axis, keepdims=True)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(safe, axis) + np.log(np.sum(np.exp(values - safe), axis=axis))


def _count_dp(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """Every prefix's Poisson-binomial log-pmf: (R, L) padded log p, log(1 - p) -> (R, L + 1, L + 1) with
    out[r, j, s] = log P(the first j sentences of row r sum to s). Padding: log p = -inf, log(1 - p) = 0."""
    rows, length = log_p.shape
    state = np.full((rows, length + 1), -np.inf)
    state[:, 0] = 0.0
    states = [state]
    edge = np.full((rows, 1), -np.inf)
    for j in range(length):  # positions of the longest response; every response and count at once
        stay = state + log_q[:, j : j + 1]
        move = np.concatenate([edge, state[:, :-1]], 1) + log_p[:, j : j + 1]
        state = np.logaddexp(stay, move)
        states.append(state)
    return np.stack(states, 1)


def _count_posterior(ev: Evidence, counted: np.ndarray) -> np.ndarray:
    """P(y_i = 1 | the unlabelled sentences of its response hold ``count_left`` positives) (N,), valid where
    ``counted``; entered sentences act as padding (they are already counted in ``count_left``)."""
    out = np.zeros(len(ev.p))
    pos, _ = positions(ev.index, ev.n_bags)
    sizes = ev.n
    bags = np.flatnonzero(np.bincount(ev.index[counted], minlength=ev.n_bags) > 0)
    row_of = np.full(ev.n_bags, -1, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp_all = np.where(ev.unl, np.log(ev.p), -np.inf)
        lq_all = np.where(ev.unl, np.log1p(-ev.p), 0.0)
        for chunk in _chunks(sizes, bags):
            rows, width = len(chunk), int(sizes[chunk].max())
            row_of[chunk] = np.arange(rows)
            member = row_of[ev.index] >= 0
            r, c = row_of[ev.index[member]], pos[member]
            lp = np.full((rows, width), -np.inf)
            lq = np.zeros((rows, width))
            lp[r, c], lq[r, c] = lp_all[member], lq_all[member]
            prefix = _count_dp(lp, lq)  # prefix[:, j]: sum of positions 0..j-1
            suffix = _count_dp(lp[:, ::-1], lq[:, ::-1])[:, ::-1]  # suffix[:, j]: sum of positions j..L-1
            k = ev.count_left[chunk]  # (R,)
            a = np.arange(width + 1).reshape(1, 1, -1)
            other = (k - 1).reshape(-1, 1, 1) - a  # the others hold k - 1: a before, k - 1 - a after
            ok = (other >= 0) & (other <= width)
            after = np.take_along_axis(
                suffix[:, 1:, :], np.broadcast_to(np.clip(other, 0, width), (rows, width, width + 1)), 2
            )
            terms = np.where(ok, prefix[:, :width, :] + after, -np.inf)
            log_others = _logsumexp(terms, 2)  # (R, L): log P(the others hold k - 1)
            log_total = prefix[:, -1][np.arange(rows), k]  # (R,): log P(the unlabelled hold k)
            post = np.exp(np.minimum(lp + log_others - log_total[:, None], 0.0))
            post = np.where(np.isfinite(post), post, 0.0)
            out[member] = post[r, c]
            row_of[chunk] = -1
    return out


def label_conditioned(
    scores: np.ndarray,
    entered: np.ndarray,
    response_label: float | None,
    *,
    aggregation: str,
    n_levels: int = 2,
) -> np.ndarray:
    """P(level_i >= 1 | response label, entered labels) (n,) for one response: :func:`label_conditioned_flat`.

    scores (n,) stored P(level_i >= 1) in sentence order; entered (n,) labels already entered (NaN where
    unlabelled); response_label None (or NaN) when unknown, which gives the marginal scores.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return label_conditioned_flat(
        s,
        entered,
        np.zeros(len(s), dtype=np.int64),
        np.array([np.nan if response_label is None else float(response_label)]),
        aggregation=aggregation,
        n_levels=n_levels,
    )
