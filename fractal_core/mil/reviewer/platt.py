"""The Platt map of sentence scores in logit space: applying it and fitting it to gold sentence labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fractal_core.mil.reviewer.evidence import EPS

PlattMap = tuple[float, float]
"""(scale, bias) of the Platt map sigmoid(scale * logit(p) + bias)."""


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # no overflow for large |z|


def calibrate(scores: np.ndarray, calibration: PlattMap | None) -> np.ndarray:
    """Scores (N,) through the Platt map sigmoid(scale * logit(p) + bias); unchanged when ``calibration`` is
    None."""
    p = np.asarray(scores, dtype=np.float64)
    if calibration is None:
        return p
    scale, bias = calibration
    q = np.clip(p, EPS, 1.0 - EPS)
    z = float(scale) * (np.log(q) - np.log1p(-q)) + float(bias)
    return _sigmoid(z)


def view_map(step_calibration: Mapping[str, Any] | None) -> PlattMap | None:
    """The map the given-label view applies to a model's stored P(level >= 1) scores: its step calibration (the
    ``step_calibration`` of ``model.json``, kept in a model version's metrics) when that was chosen on valid for
    the view (``given_label``), else None (the raw scores). A map that would reverse the ranking never applies."""
    if not step_calibration or not step_calibration.get("given_label"):
        return None
    scale, bias = float(step_calibration["scale"]), float(step_calibration["bias"])
    return (scale, bias) if scale > 0 and np.isfinite(scale) and np.isfinite(bias) else None


def view_scores(
    scores: Sequence[float | None], step_calibration: Mapping[str, Any] | None
) -> list[float | None]:
    """Stored scores (None where unscored) as the given-label view reads them: through :func:`view_map`."""
    mapping = view_map(step_calibration)
    if mapping is None:
        return list(scores)
    raw = np.array([np.nan if v is None else float(v) for v in scores], dtype=np.float64)
    return [None if v != v else float(v) for v in calibrate(raw, mapping).tolist()]


def fit_platt(scores: np.ndarray, gold: np.ndarray, *, l2: float = 1e-3, steps: int = 50) -> PlattMap:
    """Fit the Platt map of :func:`calibrate` to gold sentence labels: logistic regression of gold (N,) (1[level
    >= 1], -1 = no label, skipped) on logit(score) (N,), by Newton's method with a small ridge toward the
    identity (scale 1, bias 0). Returns the identity when the labels hold a single class."""
    g = np.asarray(gold)
    keep = g >= 0
    y = (g[keep] >= 1).astype(np.float64)
    if y.size == 0 or y.min() == y.max():
        return (1.0, 0.0)
    q = np.clip(np.asarray(scores, dtype=np.float64)[keep], EPS, 1.0 - EPS)
    x = np.stack([np.log(q) - np.log1p(-q), np.ones_like(q)], 1)  # (M, 2)
    w = np.array([1.0, 0.0])
    prior = w.copy()

    def loss(v: np.ndarray) -> float:  # the penalised negative log-likelihood Newton minimises
        z = x @ v
        nll = np.logaddexp(0.0, z) - y * z
        return float(nll.sum() + 0.5 * l2 * y.size * ((v - prior) ** 2).sum())

    current = loss(w)
    for _ in range(steps):  # two parameters: a handful of Newton steps, each vectorised over the labels
        mu = _sigmoid(x @ w)
        grad = x.T @ (mu - y) + l2 * y.size * (w - prior)
        hess = (x * (mu * (1 - mu))[:, None]).T @ x + l2 * y.size * np.eye(2)
        step = np.linalg.solve(hess, grad)
        # Halve a step that does not lower the loss: a full Newton step from the identity can overshoot and
        # diverge when the scores are far off (e.g. reversed).
        for _ in range(30):
            candidate = loss(w - step)
            if candidate <= current:
                break
            step = step / 2
        else:
            break
        w, current = w - step, candidate
        if np.abs(step).max() < 1e-10:
            break
    return (float(w[0]), float(w[1]))
