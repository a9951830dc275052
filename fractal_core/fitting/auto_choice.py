"""How ``auto`` judges its candidates and chooses one: held-out figures of a candidate's scores, the
one-standard-error rule, and the record of the choice (:class:`Selection`) stored with the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.calibration import Calibrated, Calibration, cosine_target
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.model import SentenceScorer
from fractal_core.mil.losses import bag_log_likelihood
from fractal_core.mil.posterior import posterior_scores

Judged = Calibration | Calibrated | SentenceScorer
"""What ``auto`` scores bags with: the calibrated prior, a calibrated scorer or a scorer."""


@dataclass
class Selection:
    """What ``auto`` chose and the figures behind it (stored with the model)."""

    chosen: str
    method: str
    criterion: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a figure that could not be computed, e.g. an AUC on one class, is None, not NaN)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not np.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return clean(asdict(self))


# -------------------------------------------------------------------------------------------------- criteria
def _log_proba(candidate: Judged, bags: BagSet) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(candidate, Calibration):
            return candidate(cosine_target(bags))
        return candidate(bags)


def bag_log_likelihoods(candidate: Judged, bags: BagSet, aggregation: str) -> np.ndarray:
    """Each bag's exact log-likelihood of its label under ``candidate``'s scores (B,)."""
    logp = _log_proba(candidate, bags)
    return (
        bag_log_likelihood(logp, bags.bag_index, bags.labels, aggregation=aggregation).double().cpu().numpy()
    )


def mean_bag_log_likelihood(candidate: Judged, bags: BagSet, aggregation: str) -> float:
    return float(bag_log_likelihoods(candidate, bags, aggregation).mean())


def gold_scores(
    candidate: Judged, bags: BagSet, aggregation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(binary gold, score given Y, marginal score) of the gold-labelled sentences of ``bags``."""
    logp = _log_proba(candidate, bags)
    given = posterior_scores(logp, bags.bag_index, bags.labels, aggregation=aggregation)
    marginal = 1 - logp[:, 0].exp()
    mask = bags.gold >= 0
    return (bags.gold[mask] >= 1).cpu().numpy(), given[mask].cpu().numpy(), marginal[mask].cpu().numpy()


def enough_gold(gold: np.ndarray, config: TrainConfig) -> bool:
    return len(gold) >= config.min_gold_for_valid and 0 < int(gold.sum()) < len(gold)


def hide_gold(bags: BagSet, keep: torch.Tensor | None = None) -> BagSet:
    """``bags`` with the gold labels of every bag outside ``keep`` (B,) bool hidden (None hides all)."""
    if keep is None:
        return replace(bags, gold=torch.full_like(bags.gold, -1))
    return replace(bags, gold=torch.where(keep[bags.bag_index], bags.gold, torch.full_like(bags.gold, -1)))


# ---------------------------------------------------------------------------------------------------- choice
def simplicity(row: dict[str, Any], order: tuple[str, ...] | None = None) -> tuple[int, float]:
    """Sort key of a candidate record: its method's place in ``order`` (``registry.AUTO_SIMPLICITY``), then the
    cosine weight (a smaller pull of the prior is simpler)."""
    order = order or registry.AUTO_SIMPLICITY
    method = row["method"]
    return (order.index(method) if method in order else len(order), float(row.get("cosine", 0.0)))


def choose(
    records: list[dict[str, Any]],
    per_bag: np.ndarray | None,
    *,
    se_multiple: float | None = None,
    order: tuple[str, ...] | None = None,
) -> int:
    """The one-standard-error rule: the index of the chosen record, and each record annotated with its figures.

    ``per_bag`` (candidates, bags) holds each candidate's held-out log-likelihood of every judged bag, rows in
    the order of ``records``. The best is the highest mean; a candidate's gap is the mean of its per-bag paired
    difference to the best and ``paired_se`` that difference's standard error (sample std / sqrt(B)). Those
    with gap <= ``se_multiple`` * paired_se are in the band, and the simplest of them (:func:`simplicity`) is
    chosen. Without per-bag figures (the gold criterion: an AUC has no per-response terms) the best ``score``
    wins, ties going to the simplest. Non-finite scores are never chosen unless nothing else is left.
    """
    k = registry.AUTO_SE_MULTIPLE if se_multiple is None else se_multiple
    scores = np.array([r["score"] if r["score"] is not None else np.nan for r in records], dtype=float)
    finite = np.isfinite(scores)
    if not finite.any():
        finite[:] = True
        scores = np.zeros_like(scores)
    best = int(np.argmax(np.where(finite, scores, -np.inf)))
    if per_bag is not None and per_bag.shape[1] > 1:
        diff = per_bag[best][None, :] - per_bag  # (C, B) paired differences, >= 0 on average
        gap = diff.mean(1)
        se = diff.std(1, ddof=1) / np.sqrt(diff.shape[1])
        band = finite & (gap <= k * se + 1e-12)
    else:
        gap = np.where(finite, scores[best] - scores, np.inf)
        se = np.zeros_like(gap)
        band = finite & (gap <= 1e-12)
    picked = min(np.flatnonzero(band), key=lambda i: simplicity(records[i], order))
    for i, r in enumerate(records):
        r["gap_to_best"] = float(gap[i]) if np.isfinite(gap[i]) else None
        r["paired_se"] = float(se[i]) if np.isfinite(se[i]) else None
        r["within_band"] = bool(band[i])
        r["chosen"] = bool(i == picked)
    return int(picked)


def rule_text(by_gold: bool) -> str:
    """The rule in words, as stored with the model."""
    if by_gold:
        return "highest held-out gold AUC given the label; ties go to the simplest"
    order = ", ".join(registry.AUTO_SIMPLICITY)
    return (
        f"one-standard-error: among candidates within {registry.AUTO_SE_MULTIPLE:g} paired standard error(s) "
        f"of the best held-out log-likelihood, the simplest ({order}; smaller prior weight first)"
    )


__all__ = [
    "Judged",
    "Selection",
    "bag_log_likelihoods",
    "choose",
    "enough_gold",
    "gold_scores",
    "hide_gold",
    "mean_bag_log_likelihood",
    "rule_text",
    "simplicity",
]
