"""Inter-annotator agreement over sentence labels: Krippendorff's alpha, Cohen's kappa, per-label agreement.

Labels come as three flat arrays of equal length (one entry per label given): ``units`` (which sentence),
``coders`` (who) and ``values`` (the label, 0..C-1). Everything is counted with ``np.bincount`` over these
arrays; no Python loop runs over units or labels (only over coder pairs for kappa, a handful).

- :func:`krippendorff_alpha` follows Krippendorff (2011), "Computing Krippendorff's alpha-reliability": the
  coincidence matrix over units with two or more values, ``nominal`` or ``interval`` distance.
- :func:`cohen_kappa` is the two-coder kappa over the units both labelled.
- :func:`per_label_agreement` is, for each label, the share of its pairable values that the other coders of the
  same unit matched (``o_cc / n_c`` of the coincidence matrix).

Own code rather than the ``krippendorff`` package: that package is GPL-3.0, which this Apache-2.0 product does
not take on as a dependency; the tests check alpha against the values Krippendorff (2011) publishes and kappa
against scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Metric = Literal["nominal", "interval"]


def _dense(
    unit_idx: np.ndarray, n_units: int, values: np.ndarray, n_values: int
) -> tuple[np.ndarray, np.ndarray]:
    """Counts per (unit, value) over units with >= 2 values, from compact unit codes 0..n_units-1.
    Returns (counts (U, C), m (U,))."""
    counts = np.bincount(unit_idx * n_values + values, minlength=n_units * n_values)
    counts = counts.reshape(n_units, n_values)
    m = counts.sum(axis=1)
    keep = m >= 2
    return counts[keep].astype(np.float64), m[keep].astype(np.float64)


def _coincidences(unit_idx: np.ndarray, n_units: int, values: np.ndarray, n_values: int) -> np.ndarray:
    counts, m = _dense(unit_idx, n_units, values, n_values)
    if not len(m):
        return np.zeros((n_values, n_values))
    weighted = counts / (m - 1.0)[:, None]  # (U, C)
    return weighted.T @ counts - np.diag(weighted.sum(axis=0))


def coincidences(units: np.ndarray, values: np.ndarray, n_values: int) -> np.ndarray:
    """Krippendorff's coincidence matrix (C, C): o_ck = sum_u n_uc (n_uk - [c = k]) / (m_u - 1)."""
    _, unit_idx = np.unique(np.asarray(units), return_inverse=True)
    n_units = int(unit_idx.max()) + 1 if len(unit_idx) else 0
    return _coincidences(unit_idx, n_units, np.asarray(values, dtype=np.int64), n_values)


def krippendorff_alpha(
    units: np.ndarray, values: np.ndarray, *, n_values: int, metric: Metric = "nominal"
) -> float:
    """Alpha in [-1, 1] (1 = perfect, 0 = chance); NaN when fewer than two pairable values or one value only.

    Shapes: ``units`` and ``values`` (n,) with ``values`` in 0..n_values-1; ``coders`` are not needed (each
    entry is one coder's value for one unit)."""
    return _alpha(coincidences(units, values, n_values), n_values, metric)


def _alpha(o: np.ndarray, n_values: int, metric: Metric) -> float:
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n < 2:
        return float("nan")
    levels = np.arange(n_values, dtype=np.float64)
    delta = (
        (levels[:, None] != levels[None, :]).astype(np.float64)
        if metric == "nominal"
        else (levels[:, None] - levels[None, :]) ** 2
    )
    expected = (np.outer(n_c, n_c) * delta).sum()
    if expected == 0:
        return float("nan")
    return float(1.0 - (n - 1.0) * (o * delta).sum() / expected)


def per_label_agreement(units: np.ndarray, values: np.ndarray, *, n_values: int) -> np.ndarray:
    """(C,) for each label, the share of its pairable values matched by the unit's other coders (NaN: unused)."""
    return _per_label(coincidences(units, values, n_values))


def _per_label(o: np.ndarray) -> np.ndarray:
    n_c = o.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_c > 0, np.diag(o) / np.where(n_c > 0, n_c, 1.0), np.nan)


def cohen_kappa(a: np.ndarray, b: np.ndarray, *, n_values: int) -> float:
    """Cohen's kappa of two coders' labels of the same units (aligned (n,) arrays); NaN if undefined."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if len(a) == 0:
        return float("nan")
    confusion = np.bincount(a * n_values + b, minlength=n_values * n_values).reshape(n_values, n_values)
    total = confusion.sum()
    observed = np.trace(confusion) / total
    chance = float((confusion.sum(axis=0) * confusion.sum(axis=1)).sum()) / total**2
    if chance >= 1.0:  # both coders used one and the same label throughout: kappa is undefined
        return float("nan")
    return float((observed - chance) / (1.0 - chance))


@dataclass(frozen=True)
class PairAgreement:
    coder_a: int
    coder_b: int
    n_units: int  # units both labelled
    kappa: float
    percent: float  # share of those units with the same label


def pairwise(
    units: np.ndarray, coders: np.ndarray, values: np.ndarray, *, n_values: int
) -> list[PairAgreement]:
    """Cohen's kappa and raw agreement for every pair of coders who labelled at least one common unit.

    Each (unit, coder) should appear once (their current label)."""
    _, u = np.unique(np.asarray(units, dtype=np.int64), return_inverse=True)
    return _pairwise(u, int(u.max()) + 1 if len(u) else 0, coders, values, n_values)


def _pairwise(
    u: np.ndarray, n_units: int, coders: np.ndarray, values: np.ndarray, n_values: int
) -> list[PairAgreement]:
    coders = np.asarray(coders, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    ids, c = np.unique(coders, return_inverse=True)
    table = np.full((len(ids), n_units), -1, dtype=np.int64)  # (coders, units): -1 = not labelled
    table[c, u] = values
    out = []
    for i in range(len(ids)):  # coder pairs: a handful, never units or labels
        for j in range(i + 1, len(ids)):
            both = (table[i] >= 0) & (table[j] >= 0)
            if not both.any():
                continue
            a, b = table[i, both], table[j, both]
            out.append(
                PairAgreement(
                    coder_a=int(ids[i]),
                    coder_b=int(ids[j]),
                    n_units=int(both.sum()),
                    kappa=cohen_kappa(a, b, n_values=n_values),
                    percent=float((a == b).mean()),
                )
            )
    return out


@dataclass(frozen=True)
class Summary:
    alpha: float
    per_label: np.ndarray  # (C,)
    pairs: list[PairAgreement]
    shared: np.ndarray  # (n,) bool: the label's unit has two or more labels
    n_shared_units: int


def summarise(
    units: np.ndarray, coders: np.ndarray, values: np.ndarray, *, n_values: int, metric: Metric = "nominal"
) -> Summary:
    """Alpha, per-label agreement and every pair's kappa in one pass (the units are encoded once)."""
    units = np.asarray(units, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    _, u, per_unit = np.unique(units, return_inverse=True, return_counts=True)
    n_units = len(per_unit)
    o = _coincidences(u, n_units, values, n_values)
    return Summary(
        alpha=_alpha(o, n_values, metric),
        per_label=_per_label(o),
        pairs=_pairwise(u, n_units, coders, values, n_values),
        shared=per_unit[u] >= 2 if len(u) else np.zeros(0, dtype=bool),
        n_shared_units=int((per_unit >= 2).sum()),
    )
