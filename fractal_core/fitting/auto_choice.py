"""How ``auto`` judges its candidates and chooses one: held-out figures of a candidate's scores, the
one-standard-error rule (the same with and without gold), whether the evidence for the choice was weak, and the
record of the choice (:class:`Selection`) stored with the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from fractal_core.evaluation.versions import paired_auc_replicates
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
    weak_evidence: bool = False
    weak_reason: str = ""

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


class GoldScores(NamedTuple):
    """A candidate's scores of the gold-labelled sentences, each (N,), in the order of their bags."""

    gold: np.ndarray  # bool: the sentence is a problem
    given: np.ndarray  # score given the response label
    marginal: np.ndarray  # score without it
    response: np.ndarray  # the sentence's response (the bootstrap's unit)


def gold_scores(
    candidate: Judged, bags: BagSet, aggregation: str, bag_ids: torch.Tensor | None = None
) -> GoldScores:
    """The gold-labelled sentences of ``bags`` scored by ``candidate``; their responses are named by
    ``bag_ids`` (K,) (the ids ``bags`` was selected with from a larger set; default: ``bags``' own indices)."""
    logp = _log_proba(candidate, bags)
    given = posterior_scores(logp, bags.bag_index, bags.labels, aggregation=aggregation)
    marginal = 1 - logp[:, 0].exp()
    mask = bags.gold >= 0
    owner = bags.bag_index[mask]
    return GoldScores(
        (bags.gold[mask] >= 1).cpu().numpy(),
        given[mask].cpu().numpy(),
        marginal[mask].cpu().numpy(),
        (owner if bag_ids is None else bag_ids.to(owner.device)[owner]).cpu().numpy(),
    )


def pooled(parts: list[GoldScores]) -> GoldScores:
    """Gold scores of disjoint sets of responses (the cross-fitting folds) as one, sentences ordered by response
    id and, within a response, as they came: the order of :func:`gold_scores` on all those responses selected
    in increasing id order, so that candidates scored either way pair sentence by sentence."""
    joined = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    order = np.argsort(joined[3], kind="stable")
    return GoldScores(*(a[order] for a in joined))


def gold_replicates(judged: list[GoldScores], seed: int) -> np.ndarray:
    """Each candidate's gold AUC given the label on the same ``registry.AUTO_GOLD_RESAMPLES`` bootstrap draws
    of gold responses (C, resamples); ``judged`` must score the same sentences in the same order."""
    first = judged[0]
    for other in judged[1:]:
        if not (np.array_equal(other.gold, first.gold) and np.array_equal(other.response, first.response)):
            raise ValueError("the candidates' gold scores do not cover the same sentences in the same order")
    return paired_auc_replicates(
        np.stack([j.given for j in judged]),
        first.gold.astype(np.int64),
        first.response,
        resamples=registry.AUTO_GOLD_RESAMPLES,
        seed=seed,
    )


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


def _replicate_se(replicates: np.ndarray, best: int, finite: np.ndarray) -> np.ndarray:
    """Bootstrap standard error (C,) of each candidate's paired difference to ``best``, over the replicates in
    which every finite candidate's figure is defined (0 with fewer than two such replicates)."""
    usable = replicates[:, np.isfinite(replicates[finite]).all(0)]
    if usable.shape[1] < 2:
        return np.zeros(len(replicates))
    return np.asarray((usable[best][None, :] - usable).std(1, ddof=1))


def in_band(gap: np.ndarray | float, se: np.ndarray | float, k: float) -> np.ndarray:
    """Whether a candidate's gap to the best lies within ``k`` paired standard errors (the band of the rule)."""
    return np.asarray(gap) <= k * np.asarray(se) + 1e-12


def choose(
    records: list[dict[str, Any]],
    per_bag: np.ndarray | None = None,
    *,
    replicates: np.ndarray | None = None,
    se_multiple: float | None = None,
    order: tuple[str, ...] | None = None,
    default: str | None = None,
) -> int:
    """The one-standard-error rule: the index of the chosen record, and each record annotated with its figures.

    The best is the highest ``score``. Each candidate's gap to it comes with ``paired_se``, the standard error
    of that gap paired over the judged responses, from one of:

    - ``per_bag`` (candidates, bags): each candidate's held-out log-likelihood of every judged bag (the
      likelihood criterion, a mean over responses): the gap is the mean of the per-bag paired difference to the
      best and its SE the sample std / sqrt(B);
    - ``replicates`` (candidates, draws): each candidate's figure on the same bootstrap draws of responses
      (the gold criterion: an AUC is not a mean of per-response terms, so its paired spread is bootstrapped,
      :func:`gold_replicates`): the gap is the difference of the scores and its SE the std of the replicates'
      paired differences.

    Rows follow ``records``. Those with gap <= ``se_multiple`` * paired_se are in the band and the simplest of
    them (:func:`simplicity`) is chosen; without either input (or with ``se_multiple`` 0) the best score wins,
    ties going to the simplest. With ``default`` (a method), a candidate of that method in the band is chosen,
    and when none is, the best: the default is left only for a candidate that beats it by more than the band.
    Non-finite scores are never chosen unless nothing else is left.
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
    else:
        gap = np.where(finite, scores[best] - scores, np.inf)
        se = np.zeros_like(gap) if replicates is None else _replicate_se(replicates, best, finite)
    band = finite & in_band(gap, se, k)
    picked = int(min(np.flatnonzero(band), key=lambda i: simplicity(records[i], order)))
    if default is not None:
        kept = [int(i) for i in np.flatnonzero(band) if records[i]["method"] == default]
        picked = kept[0] if kept else best
    for i, r in enumerate(records):
        r["gap_to_best"] = float(gap[i]) if np.isfinite(gap[i]) else None
        r["paired_se"] = float(se[i]) if np.isfinite(se[i]) else None
        r["within_band"] = bool(band[i])
        r["chosen"] = bool(i == picked)
    return int(picked)


def weak_evidence(records: list[dict[str, Any]], gold: GoldScores | None = None) -> tuple[bool, str]:
    """Whether the evidence for the choice :func:`choose` annotated ``records`` with is weak, and why.

    Weak when another candidate than the best lies inside the band (the held-out figures do not tell it from
    the best, so the choice rests on the simplicity order, and the chosen one may not be the best); and, judged
    by ``gold`` (the judged gold sentences), when there are fewer than ``registry.AUTO_WEAK_GOLD_RESPONSES``
    gold responses or fewer than ``registry.AUTO_WEAK_GOLD_SENTENCES`` sentences in the rarer class, too few
    for the standard errors behind the rule.
    """
    reasons: list[str] = []
    if gold is not None:
        n_responses = len(np.unique(gold.response))
        positives = int(gold.gold.sum())
        rare, name = min((positives, "problem"), (len(gold.gold) - positives, "fine"))
        if n_responses < registry.AUTO_WEAK_GOLD_RESPONSES:
            reasons.append(
                f"only {n_responses} gold responses judged the candidates "
                f"(fewer than {registry.AUTO_WEAK_GOLD_RESPONSES})"
            )
        if rare < registry.AUTO_WEAK_GOLD_SENTENCES:
            reasons.append(
                f"only {rare} gold sentences are {name} (fewer than {registry.AUTO_WEAK_GOLD_SENTENCES})"
            )
    k = registry.AUTO_SE_MULTIPLE  # the noise band, whatever multiple the choice itself used
    scored = sorted((r for r in records if r.get("gap_to_best") is not None), key=lambda r: r["gap_to_best"])
    tied = [
        r for r in scored[1:] if r["paired_se"] is not None and in_band(r["gap_to_best"], r["paired_se"], k)
    ]
    if tied:
        close = tied[0]
        reasons.append(
            f"{len(tied)} other candidate(s) within {registry.AUTO_SE_MULTIPLE:g} paired standard error(s) of "
            f"the best, {scored[0]['name']} (closest: {close['name']}, gap {close['gap_to_best']:.4f}, SE "
            f"{close['paired_se']:.4f}): the held-out figures do not tell them apart"
        )
    return bool(reasons), "; ".join(reasons)


def rule_text(by_gold: bool) -> str:
    """The rule in words, as stored with the model."""
    order = ", ".join(registry.AUTO_SIMPLICITY)
    k = registry.AUTO_SE_MULTIPLE_GOLD if by_gold else registry.AUTO_SE_MULTIPLE
    figure = (
        "held-out gold AUC given the label (SE: bootstrap over gold responses)"
        if by_gold
        else "held-out log-likelihood"
    )
    if by_gold:
        return (
            f"{registry.AUTO_GOLD_DEFAULT} unless another candidate beats its {figure} by more than {k:g} "
            "paired standard error(s); then the best"
        )
    if k == 0:
        return f"plain best {figure}, ties to the first of {order}"
    return (
        f"one-standard-error: among candidates within {k:g} paired standard error(s) "
        f"of the best {figure}, the first of {order} (smaller prior weight first)"
    )


__all__ = [
    "GoldScores",
    "Judged",
    "Selection",
    "bag_log_likelihoods",
    "choose",
    "in_band",
    "enough_gold",
    "gold_replicates",
    "gold_scores",
    "hide_gold",
    "mean_bag_log_likelihood",
    "pooled",
    "rule_text",
    "simplicity",
    "weak_evidence",
]
