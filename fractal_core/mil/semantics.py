"""What a response's sentence scores and labels mean for the response: the one home of these rules.

- **Response score**: the sentence scores P(level >= 1) aggregated the way the model was trained
  (``TrainConfig.bag_variant``): ``hard`` takes the max (min) sentence score, ``prob`` the noisy-OR (product)
  under independent sentences, ``lse`` a tempered log-sum-exp of the logits; ``mean`` bags average. Ordinal
  responses are read in the binary view (level >= 1), like every score the app shows.
- **Uncertainty**: ``1 - |2p - 1|`` for a score p (1 at 0.5, 0 at 0 or 1); a response's uncertainty is the
  mean over its sentences.
- **Disagreement**: |response score - response label| in the binary view (an ordinal label counts as
  "level >= 1", like the scores): a response labelled 1 of 0..2 whose sentences all score 0 disagrees fully (1),
  instead of the 0.5 that dividing the label by the top level gave. ``mean`` bags compare proportions.
- **Consistency** of sentence labels with the response label under the aggregation, asking whether *any*
  completion of the unlabelled sentences could give the response label (``mean``: within ``mean_slack``
  sentences' worth).

numpy only (no torch): the store and the app use these without loading the library's models. Every function is
vectorised over a flat sentence axis with a bag index (no loop over bags or sentences).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fractal_core.mil.variants import DEFAULT_BAG_VARIANT, check_variant

_EPS = 1e-6
T = TypeVar("T", float, np.ndarray)


def uncertainty(score: T) -> T:
    """``1 - |2p - 1|`` of a score or an array of scores in [0, 1] (same shape)."""
    return 1.0 - abs(2.0 * score - 1.0)


# ------------------------------------------------------------------------------------------ segment reductions


def _sum(values: np.ndarray, bag_index: np.ndarray, n_bags: int) -> np.ndarray:
    return np.bincount(bag_index, weights=values.astype(np.float64), minlength=n_bags)


def _count(bag_index: np.ndarray, n_bags: int) -> np.ndarray:
    return np.bincount(bag_index, minlength=n_bags).astype(np.float64)


def _max(values: np.ndarray, bag_index: np.ndarray, n_bags: int, empty: float) -> np.ndarray:
    out = np.full(n_bags, -np.inf)
    np.maximum.at(out, bag_index, values.astype(np.float64))
    return np.where(np.isneginf(out), empty, out)


def _mean(values: np.ndarray, bag_index: np.ndarray, n_bags: int) -> np.ndarray:
    count = _count(bag_index, n_bags)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, _sum(values, bag_index, n_bags) / count, np.nan)


def _logsumexp(values: np.ndarray, bag_index: np.ndarray, n_bags: int) -> np.ndarray:
    top = _max(values, bag_index, n_bags, empty=0.0)
    return top + np.log(np.maximum(_sum(np.exp(values - top[bag_index]), bag_index, n_bags), 1e-300))


# --------------------------------------------------------------------------------------------- the rules


def response_scores(
    score: np.ndarray,
    bag_index: np.ndarray,
    n_bags: int,
    *,
    aggregation: str,
    variant: str = DEFAULT_BAG_VARIANT,
    temperature: float = 0.1,
) -> np.ndarray:
    """P(response label >= 1) (or the expected proportion for ``mean``) per response (B,) from sentence
    scores (N,) with their response index (N,); NaN for a response without sentences."""
    p = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
    index = np.asarray(bag_index, dtype=np.int64)
    if aggregation == "mean":
        return _mean(p, index, n_bags)
    if aggregation not in ("max", "min"):
        raise ValueError(f"unknown aggregation {aggregation!r}; expected max, min or mean")
    check_variant(variant)
    sign = 1.0 if aggregation == "max" else -1.0
    has = _count(index, n_bags) > 0
    if variant == "hard":
        out = sign * _max(sign * p, index, n_bags, empty=np.nan)
    elif variant == "prob":
        q = np.clip(p, _EPS, 1 - _EPS)
        if aggregation == "max":
            out = 1.0 - np.exp(_sum(np.log1p(-q), index, n_bags))
        else:
            out = np.exp(_sum(np.log(q), index, n_bags))
    else:
        q = np.clip(p, _EPS, 1 - _EPS)
        logit = np.log(q) - np.log1p(-q)
        bag_logit = sign * temperature * _logsumexp(sign * logit / temperature, index, n_bags)
        out = 1.0 / (1.0 + np.exp(-bag_logit))
    return np.where(has, out, np.nan)


def binary_labels(labels: np.ndarray, aggregation: str) -> np.ndarray:
    """Response labels in the scores' view (B,): ``level >= 1`` as 1/0 for max/min, the proportion for mean;
    NaN (unlabelled) kept."""
    y = np.asarray(labels, dtype=np.float64)
    if aggregation == "mean":
        return y
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(y), np.nan, (y >= 1).astype(np.float64))


def disagreement(response_score: np.ndarray, labels: np.ndarray, aggregation: str) -> np.ndarray:
    """|response score - response label| in the binary view (B,), in [0, 1]; NaN where either is unknown."""
    return np.abs(np.asarray(response_score, dtype=np.float64) - binary_labels(labels, aggregation))


def response_uncertainty(score: np.ndarray, bag_index: np.ndarray, n_bags: int) -> np.ndarray:
    """Mean sentence :func:`uncertainty` per response (B,); NaN for a response without sentences."""
    return _mean(uncertainty(np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)), bag_index, n_bags)


@dataclass(frozen=True)
class ConsistencyStats:
    """Per response (B,): sentences, labelled sentences, positive labels, highest and lowest known label
    (-1 / a large number when none is known)."""

    n: np.ndarray
    n_known: np.ndarray
    positives: np.ndarray
    top: np.ndarray
    low: np.ndarray


def consistency_stats(gold: np.ndarray, bag_index: np.ndarray, n_bags: int) -> ConsistencyStats:
    """What the consistency rule needs from sentence labels (N,) (-1 = not labelled)."""
    g = np.asarray(gold, dtype=np.int64)
    index = np.asarray(bag_index, dtype=np.int64)
    known = g >= 0
    big = float(np.iinfo(np.int32).max)
    return ConsistencyStats(
        n=_count(index, n_bags),
        n_known=_sum(known.astype(np.float64), index, n_bags),
        positives=_sum((g >= 1).astype(np.float64), index, n_bags),
        top=_max(np.where(known, g, -1).astype(np.float64), index, n_bags, empty=-1.0),
        low=-_max(-np.where(known, g, big).astype(np.float64), index, n_bags, empty=-big),
    )


def inconsistent(
    stats: ConsistencyStats, labels: np.ndarray, aggregation: str, *, mean_slack: float = 0.5
) -> np.ndarray:
    """(B,) bool: no completion of the unlabelled sentences gives the response label under ``aggregation``.

    ``mean_slack``: for ``mean`` bags, how many sentences' worth a proportion may be off (0.5: a rounded
    proportion is fine; 0 matches the strict file reader).
    """
    y = np.asarray(labels, dtype=np.float64)
    complete = (stats.n_known == stats.n) & (stats.n > 0)
    if aggregation == "max":
        return (stats.top > y) | (complete & (stats.top < y))
    if aggregation == "min":
        return ((stats.n_known > 0) & (stats.low < y)) | (complete & (stats.low > y))
    if aggregation == "mean":
        n = np.maximum(stats.n, 1.0)
        lowest, highest = stats.positives / n, (stats.positives + stats.n - stats.n_known) / n
        slack = mean_slack / n + 1e-6
        return (stats.n > 0) & ((y < lowest - slack) | (y > highest + slack))
    raise ValueError(f"unknown aggregation {aggregation!r}; expected max, min or mean")


def check_consistency(
    aggregation: str,
    response_label: float | None,
    sentence_labels: Sequence[int | None],
    *,
    mean_slack: float = 0.5,
) -> str | None:
    """One line saying why ``sentence_labels`` (``None`` = not labelled) contradict ``response_label``, or None
    when some completion of the unlabelled sentences gives it (:func:`inconsistent` on one response). A
    response without a label of its own (``None`` or NaN: one that came in a preference pair) has nothing to
    contradict."""
    if response_label is None or response_label != response_label:
        return None
    gold = np.asarray([-1 if v is None else int(v) for v in sentence_labels], dtype=np.int64)
    s = consistency_stats(gold, np.zeros(len(gold), dtype=np.int64), 1)
    if not inconsistent(s, np.asarray([response_label]), aggregation, mean_slack=mean_slack)[0]:
        return None
    y = _fmt(response_label)
    top, low, n, n_known = int(s.top[0]), int(s.low[0]), s.n[0], s.n_known[0]
    if aggregation == "max":
        if top > response_label:
            return (
                f"response label is {y} (max) but a known sentence label is {top}: "
                "no sentence may exceed the response label"
            )
        if top == 0:
            return f"response label is {y} (max) but no sentence is labelled positive"
        return f"response label is {y} (max) but the highest sentence label is {top}"
    if aggregation == "min":
        if low < response_label:
            return f"response label is {y} (min: every sentence positive) but a known sentence label is {low}"
        return f"response label is {y} (min) but every sentence is labelled {low} or higher"
    lowest, highest = s.positives[0] / n, (s.positives[0] + n - n_known) / n
    if n_known < n:
        return f"response label is {y} (mean) but the labels allow only {lowest:.2f}..{highest:.2f}"
    return f"response label is {y} (mean) but the labels give {lowest:.2f}"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# ----------------------------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class ResponseSummaries:
    """Per response (B,), aligned with the responses given: aggregate score, uncertainty, disagreement with
    the response label (all float64, NaN when undefined) and ``consistent`` (int8: 1 consistent, 0 not,
    -1 no sentence labels to check)."""

    score: np.ndarray
    uncertainty: np.ndarray
    disagreement: np.ndarray
    consistent: np.ndarray


def summarise(
    score: np.ndarray,
    bag_index: np.ndarray,
    labels: np.ndarray,
    *,
    aggregation: str,
    variant: str = DEFAULT_BAG_VARIANT,
    temperature: float = 0.1,
    gold: np.ndarray | None = None,
) -> ResponseSummaries:
    """Every per-response figure at once. score (N,) P(level >= 1); bag_index (N,); labels (B,) response
    labels; gold (N,) sentence labels (-1 = none) for the consistency column."""
    n_bags = int(np.asarray(labels).shape[0])
    index = np.asarray(bag_index, dtype=np.int64)
    agg = response_scores(
        score, index, n_bags, aggregation=aggregation, variant=variant, temperature=temperature
    )
    consistent = np.full(n_bags, -1, dtype=np.int8)
    if gold is not None:
        stats = consistency_stats(gold, index, n_bags)
        bad = inconsistent(stats, labels, aggregation)
        consistent = np.where(stats.n_known > 0, np.where(bad, 0, 1), -1).astype(np.int8)
    return ResponseSummaries(
        score=agg,
        uncertainty=response_uncertainty(score, index, n_bags),
        disagreement=disagreement(agg, labels, aggregation),
        consistent=consistent,
    )


__all__ = [
    "ConsistencyStats",
    "ResponseSummaries",
    "binary_labels",
    "check_consistency",
    "consistency_stats",
    "disagreement",
    "inconsistent",
    "response_scores",
    "response_uncertainty",
    "summarise",
    "uncertainty",
]
