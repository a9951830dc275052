"""Figures for the Models page: calibration bins over a model version's labelled sentence scores (read with
``db.repository.labelled_scores``); numpy only, no queries here."""

from __future__ import annotations

import numpy as np


def reliability(scores: np.ndarray, positive: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Calibration table: per score bin (n_bins,), mean score, observed positive rate and count.

    Empty bins have NaN means and count 0. Vectorised with ``np.bincount``.
    """
    bins = np.minimum((np.clip(scores, 0, 1) * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(bins, weights=scores, minlength=n_bins) / count
        rate = np.bincount(bins, weights=positive.astype(np.float64), minlength=n_bins) / count
    centre = (np.arange(n_bins) + 0.5) / n_bins
    return {"centre": centre, "mean_score": mean_score, "positive_rate": rate, "count": count}


def expected_calibration_error(table: dict[str, np.ndarray]) -> float:
    """Count-weighted mean |positive rate - mean score| over non-empty bins (NaN when nothing is labelled)."""
    count = table["count"]
    if count.sum() == 0:
        return float("nan")
    ok = count > 0
    gap = np.abs(table["positive_rate"][ok] - table["mean_score"][ok])
    return float((gap * count[ok]).sum() / count.sum())
