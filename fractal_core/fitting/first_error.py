"""Which rule the F key uses (``fractal_core.mil.reviewer.FIRST_ERROR_RULES``), chosen on validation gold.

A model's step scores may multiply like probabilities or not (a hard-max bag loss ranks steps but leaves them
uncalibrated), so which rule points at the first wrong step best is an empirical question per model and data:
each rule's first-error top-1 is measured on the validation responses that have a gold first error, and kept
with the model by the suite's one-standard-error rule (``auto_choice.choose``): among the rules whose top-1 lies within
one paired standard error (over those responses) of the best, the first of ``FIRST_ERROR_RULES``, so the default
holds unless another rule beats it by more than noise (a few hundred validation responses leave the three rules
within a couple of points of each other, and the plain best flipped between seeds). Too little evidence keeps the
default. ``calibrated_mode`` fits its Platt map on the validation gold steps; its top-1 is measured by two-fold
cross-fitting over responses, so it is not scored on the steps it was fitted to. Never chosen by dataset name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from fractal_core.evaluation.metrics import first_error_hits
from fractal_core.fitting.auto_choice import choose
from fractal_core.mil.reviewer import (
    DEFAULT_FIRST_ERROR_RULE,
    FIRST_ERROR_RULES,
    PlattMap,
    fit_platt,
    pick_first_error_flat,
)

HAZARD_METHODS: Final = frozenset({"hazard"})
"""Methods whose step scores are hazards, P(step wrong | earlier steps fine): their own answer to "which step
is the first error" is the mode of the first-error distribution, so that rule is their default."""
MIN_ERRONEOUS: Final = 10
"""Validation responses with a gold first error needed before a rule other than the default can be chosen."""


@dataclass(frozen=True)
class FirstErrorChoice:
    """The F key's rule for a model and the figures it was chosen by.

    top1: rule -> first-error top-1 on the validation gold (empty when not measured); n_erroneous: validation
    responses with a gold first error; calibration: (scale, bias) of the Platt map ``calibrated_mode`` uses
    (fitted on every validation gold step), None when not fitted; reason: one line for the Models page.
    """

    rule: str = DEFAULT_FIRST_ERROR_RULE
    calibration: PlattMap | None = None
    top1: dict[str, float] = field(default_factory=dict)
    n_erroneous: int = 0
    reason: str = "default rule: no validation gold first errors"

    def figures(self) -> dict[str, Any]:
        """What the store keeps beside the rule (JSON-ready: NaN -> None)."""
        return {
            "top1_valid": {k: (v if np.isfinite(v) else None) for k, v in self.top1.items()},
            "n_erroneous_valid": self.n_erroneous,
            "calibration": None if self.calibration is None else list(self.calibration),
            "reason": self.reason,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, **self.figures()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FirstErrorChoice:
        """Inverse of :meth:`to_dict`; None (a model saved before the rule was stored) gives the default."""
        if not data:
            return cls(reason="default rule: chosen before rules were measured")
        cal = data.get("calibration")
        return cls(
            rule=str(data.get("rule", DEFAULT_FIRST_ERROR_RULE)),
            calibration=None if cal is None else (float(cal[0]), float(cal[1])),
            top1={
                k: (float("nan") if v is None else float(v)) for k, v in data.get("top1_valid", {}).items()
            },
            n_erroneous=int(data.get("n_erroneous_valid", 0)),
            reason=str(data.get("reason", "")),
        )


def default_rule(method: str | None) -> str:
    """The F key's default rule for a model fitted by ``method`` (the rule kept unless valid shows another is
    better by more than one paired standard error): ``first_error_mode`` for :data:`HAZARD_METHODS`, else
    ``DEFAULT_FIRST_ERROR_RULE``."""
    return "first_error_mode" if method in HAZARD_METHODS else DEFAULT_FIRST_ERROR_RULE


def _rule_hits(
    scores: np.ndarray,
    gold: np.ndarray,
    bag_index: np.ndarray,
    labels: np.ndarray,
    *,
    aggregation: str,
    rule: str,
    calibration: PlattMap | None = None,
) -> np.ndarray:
    """Per response with a gold first error (E,) bool: whether ``rule`` (no labels entered) names it."""
    picks = pick_first_error_flat(
        scores,
        np.full(len(scores), np.nan),
        bag_index,
        labels,
        aggregation=aggregation,
        rule=rule,
        calibration=calibration,
    )
    return first_error_hits(gold, picks, bag_index, len(labels))


def rule_top1(
    scores: np.ndarray,
    gold: np.ndarray,
    bag_index: np.ndarray,
    labels: np.ndarray,
    *,
    aggregation: str,
    rule: str,
    calibration: PlattMap | None = None,
) -> float:
    """First-error top-1 of ``rule`` with no labels entered: scores, gold (-1 none), bag_index (N,) with each
    response's steps in order; labels (B,) response labels. NaN when no response has a gold first error."""
    hits = _rule_hits(
        scores, gold, bag_index, labels, aggregation=aggregation, rule=rule, calibration=calibration
    )
    return float(hits.mean()) if hits.size else float("nan")


def _cross_fitted_calibrated_hits(
    scores: np.ndarray, gold: np.ndarray, bag_index: np.ndarray, labels: np.ndarray, aggregation: str
) -> np.ndarray:
    """``calibrated_mode`` hits (E,) with the map fitted on one half of the gold responses, measured on the
    other."""
    n_bags = len(labels)
    gold_bags = np.flatnonzero(np.bincount(bag_index[gold >= 0], minlength=n_bags) > 0)
    fold = np.full(n_bags, -1)
    fold[gold_bags] = np.arange(len(gold_bags)) % 2  # alternate in bag order: deterministic, balanced
    picks = np.full(n_bags, -1, dtype=np.int64)
    for k in (0, 1):  # two folds, each vectorised over its responses
        fitted = fit_platt(scores, np.where(fold[bag_index] == 1 - k, gold, -1))
        got = pick_first_error_flat(
            scores,
            np.full(len(scores), np.nan),
            bag_index,
            labels,
            aggregation=aggregation,
            rule="calibrated_mode",
            calibration=fitted,
        )
        picks = np.where(fold == k, got, picks)
    return first_error_hits(gold, picks, bag_index, n_bags)


def choose_first_error_rule(
    scores: np.ndarray,
    gold: np.ndarray,
    bag_index: np.ndarray,
    labels: np.ndarray,
    *,
    aggregation: str,
    calibration: PlattMap | None = None,
    default: str = DEFAULT_FIRST_ERROR_RULE,
) -> FirstErrorChoice:
    """The F key's rule chosen on validation responses: scores (N,) P(level >= 1), gold (N,) sentence labels
    (-1 none), bag_index (N,) with steps in order, labels (B,) response labels. ``calibration``: the map
    ``calibrated_mode`` uses when it was fitted on something other than these gold steps (the model's step
    calibration fitted on response labels, ``fitting.step_calibration``), measured as it is; None fits it on these
    gold steps (the same fit as the step calibration's on gold) and measures it cross-fitted.

    Only ``max`` responses have first errors to point at (step data); others, and validation sets with fewer
    than :data:`MIN_ERRONEOUS` responses with a gold first error, keep the default rule (the figures are still
    reported when there are any). Otherwise the one-standard-error rule (module docstring): the first rule of
    ``FIRST_ERROR_RULES`` whose top-1 is within one paired standard error of the best, ``default`` (see
    :func:`default_rule`) ranked first.
    """
    if default not in FIRST_ERROR_RULES:
        raise ValueError(f"unknown first-error rule {default!r}")
    order = (default, *[r for r in FIRST_ERROR_RULES if r != default])
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(gold, dtype=np.int64)
    index = np.asarray(bag_index, dtype=np.int64)
    y = np.asarray(labels, dtype=np.float64)
    if aggregation != "max":
        return FirstErrorChoice(
            rule=default, reason=f"default rule: {aggregation} responses have no first error"
        )
    n_erroneous = int((np.bincount(index[g >= 1], minlength=len(y)) > 0).sum())
    if n_erroneous == 0:
        return FirstErrorChoice(rule=default)
    hits = {
        rule: _rule_hits(s, g, index, y, aggregation=aggregation, rule=rule)
        for rule in FIRST_ERROR_RULES
        if rule != "calibrated_mode"
    }
    if calibration is None:
        hits["calibrated_mode"] = _cross_fitted_calibrated_hits(s, g, index, y, aggregation)
        calibration = fit_platt(s, g)
    else:
        hits["calibrated_mode"] = _rule_hits(
            s, g, index, y, aggregation=aggregation, rule="calibrated_mode", calibration=calibration
        )
    top1 = {rule: float(hits[rule].mean()) for rule in FIRST_ERROR_RULES}
    if n_erroneous < MIN_ERRONEOUS:
        return FirstErrorChoice(
            rule=default,
            calibration=calibration,
            top1=top1,
            n_erroneous=n_erroneous,
            reason=f"default rule: {n_erroneous} validation responses with a gold first error "
            f"(fewer than {MIN_ERRONEOUS})",
        )
    rows: list[dict[str, Any]] = [{"method": rule, "score": top1[rule]} for rule in order]
    per_response = np.stack([hits[rule].astype(np.float64) for rule in order])  # (rules, E)
    best = order[choose(rows, per_response, order=order)]
    return FirstErrorChoice(
        rule=best,
        calibration=calibration,
        top1=top1,
        n_erroneous=n_erroneous,
        reason=f"first-error top-1 on {n_erroneous} validation responses: {top1[best]:.3f}, within one paired "
        "standard error of the best; ties to the default",
    )


__all__ = [
    "HAZARD_METHODS",
    "MIN_ERRONEOUS",
    "FirstErrorChoice",
    "choose_first_error_rule",
    "default_rule",
    "rule_top1",
]
