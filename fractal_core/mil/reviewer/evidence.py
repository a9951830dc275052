"""The checked inputs every reviewer function shares (scores, entered labels, counts per response) and which
direction of a sentence label is a problem."""

from __future__ import annotations

from typing import Final

import numpy as np

from fractal_core.mil.semantics import consistency_stats, inconsistent

EPS: Final = 1e-9  # scores are clipped to [EPS, 1 - EPS]: a stored 0 or 1 stays a probability


def problem_is_positive(aggregation: str) -> bool:
    """Whether a positive sentence (level >= 1) is a problem by default: yes for ``max`` and ``mean``
    responses (a defect makes the response bad), no for ``min`` (a positive sentence is good)."""
    check_aggregation(aggregation)
    return aggregation != "min"


def check_aggregation(aggregation: str) -> None:
    if aggregation not in ("max", "min", "mean"):
        raise ValueError(f"unknown aggregation {aggregation!r}; expected max, min or mean")


def segment_sum(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(index, weights=values.astype(np.float64), minlength=n)


def positions(index: np.ndarray, n_bags: int) -> tuple[np.ndarray, np.ndarray]:
    """Position of each sentence inside its response (N,), flat order kept, and the response sizes (B,)."""
    order = np.argsort(index, kind="stable")
    sizes = np.bincount(index, minlength=n_bags)
    starts = np.cumsum(sizes) - sizes
    pos = np.empty(len(index), dtype=np.int64)
    pos[order] = np.arange(len(index)) - starts[index[order]]
    return pos, sizes


class Evidence:
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
        check_aggregation(aggregation)
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
        self.p = np.where(self.unl, np.clip(np.nan_to_num(s, nan=0.5), EPS, 1.0 - EPS), 0.5)
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
