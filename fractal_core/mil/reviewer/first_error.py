"""The first problem of a step response: its distribution given the labels, and the rules by which the F key
picks the step it jumps to."""

from __future__ import annotations

from typing import Final

import numpy as np

from fractal_core.mil.reviewer.evidence import Evidence, check_aggregation, positions, problem_is_positive
from fractal_core.mil.reviewer.given_label import view_given_label
from fractal_core.mil.reviewer.platt import PlattMap, calibrate
from fractal_core.mil.semantics import binary_labels

FIRST_ERROR_RULES: Final = ("top_given_label", "first_error_mode", "calibrated_mode")
"""How the F key picks the step it jumps to (:func:`pick_first_error`):

- ``top_given_label``: the highest score given the label and the entered labels;
- ``first_error_mode``: the mode of the first-error distribution p_i prod_{j<i} (1 - p_j) given the same;
- ``calibrated_mode``: that mode after a Platt map of the scores in logit space (:func:`calibrate`), fitted on
  gold steps of the validation split.
"""
DEFAULT_FIRST_ERROR_RULE: Final = "top_given_label"


def _problem_view(ev: Evidence) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


def _first_error_flat(ev: Evidence) -> np.ndarray:
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
    ev = Evidence(scores, entered, bag_index, response_labels, aggregation, n_levels)
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
        check_aggregation(aggregation)
        return np.full(len(y), -1, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if rule == "calibrated_mode":
        s = calibrate(s, calibration)
    ev = Evidence(s, entered, bag_index, y, aggregation, n_levels)
    _, entered_problem, _, says_none = _problem_view(ev)
    if rule == "top_given_label":
        view = view_given_label(ev)
        rank = view if problem_is_positive(aggregation) else 1.0 - view
    else:
        rank = _first_error_flat(ev)
    b = ev.index
    pos, _ = positions(b, ev.n_bags)
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
