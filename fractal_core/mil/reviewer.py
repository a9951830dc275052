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
is good: :func:`problem_is_positive`, which exports may override); the caller maps the view to "problem"
colours. The first-error functions below read "problem" by that default direction.

numpy only (no torch): the store and the app call these without loading the library's models. The ``_flat``
forms work on a flat sentence axis with a response index (no Python loop over responses or sentences); each
one-response function calls its flat form.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import numpy as np

from fractal_core.mil.semantics import binary_labels, consistency_stats, inconsistent

_EPS: Final = 1e-9  # scores are clipped to [_EPS, 1 - _EPS]: a stored 0 or 1 stays a probability
_PAD_BUDGET: Final = 4_000_000  # elements of one (responses, L + 1, L + 1) table for the mean DP

FIRST_ERROR_RULES: Final = ("top_given_label", "first_error_mode", "calibrated_mode")
"""How the F key picks the step it jumps to (:func:`pick_first_error`):

- ``top_given_label``: the highest score given the label and the entered labels;
- ``first_error_mode``: the mode of the first-error distribution p_i prod_{j<i} (1 - p_j) given the same;
- ``calibrated_mode``: that mode after a Platt map of the scores in logit space (:func:`calibrate`), fitted on
  gold steps of the validation split.
"""
DEFAULT_FIRST_ERROR_RULE: Final = "top_given_label"

PlattMap = tuple[float, float]
"""(scale, bias) of the Platt map sigmoid(scale * logit(p) + bias)."""


def problem_is_positive(aggregation: str) -> bool:
    """Whether a positive sentence (level >= 1) is a problem by default: yes for ``max`` and ``mean``
    responses (a defect makes the response bad), no for ``min`` (a positive sentence is good)."""
    _check_aggregation(aggregation)
    return aggregation != "min"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # no overflow for large |z|


def calibrate(scores: np.ndarray, calibration: PlattMap | None) -> np.ndarray:
    """Scores (N,) through the Platt map sigmoid(scale * logit(p) + bias); unchanged when ``calibration`` is
    None."""
    p = np.asarray(scores, dtype=np.float64)
    if calibration is None:
        return p
    scale, bias = calibration
    q = np.clip(p, _EPS, 1.0 - _EPS)
    z = float(scale) * (np.log(q) - np.log1p(-q)) + float(bias)
    return _sigmoid(z)


def fit_platt(scores: np.ndarray, gold: np.ndarray, *, l2: float = 1e-3, steps: int = 50) -> PlattMap:
    """Fit the Platt map of :func:`calibrate` to gold sentence labels: logistic regression of gold (N,) (1[level
    >= 1], -1 = no label, skipped) on logit(score) (N,), by Newton's method with a small ridge toward the
    identity (scale 1, bias 0). Returns the identity when the labels hold a single class."""
    g = np.asarray(gold)
    keep = g >= 0
    y = (g[keep] >= 1).astype(np.float64)
    if y.size == 0 or y.min() == y.max():
        return (1.0, 0.0)
    q = np.clip(np.asarray(scores, dtype=np.float64)[keep], _EPS, 1.0 - _EPS)
    x = np.stack([np.log(q) - np.log1p(-q), np.ones_like(q)], 1)  # (M, 2)
    w = np.array([1.0, 0.0])
    prior = w.copy()
    for _ in range(steps):  # two parameters: a handful of Newton steps, each vectorised over the labels
        mu = _sigmoid(x @ w)
        grad = x.T @ (mu - y) + l2 * y.size * (w - prior)
        hess = (x * (mu * (1 - mu))[:, None]).T @ x + l2 * y.size * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return (float(w[0]), float(w[1]))


# --------------------------------------------------------------------------------------------- helpers


def _check_aggregation(aggregation: str) -> None:
    if aggregation not in ("max", "min", "mean"):
        raise ValueError(f"unknown aggregation {aggregation!r}; expected max, min or mean")


def _segment_sum(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(index, weights=values.astype(np.float64), minlength=n)


def _positions(index: np.ndarray, n_bags: int) -> tuple[np.ndarray, np.ndarray]:
    """Position of each sentence inside its response (N,), flat order kept, and the response sizes (B,)."""
    order = np.argsort(index, kind="stable")
    sizes = np.bincount(index, minlength=n_bags)
    starts = np.cumsum(sizes) - sizes
    pos = np.empty(len(index), dtype=np.int64)
    pos[order] = np.arange(len(index)) - starts[index[order]]
    return pos, sizes


class _Evidence:
    """The inputs of the flat functions, checked once: clipped scores, entered indicators and counts."""

    def __init__(
        self,
        scores: np.ndarray,
        entered: np.ndarray,
        bag_index: np.ndarray,
        response_labels: np.ndarray,
        aggregation: str,
        n_levels: int,
    ) -> None:
        _check_aggregation(aggregation)
        if n_levels < 2:
            raise ValueError(f"n_levels must be at least 2, got {n_levels}")
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        e = np.asarray(entered, dtype=np.float64).reshape(-1)
        index = np.asarray(bag_index, dtype=np.int64).reshape(-1)
        y = np.asarray(response_labels, dtype=np.float64).reshape(-1)
        if not (len(s) == len(e) == len(index)):
            raise ValueError(
                f"scores, entered and bag_index differ in length: {len(s)}, {len(e)}, {len(index)}"
            )
        if len(index) and (index.min() < 0 or index.max() >= len(y)):
            raise ValueError("bag_index must index response_labels")
        self.known = np.isfinite(e)
        if np.any(~self.known & ~np.isfinite(s)):
            raise ValueError("every unlabelled sentence needs a finite score")
        levels = e[self.known]
        if levels.size and (np.any(levels < 0) or np.any(levels > n_levels - 1) or np.any(levels % 1 != 0)):
            raise ValueError(f"entered labels must be whole levels in 0..{n_levels - 1}")
        self.aggregation = aggregation
        self.n_levels = n_levels
        self.index = index
        self.n_bags = len(y)
        self.labels = y
        self.unl = ~self.known
        self.z = self.known & (np.where(self.known, e, 0.0) >= 1)  # entered positive
        self.gold = np.where(self.known, e, -1).astype(np.int64)
        self.p = np.where(self.unl, np.clip(np.nan_to_num(s, nan=0.5), _EPS, 1.0 - _EPS), 0.5)
        self.marginal = np.where(self.known, self.z.astype(np.float64), np.clip(np.nan_to_num(s), 0.0, 1.0))
        self.has_label = np.isfinite(y)
        self.n = np.bincount(index, minlength=self.n_bags)
        self.n_unl = np.bincount(index, weights=self.unl.astype(np.float64), minlength=self.n_bags)
        self.pos_entered = np.bincount(index, weights=self.z.astype(np.float64), minlength=self.n_bags)
        self.neg_entered = np.bincount(
            index, weights=(self.known & ~self.z).astype(np.float64), minlength=self.n_bags
        )
        if aggregation == "mean":
            k = np.clip(np.round(np.nan_to_num(y) * self.n), 0, self.n)
            self.count_left = (k - self.pos_entered).astype(np.int64)  # positives the unlabelled must hold
            contradicts = (self.count_left < 0) | (self.count_left > self.n_unl)
        else:
            contradicts = inconsistent(consistency_stats(self.gold, index, self.n_bags), y, aggregation)
        self.usable = self.has_label & ~contradicts  # (B,): the label can condition the view


# ------------------------------------------------------------------------------------------- the view


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
    ev = _Evidence(scores, entered, bag_index, response_labels, aggregation, n_levels)
    return _view(ev)


def _view(ev: _Evidence) -> np.ndarray:
    out = ev.marginal.copy()
    if not len(out):
        return out
    b = ev.index
    label = binary_labels(ev.labels, ev.aggregation)
    positive_label = ev.usable & (np.nan_to_num(label) >= 1)
    zero_label = ev.usable & ~positive_label
    if ev.aggregation == "max":
        # log P(no unlabelled sentence is positive), per response
        log_none = _segment_sum(np.where(ev.unl, np.log1p(-ev.p), 0.0), b, ev.n_bags)
        spread = ev.unl & (positive_label & (ev.pos_entered == 0))[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            given_any = ev.p / -np.expm1(log_none[b])
        out = np.where(spread, given_any, out)
        out = np.where(ev.unl & zero_label[b], 0.0, out)
    elif ev.aggregation == "min":
        log_all = _segment_sum(np.where(ev.unl, np.log(ev.p), 0.0), b, ev.n_bags)  # log P(every one positive)
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


def _count_posterior(ev: _Evidence, counted: np.ndarray) -> np.ndarray:
    """P(y_i = 1 | the unlabelled sentences of its response hold ``count_left`` positives) (N,), valid where
    ``counted``; entered sentences act as padding (they are already counted in ``count_left``)."""
    out = np.zeros(len(ev.p))
    pos, _ = _positions(ev.index, ev.n_bags)
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


# -------------------------------------------------------------------------------------- the first problem


def _problem_view(ev: _Evidence) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(P(problem) per unlabelled sentence (N,), entered problem (N,) bool, response says it has a problem
    (B,) bool, response says it has none (B,) bool), in the default direction of :func:`problem_is_positive`."""
    bad_positive = problem_is_positive(ev.aggregation)
    q = ev.p if bad_positive else 1.0 - ev.p
    entered_problem = ev.known & (ev.z if bad_positive else ~ev.z)
    label = binary_labels(ev.labels, ev.aggregation)
    says_problem = np.nan_to_num(label) >= 1 if bad_positive else np.nan_to_num(label, nan=1.0) < 1
    # A contradicted label is ignored (read as unknown); an unknown label is read as "has a problem", the
    # reading of a reviewer who presses F.
    says_none = ev.usable & ~says_problem
    return q, entered_problem, ~says_none, says_none


def _first_error_flat(ev: _Evidence) -> np.ndarray:
    if ev.aggregation == "mean":
        raise ValueError("a first problem is defined for max and min responses (steps in order), not mean")
    q, entered_problem, _, says_none = _problem_view(ev)
    b = ev.index
    order = np.lexsort((np.arange(len(b)), b))  # by response, steps in order
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    bs = b[order]
    sizes = np.bincount(bs, minlength=ev.n_bags)
    starts = np.cumsum(sizes) - sizes
    # Exclusive prefix within each response of log(1 - q_j) over unlabelled steps and of the count of entered
    # problems (each makes every later step's "first" probability exactly 0).
    log_fine = np.where(ev.unl, np.log1p(-q), 0.0)[order]
    blockers = entered_problem[order].astype(np.int64)
    cum_fine = np.cumsum(log_fine) - log_fine
    cum_block = np.cumsum(blockers) - blockers
    start_of = starts[bs]
    before_fine = cum_fine - (cum_fine[start_of] if len(bs) else 0.0)
    before_block = cum_block - (cum_block[start_of] if len(bs) else 0)
    with np.errstate(divide="ignore"):
        own = np.where(ev.unl, np.log(q), np.where(entered_problem, 0.0, -np.inf))[order]
    joint = np.where(before_block > 0, -np.inf, own + before_fine)
    top = np.full(ev.n_bags, -np.inf)
    np.maximum.at(top, bs, joint)
    safe = np.where(np.isfinite(top), top, 0.0)
    total = np.bincount(bs, weights=np.exp(joint - safe[bs]), minlength=ev.n_bags)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.where(total[bs] > 0, np.exp(joint - safe[bs]) / total[bs], 0.0)
    dist = np.where(says_none[bs], 0.0, dist)
    return dist[inv]


def first_error_distribution_flat(
    scores: np.ndarray,
    entered: np.ndarray,
    bag_index: np.ndarray,
    response_labels: np.ndarray,
    *,
    aggregation: str = "max",
    n_levels: int = 2,
) -> np.ndarray:
    """P(first problem = step i | response label, entered labels) (N,) for ``max`` (or ``min``) responses in
    step order (flat order within each response), exact under independence.

    Each response's values sum to 1 when it can have a first problem and are all 0 when its label says it has
    none (``max`` labelled 0, ``min`` labelled >= 1) or when no step can be one (every step entered fine).
    A problem is level >= 1 for ``max`` and level 0 for ``min`` (:func:`problem_is_positive`). An unknown
    label is read as "has a problem"; a label contradicted by the entered labels is ignored. Steps after the
    first step entered as a problem get 0; that step gets the remaining mass.
    """
    ev = _Evidence(scores, entered, bag_index, response_labels, aggregation, n_levels)
    return _first_error_flat(ev)


def first_error_distribution(
    scores: np.ndarray,
    entered: np.ndarray,
    response_label: float | None,
    *,
    aggregation: str = "max",
    n_levels: int = 2,
) -> np.ndarray:
    """:func:`first_error_distribution_flat` for one response: (n,) in step order."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return first_error_distribution_flat(
        s,
        entered,
        np.zeros(len(s), dtype=np.int64),
        np.array([np.nan if response_label is None else float(response_label)]),
        aggregation=aggregation,
        n_levels=n_levels,
    )


def pick_first_error_flat(
    scores: np.ndarray,
    entered: np.ndarray,
    bag_index: np.ndarray,
    response_labels: np.ndarray,
    *,
    aggregation: str,
    rule: str = DEFAULT_FIRST_ERROR_RULE,
    calibration: PlattMap | None = None,
    n_levels: int = 2,
) -> np.ndarray:
    """The step the F key jumps to, per response (B,): its position inside the response, -1 for none.

    Candidates are the unlabelled steps that can still be the first problem (those before the first step
    entered as a problem); the rule (:data:`FIRST_ERROR_RULES`) ranks them, ties going to the earlier step.
    With no candidate left, the first step entered as a problem; -1 when the label says the response has no
    problem, for ``mean`` responses (no first problem) and for empty responses. ``calibration`` is used by
    ``calibrated_mode`` only (None: the identity, i.e. ``first_error_mode``).
    """
    if rule not in FIRST_ERROR_RULES:
        raise ValueError(f"unknown first-error rule {rule!r}; expected one of {', '.join(FIRST_ERROR_RULES)}")
    y = np.asarray(response_labels, dtype=np.float64).reshape(-1)
    if aggregation == "mean":
        _check_aggregation(aggregation)
        return np.full(len(y), -1, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if rule == "calibrated_mode":
        s = calibrate(s, calibration)
    ev = _Evidence(s, entered, bag_index, y, aggregation, n_levels)
    _, entered_problem, _, says_none = _problem_view(ev)
    if rule == "top_given_label":
        view = _view(ev)
        rank = view if problem_is_positive(aggregation) else 1.0 - view
    else:
        rank = _first_error_flat(ev)
    b = ev.index
    pos, _ = _positions(b, ev.n_bags)
    big = np.iinfo(np.int64).max
    first_entered = np.full(ev.n_bags, big, dtype=np.int64)
    np.minimum.at(first_entered, b[entered_problem], pos[entered_problem])
    candidate = ev.unl & (pos < first_entered[b])
    best = np.full(ev.n_bags, -np.inf)
    np.maximum.at(best, b[candidate], rank[candidate])
    hit = candidate & (rank == best[b])
    pick = np.full(ev.n_bags, big, dtype=np.int64)
    np.minimum.at(pick, b[hit], pos[hit])
    pick = np.where(pick < big, pick, first_entered)
    return np.where(says_none | (pick == big), -1, pick).astype(np.int64)


def pick_first_error(
    scores: np.ndarray,
    entered: np.ndarray,
    response_label: float | None,
    *,
    aggregation: str,
    rule: str = DEFAULT_FIRST_ERROR_RULE,
    calibration: PlattMap | None = None,
    n_levels: int = 2,
) -> int | None:
    """Index of the step the F key jumps to in one response (:func:`pick_first_error_flat`), None for none."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    got = pick_first_error_flat(
        s,
        entered,
        np.zeros(len(s), dtype=np.int64),
        np.array([np.nan if response_label is None else float(response_label)]),
        aggregation=aggregation,
        rule=rule,
        calibration=calibration,
        n_levels=n_levels,
    )
    return None if got[0] < 0 else int(got[0])


# ------------------------------------------------------------------------------------ accept the rest


def accept_rest(
    scores: np.ndarray,
    entered: np.ndarray,
    response_label: float | None,
    *,
    aggregation: str,
    n_levels: int = 2,
) -> np.ndarray:
    """Labels for every sentence of one response (n,) int64, the unlabelled ones filled from the view: what
    "accept the model's labels for the rest" stores. Entered labels are returned unchanged.

    Never contradicts the response label: ``max`` labelled 0 -> every unlabelled sentence 0; labelled >= 1 ->
    view >= 0.5 is positive, and when no sentence is positive (entered or filled) the unlabelled one with the
    highest view is; ``min`` mirrors this (labelled >= 1 -> all positive; labelled 0 keeps at least its least
    likely positive sentence at 0); ``mean`` -> the k highest views are positive, k the count the proportion
    implies minus the entered positives. Unknown label: view (= marginal) >= 0.5.

    -1 means "left unlabelled": every unlabelled sentence when the entered labels already contradict the
    response label (a person resolves that first), and, for ordinal data (``n_levels`` > 2), a positive
    sentence whose level the label does not pin down (the scores only say P(level >= 1)).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.array([np.nan if response_label is None else float(response_label)])
    ev = _Evidence(s, entered, np.zeros(len(s), dtype=np.int64), y, aggregation, n_levels)
    out = np.where(ev.known, ev.gold, -1).astype(np.int64)
    if not len(s) or not ev.unl.any():
        return out
    if ev.has_label[0] and not ev.usable[0]:
        return out
    view = _view(ev)
    order = np.lexsort((np.arange(len(s)), -view))  # highest view first, earlier first on ties
    ranked_unl = order[ev.unl[order]]
    positive = ev.unl & (view >= 0.5)
    top_level = n_levels - 1
    lo, hi = 1, top_level  # the levels a positive sentence may take under the label
    if ev.usable[0]:
        label = float(y[0])
        if aggregation == "max":
            hi = int(label)
            if label >= 1 and ev.pos_entered[0] == 0 and not positive.any():
                positive[ranked_unl[0]] = True
        elif aggregation == "min":
            lo = max(int(label), 1)
            if label < 1 and ev.neg_entered[0] == 0 and positive[ev.unl].all():
                positive[ranked_unl[-1]] = False
        else:
            positive = np.zeros(len(s), dtype=bool)
            positive[ranked_unl[: int(ev.count_left[0])]] = True
    level = lo if lo == hi else -1
    return np.where(ev.unl, np.where(positive, level, 0), out).astype(np.int64)


__all__ = [
    "DEFAULT_FIRST_ERROR_RULE",
    "FIRST_ERROR_RULES",
    "PlattMap",
    "accept_rest",
    "calibrate",
    "first_error_distribution",
    "first_error_distribution_flat",
    "fit_platt",
    "label_conditioned",
    "label_conditioned_flat",
    "pick_first_error",
    "pick_first_error_flat",
    "problem_is_positive",
]
