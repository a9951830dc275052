"""Calibrated step probabilities: a temperature and a bias on the scorer's logit, fitted after training and kept
with the model (``model.json``).

A bag-trained scorer ranks steps but its P(level >= 1) is sharp (a hard-max bag loss pushes it to 0 or 1), and
every rule that multiplies step probabilities (the given-label view, the first-error distribution) suffers. The
map is q = sigmoid(a * logit(p) + b), a > 0, fitted on the held-out (validation) responses:

- on their GOLD STEPS when there are at least ``TrainConfig.min_gold_for_valid`` of them with both classes:
  logistic regression of the gold label on logit(p) (``reviewer.fit_platt``, the map the F key's
  ``calibrated_mode`` applies);
- otherwise, for binary or ordinal ``max`` / ``min`` responses with labels, by the exact bag likelihood of their
  response labels (``calibration.fit_calibration(kind="logit")``, no sentence label);
- otherwise the identity (``fitted_on="none"``).

Ranking. With a > 0 the map is increasing, so the marginal ranking of every step across responses is unchanged
and raw scores stay the default everywhere a score is stored, ranked or thresholded (the store, the gold queue).
Given the response label the map does change the ranking across responses (a response's posterior divides by
its own normaliser), so whether the given-label view uses the calibrated probabilities is CHOSEN ON VALID
(:func:`choose_given_label`): only when it does not lower the given-label AUC on the validation gold steps by
more than one paired (DeLong) standard error. A map fitted on a few gold steps can also be worse than none: one
that does not lower the step ECE on those steps (cross-fitted over two halves of the responses) is dropped for
the identity, its fit kept in the figures. The first-error rules choose between the raw and the calibrated
first-error mode with their own rule (``fitting.first_error``), using this map. A fitted a <= 0 would reverse the
ranking and is refused (identity).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import torch

from fractal_core.evaluation.metrics import auc_roc, expected_calibration_error, paired_auc_se
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.calibration import Calibration, fit_calibration
from fractal_core.mil.aggregate import positive_score
from fractal_core.mil.posterior import posterior_scores
from fractal_core.mil.reviewer import PlattMap, calibrate, fit_platt

FITTED_ON: Final = ("gold_steps", "response_labels", "none")


@dataclass(frozen=True)
class StepCalibration:
    """The map sigmoid(scale * logit(p) + bias) of a model's P(level >= 1) and how it was fitted and chosen.

    fitted_on: one of :data:`FITTED_ON`; n_fitted: gold steps or responses it was fitted on; given_label: the
    given-label view uses the calibrated probabilities (chosen on valid); figures: the given-label AUC on the
    validation gold, raw and calibrated (cross-fitted when the map was fitted on those steps), and the paired
    standard error of their difference; reason: one line for people.
    """

    scale: float = 1.0
    bias: float = 0.0
    fitted_on: str = "none"
    n_fitted: int = 0
    given_label: bool = False
    figures: dict[str, float] = field(default_factory=dict)
    reason: str = "identity: not fitted"

    @property
    def map(self) -> PlattMap:
        return (self.scale, self.bias)

    @property
    def identity(self) -> bool:
        """The map changes nothing (not fitted, or dropped on valid)."""
        return self.fitted_on == "none" or (self.scale, self.bias) == (1.0, 0.0)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated P(level >= 1) (N,) of raw scores (N,) (``reviewer.calibrate``)."""
        return calibrate(np.asarray(scores, dtype=np.float64), self.map)

    def apply_proba(self, proba: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities (N, C) of raw ones (N, C): P(level >= 1) through the map, the scorer's split of
        it over the levels kept (``Calibration(kind="logit")``; equal to :meth:`apply` on P(level >= 1) up to the
        1e-9 clip of the probabilities there)."""
        if self.identity:
            return proba
        n_classes = int(proba.shape[1])
        mapping = Calibration.from_dict(
            {
                "kind": "logit",
                "n_classes": n_classes,
                "scale": self.scale,
                "shift": self.bias,
                "levels": [0.0] * max(n_classes - 1, 1),
            }
        ).to(proba.device)
        with torch.inference_mode():
            return mapping(proba.clamp_min(1e-12).log()).exp().to(proba.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "bias": self.bias,
            "fitted_on": self.fitted_on,
            "n_fitted": self.n_fitted,
            "given_label": self.given_label,
            "figures": {k: (v if np.isfinite(v) else None) for k, v in self.figures.items()},
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StepCalibration:
        """Inverse of :meth:`to_dict`; None (a model saved before step calibration) gives the identity."""
        if not data:
            return cls(reason="identity: saved before step calibration")
        return cls(
            scale=float(data["scale"]),
            bias=float(data["bias"]),
            fitted_on=str(data.get("fitted_on", "none")),
            n_fitted=int(data.get("n_fitted", 0)),
            given_label=bool(data.get("given_label", False)),
            figures={k: float("nan") if v is None else float(v) for k, v in data.get("figures", {}).items()},
            reason=str(data.get("reason", "")),
        )


def _has_gold(gold: np.ndarray, minimum: int) -> bool:
    """At least ``minimum`` labelled steps (and at least one) holding both classes."""
    labelled = gold >= 0
    n = int(labelled.sum())
    n_pos = int((gold >= 1).sum())
    return n >= max(minimum, 1) and 0 < n_pos < n


def fit_step_calibration(
    logp: torch.Tensor, bags: BagSet, *, aggregation: str, n_classes: int, min_gold: int
) -> StepCalibration:
    """Fit the map on held-out ``bags`` from the scorer's log-probabilities ``logp`` (N, C) of them (module
    docstring: gold steps first, else response labels, else the identity)."""
    gold = bags.gold.cpu().numpy()
    if _has_gold(gold, min_gold):
        scores = positive_score(logp.detach()).double().cpu().numpy()
        scale, bias = fit_platt(scores, gold)
        fitted_on, n = "gold_steps", int((gold >= 0).sum())
    elif aggregation in ("max", "min") and bags.n_bags and bool(torch.isfinite(bags.labels).all()):
        fitted = fit_calibration(logp, bags, aggregation=aggregation, n_classes=n_classes, kind="logit")
        scale, bias = float(fitted.scale.detach()), float(fitted.shift.detach())
        fitted_on, n = "response_labels", bags.n_bags
    else:
        return StepCalibration(reason="identity: no held-out gold steps or usable response labels")
    if not (np.isfinite(scale) and np.isfinite(bias) and scale > 0):
        return StepCalibration(
            reason=f"identity: the fitted map (scale {scale:.3g}) would reverse the ranking"
        )
    what = "gold steps" if fitted_on == "gold_steps" else "response labels"
    return StepCalibration(
        scale=scale,
        bias=bias,
        fitted_on=fitted_on,
        n_fitted=n,
        reason=f"fitted on {n} held-out {what}; given-label view keeps the raw scores",
    )


def _given_label(proba: torch.Tensor, bags: BagSet, aggregation: str) -> np.ndarray:
    logp = proba.clamp_min(1e-12).log()
    return posterior_scores(logp, bags.bag_index, bags.labels, aggregation=aggregation).double().cpu().numpy()


def _cross_fitted(proba: torch.Tensor, bags: BagSet, gold: np.ndarray) -> torch.Tensor:
    """Calibrated probabilities (N, C), each response's from a map fitted on the gold steps of the other half
    of the responses with gold (alternating in bag order, as ``first_error``'s cross-fitting)."""
    index = bags.bag_index.cpu().numpy()
    gold_bags = np.flatnonzero(np.bincount(index[gold >= 0], minlength=bags.n_bags) > 0)
    fold = np.full(bags.n_bags, -1)
    fold[gold_bags] = np.arange(len(gold_bags)) % 2
    scores = positive_score(proba.clamp_min(1e-12).log()).double().cpu().numpy()
    out = proba.clone()
    for k in (0, 1):  # two folds, each vectorised over its responses
        scale, bias = fit_platt(scores, np.where(fold[index] == 1 - k, gold, -1))
        mapped = StepCalibration(scale=scale, bias=bias, fitted_on="gold_steps").apply_proba(proba)
        rows = torch.as_tensor(fold[index] == k, device=proba.device)
        out[rows] = mapped[rows]
    return out


def choose_given_label(
    calibration: StepCalibration, proba: torch.Tensor, bags: BagSet, *, aggregation: str, min_gold: int
) -> StepCalibration:
    """``calibration`` with ``given_label`` chosen on held-out ``bags`` from the raw probabilities ``proba``
    (N, C): the calibrated given-label view is kept when its AUC on the gold steps is at least the raw one's
    minus one paired standard error (``metrics.paired_auc_se``). A map fitted on those gold steps is measured
    cross-fitted over two halves of the responses, and dropped for the identity when it does not lower their
    step ECE. Too little gold (``min_gold``) keeps the raw view."""
    gold = bags.gold.cpu().numpy()
    if calibration.fitted_on == "none":
        return calibration
    if not _has_gold(gold, min_gold):
        return replace(calibration, reason=calibration.reason + " (too little validation gold to choose)")
    if calibration.fitted_on == "gold_steps":
        calibrated = _cross_fitted(proba, bags, gold)
    else:
        calibrated = calibration.apply_proba(proba)
    labelled = gold >= 0
    positive = gold[labelled] >= 1
    ece = {
        "ece_raw": expected_calibration_error(
            gold, positive_score(proba.clamp_min(1e-12).log()).cpu().numpy()
        ),
        "ece_calibrated": expected_calibration_error(
            gold, positive_score(calibrated.clamp_min(1e-12).log()).cpu().numpy()
        ),
    }
    if calibration.fitted_on == "gold_steps" and not ece["ece_calibrated"] < ece["ece_raw"]:
        return replace(
            calibration,
            scale=1.0,
            bias=0.0,
            figures={**ece, "dropped_scale": calibration.scale, "dropped_bias": calibration.bias},
            reason=f"identity: the map fitted on {calibration.n_fitted} held-out gold steps did not lower their "
            f"step ECE (cross-fitted {ece['ece_calibrated']:.3f} vs {ece['ece_raw']:.3f} raw)",
        )
    raw_view = _given_label(proba, bags, aggregation)[labelled]
    cal_view = _given_label(calibrated, bags, aggregation)[labelled]
    raw_auc, cal_auc = auc_roc(positive, raw_view), auc_roc(positive, cal_view)
    se = paired_auc_se(positive, cal_view, raw_view)
    keep = bool(np.isfinite(cal_auc) and np.isfinite(raw_auc) and cal_auc >= raw_auc - np.nan_to_num(se))
    verdict = "uses the calibrated scores" if keep else "keeps the raw scores"
    return replace(
        calibration,
        given_label=keep,
        figures={
            **ece,
            "auc_given_label_raw": raw_auc,
            "auc_given_label_calibrated": cal_auc,
            "auc_difference_se": se,
        },
        reason=calibration.reason.split(";")[0]
        + f"; given-label view {verdict} (valid AUC {cal_auc:.3f} calibrated vs {raw_auc:.3f} raw, "
        f"paired SE {se:.3f})",
    )


__all__ = ["FITTED_ON", "StepCalibration", "choose_given_label", "fit_step_calibration"]
