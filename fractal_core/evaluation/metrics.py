"""Evaluation metrics: exact AUC-ROC (and the paired standard error of a difference), AUC-PR, accuracy, ordinal
MAE, step calibration (ECE), bag metrics, first-error accuracy.

Inputs are flat numpy arrays; sentences whose gold label is missing (-1 / None) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged (exact Mann-Whitney)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # Group equal values: each group gets the mean of its positions.
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    mean_rank = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc_roc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Exact AUC-ROC (ties count 1/2); NaN when only one class is present."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def paired_auc_se(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> float:
    """DeLong's standard error of AUC(a) - AUC(b), two scores of the same items (ties count 1/2); NaN with fewer
    than two items of a class. Items are treated as independent (steps of one response are not)."""
    y = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos < 2 or n_neg < 2:
        return float("nan")

    def components(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(score, dtype=np.float64)
        every = _ranks(s)
        # per positive: share of negatives below it; per negative: share of positives above it
        below = (every[y] - _ranks(s[y])) / n_neg
        above = 1.0 - (every[~y] - _ranks(s[~y])) / n_pos
        return below, above

    a_pos, a_neg = components(score_a)
    b_pos, b_neg = components(score_b)
    var = np.var(a_pos - b_pos, ddof=1) / n_pos + np.var(a_neg - b_neg, ddof=1) / n_neg
    return float(math.sqrt(max(float(var), 0.0)))


def reliability_bins(scores: np.ndarray, positive: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Calibration table of probabilities ``scores`` (M,) against outcomes ``positive`` (M,): per equal-width
    bin of [0, 1] (n_bins,), its centre, mean score, observed positive rate and count (empty bins: NaN means,
    count 0). Vectorised with ``np.bincount``."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    bins = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(bins, weights=s, minlength=n_bins) / count
        rate = np.bincount(bins, weights=np.asarray(positive, dtype=np.float64), minlength=n_bins) / count
    centre = (np.arange(n_bins) + 0.5) / n_bins
    return {"centre": centre, "mean_score": mean_score, "positive_rate": rate, "count": count}


def calibration_error_of_bins(table: dict[str, np.ndarray]) -> float:
    """Count-weighted mean |positive rate - mean score| over the non-empty bins of a :func:`reliability_bins`
    table (NaN when it counts nothing)."""
    count = table["count"]
    if count.sum() == 0:
        return float("nan")
    ok = count > 0
    gap = np.abs(table["positive_rate"][ok] - table["mean_score"][ok])
    return float((gap * count[ok]).sum() / count.sum())


def expected_calibration_error(gold: np.ndarray, score: np.ndarray, *, n_bins: int = 10) -> float:
    """Step ECE: of P(level >= 1) ``score`` (N,) against the labelled steps' ``gold`` (N,) levels (-1: none;
    positive: level >= 1), over ``n_bins`` equal-width bins. NaN when no step is labelled."""
    g = np.asarray(gold)
    mask = g >= 0
    return calibration_error_of_bins(reliability_bins(np.asarray(score)[mask], g[mask] >= 1, n_bins))


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """AUC-PR as average precision (step interpolation, ties grouped); NaN without positives."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.flatnonzero(np.diff(s_sorted)) if len(s_sorted) > 1 else np.array([], dtype=int)
    thresholds = np.concatenate([distinct, [len(s_sorted) - 1]])
    tp = np.cumsum(y_sorted)[thresholds]
    fp = thresholds + 1 - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    recall_prev = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - recall_prev) * precision))


def auc_interval(auc: float, n_positive: int, n_negative: int, *, z: float = 1.96) -> tuple[float, float]:
    """Approximate confidence interval of an AUC-ROC from its value and class counts (Hanley & McNeil, 1982):
    ``auc +- z * SE``, clipped to [0, 1]; ``(nan, nan)`` when a class is empty or the AUC is undefined.

    SE^2 = (A(1-A) + (n1-1)(Q1-A^2) + (n0-1)(Q2-A^2)) / (n1 n0), Q1 = A/(2-A), Q2 = 2A^2/(1+A). With a
    handful of labelled sentences the interval is wide, which is the point of showing it.
    """
    if n_positive < 1 or n_negative < 1 or not math.isfinite(auc):
        return float("nan"), float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc)) / (
        n_positive * n_negative
    )
    half = z * math.sqrt(max(var, 0.0))
    return max(auc - half, 0.0), min(auc + half, 1.0)


def sentence_metrics(
    gold: np.ndarray, score: np.ndarray, *, expected_level: np.ndarray | None = None, n_classes: int = 2
) -> dict[str, float]:
    """gold (N,) levels with -1 for unknown; score (N,) P(level >= 1). Binary view: level >= 1 is positive."""
    mask = gold >= 0
    g, s = gold[mask], score[mask]
    positive = g >= 1
    out = {
        "instance_auc_roc": auc_roc(positive, s),
        "instance_auprc": average_precision(positive, s),
        "instance_accuracy": float(np.mean((s >= 0.5) == positive)) if len(g) else float("nan"),
        "instance_count": float(len(g)),
        "instance_positives": float(positive.sum()),
    }
    if n_classes > 2 and expected_level is not None:
        out["instance_mae"] = float(np.mean(np.abs(expected_level[mask] - g))) if len(g) else float("nan")
    return out


def first_error_accuracy(gold: np.ndarray, score: np.ndarray, bag_index: np.ndarray, n_bags: int) -> float:
    """Share of bags with a gold positive where the highest-scoring sentence is the first gold positive.

    Vectorised with ``np.maximum.at`` / ``np.minimum.at`` (no loop over bags). NaN when no bag qualifies.
    """
    n = len(score)
    positions = np.arange(n)
    first_pos = np.full(n_bags, n, dtype=np.int64)
    np.minimum.at(first_pos, bag_index[gold >= 1], positions[gold >= 1])
    best = np.full(n_bags, -np.inf)
    np.maximum.at(best, bag_index, score)
    argmax = np.full(n_bags, n, dtype=np.int64)
    is_best = score == best[bag_index]
    np.minimum.at(argmax, bag_index[is_best], positions[is_best])
    has_error = first_pos < n
    if not has_error.any():
        return float("nan")
    return float(np.mean(argmax[has_error] == first_pos[has_error]))


def _step_positions(bag_index: np.ndarray, n_bags: int) -> np.ndarray:
    """Position of each sentence inside its bag (N,), the flat order of a bag's sentences kept."""
    index = np.asarray(bag_index, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    sizes = np.bincount(index, minlength=n_bags)
    pos = np.empty(len(index), dtype=np.int64)
    pos[order] = np.arange(len(index)) - (np.cumsum(sizes) - sizes)[index[order]]
    return pos


def _first_gold_positive(gold: np.ndarray, bag_index: np.ndarray, n_bags: int) -> np.ndarray:
    """Position of each bag's first gold positive (B,), -1 when it has none."""
    g = np.asarray(gold)
    index = np.asarray(bag_index, dtype=np.int64)
    pos = _step_positions(index, n_bags)
    big = len(index) + 1
    first = np.full(n_bags, big, dtype=np.int64)
    np.minimum.at(first, index[g >= 1], pos[g >= 1])
    return np.where(first < big, first, -1)


def first_over_threshold(
    score: np.ndarray, bag_index: np.ndarray, n_bags: int, thresholds: np.ndarray
) -> np.ndarray:
    """Per threshold and bag (T, B): the position of the bag's first sentence scoring >= the threshold, -1 when
    none does (the bag is predicted correct). One scatter-min over (T, N); no loop over bags or thresholds."""
    s = np.asarray(score, dtype=np.float64)
    index = np.asarray(bag_index, dtype=np.int64)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    big = len(s) + 1
    pos = _step_positions(index, n_bags)
    candidate = np.where(s[None, :] >= t[:, None], pos[None, :], big)  # (T, N)
    flat = np.full(len(t) * n_bags, big, dtype=np.int64)
    np.minimum.at(flat, (np.arange(len(t))[:, None] * n_bags + index[None, :]).ravel(), candidate.ravel())
    out = flat.reshape(len(t), n_bags)
    return np.where(out < big, out, -1)


def _f1_parts(
    gold: np.ndarray, score: np.ndarray, bag_index: np.ndarray, n_bags: int, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hit (T, B) bool, erroneous (B,) bool, correct (B,) bool): a bag is erroneous when it has a gold positive,
    correct when it has gold labels and none is positive; a hit names its first gold positive (erroneous) or
    predicts no error (correct)."""
    g = np.asarray(gold)
    index = np.asarray(bag_index, dtype=np.int64)
    first = _first_gold_positive(g, index, n_bags)
    labelled = np.bincount(index[g >= 0], minlength=n_bags) > 0
    erroneous, correct = first >= 0, labelled & (first < 0)
    predicted = first_over_threshold(score, index, n_bags, thresholds)
    return predicted == first[None, :], erroneous, correct


def _harmonic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Harmonic mean, 0 when both are 0, NaN when either is (a side without bags)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isnan(a) | np.isnan(b), np.nan, np.where(a + b > 0, 2 * a * b / (a + b), 0.0))


def first_error_f1(
    gold: np.ndarray,
    score: np.ndarray,
    bag_index: np.ndarray,
    n_bags: int,
    *,
    threshold: float,
    groups: Mapping[str, Sequence[str | None]] | None = None,
) -> dict[str, Any]:
    """ProcessBench's official F1 for first-error data: the harmonic mean of the exact first-error accuracy on
    erroneous bags and the "no error" accuracy on correct ones, a bag being predicted erroneous at its first
    sentence scoring >= ``threshold`` (tune it on valid: :func:`tune_first_error_threshold`).

    gold, score, bag_index (N,), sentences of a bag in step order; groups: name -> per-bag group (B,) (e.g. the
    records' ``task``), each reported as ``{group: f1}`` under ``by_<name>`` (None entries skipped). Returns
    ``f1``, ``error_acc``, ``correct_acc`` (NaN where a side has no bag).
    """
    hit, erroneous, correct = _f1_parts(gold, score, bag_index, n_bags, np.array([threshold]))

    def figures(mask: np.ndarray) -> tuple[float, float, float]:
        e, c = erroneous & mask, correct & mask
        a = float(hit[0][e].mean()) if e.any() else float("nan")
        b = float(hit[0][c].mean()) if c.any() else float("nan")
        return a, b, float(_harmonic(np.array(a), np.array(b)))

    a, b, f1 = figures(np.ones(n_bags, dtype=bool))
    out: dict[str, Any] = {"f1": f1, "error_acc": a, "correct_acc": b}
    for name, values in (groups or {}).items():
        labels = np.array([v if v is not None else "" for v in values], dtype=object)
        out[f"by_{name}"] = {
            str(v): figures(labels == v)[2] for v in sorted(set(labels.tolist())) if v != ""
        }  # a handful of groups
    return out


def tune_first_error_threshold(
    gold: np.ndarray, score: np.ndarray, bag_index: np.ndarray, n_bags: int, *, levels: int = 512
) -> float:
    """The threshold maximising :func:`first_error_f1` on these (validation) bags, among ``levels`` quantiles
    of their scores (F1 only changes at a score); the lowest on ties. NaN when there is nothing to tune on."""
    s = np.asarray(score, dtype=np.float64)
    if not len(s):
        return float("nan")
    grid = np.unique(np.quantile(s, np.linspace(0.0, 1.0, levels + 1)))
    hit, erroneous, correct = _f1_parts(gold, s, bag_index, n_bags, grid)
    if not erroneous.any() or not correct.any():
        return float("nan")
    f1 = _harmonic(hit[:, erroneous].mean(1), hit[:, correct].mean(1))
    return float(grid[int(np.argmax(f1))])


def first_error_hits(gold: np.ndarray, picks: np.ndarray, bag_index: np.ndarray, n_bags: int) -> np.ndarray:
    """Per bag with a gold positive, in bag order (E,) bool: whether its picked step ``picks`` (B,) (position
    inside the bag, -1 for none: a miss) is its first gold positive. gold, bag_index (N,), sentences of a bag in
    step order."""
    first = _first_gold_positive(gold, bag_index, n_bags)
    has_error = first >= 0
    return np.asarray(picks, dtype=np.int64)[has_error] == first[has_error]


def first_error_pick_accuracy(
    gold: np.ndarray, picks: np.ndarray, bag_index: np.ndarray, n_bags: int
) -> float:
    """Share of bags with a gold positive whose picked step is the first gold positive (:func:`first_error_hits`):
    the top-1 of a rule that names one step per response, such as the F key's
    (``fractal_core.mil.reviewer.pick_first_error_flat``). NaN when no bag qualifies."""
    hits = first_error_hits(gold, picks, bag_index, n_bags)
    return float(hits.mean()) if hits.size else float("nan")


def first_error_top_k(
    gold: np.ndarray, score: np.ndarray, bag_index: np.ndarray, n_bags: int, *, k: int = 3
) -> float:
    """Share of bags with a gold positive whose first gold positive is among the ``k`` highest scores of its bag.

    Ties rank the earlier sentence first (as :func:`first_error_accuracy`, which is the case k = 1). One
    lexicographic sort (bag, -score, position) ranks every sentence inside its bag. NaN when no bag qualifies.
    """
    n = len(score)
    positions = np.arange(n)
    first_pos = np.full(n_bags, n, dtype=np.int64)
    np.minimum.at(first_pos, bag_index[gold >= 1], positions[gold >= 1])
    has_error = first_pos < n
    if not has_error.any():
        return float("nan")
    order = np.lexsort((positions, -np.asarray(score, dtype=np.float64), bag_index))
    counts = np.bincount(bag_index, minlength=n_bags)
    starts = np.cumsum(counts) - counts
    rank = np.empty(n, dtype=np.int64)
    rank[order] = positions - starts[bag_index[order]]
    return float(np.mean(rank[first_pos[has_error]] < k))


def bag_metrics(bag_labels: np.ndarray, bag_score: np.ndarray, *, aggregation: str) -> dict[str, float]:
    """Bag-level AUC-ROC / AUC-PR / accuracy of AGG(predictions) against Y (positive: Y >= 1, or Y > 0 for mean)."""
    positive = bag_labels > 0 if aggregation == "mean" else bag_labels >= 1
    out = {
        "bag_auc_roc": auc_roc(positive, bag_score),
        "bag_auprc": average_precision(positive, bag_score),
        "bag_accuracy": float(np.mean((bag_score >= 0.5) == positive)) if len(bag_score) else float("nan"),
    }
    if aggregation == "mean":
        out["bag_mae"] = float(np.mean(np.abs(bag_score - bag_labels)))
    return out


def summarize(records: list[dict[str, Any]], *, keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof=0) over seeds of each metric in ``keys``."""
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        vals = np.array([r[key] for r in records if key in r and r[key] is not None], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        out[key] = {
            "mean": float(vals.mean()) if len(vals) else float("nan"),
            "std": float(vals.std()) if len(vals) else float("nan"),
            "n": float(len(vals)),
        }
    return out
