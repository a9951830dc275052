"""Logistic maps of a score fitted to response labels: ``auto``'s calibrated prior, Platt scaling of a scorer.

A map has three to C + 1 parameters and is fitted on every bag at once by the exact bag likelihood of the
response labels (no sentence label); it never changes how the sentences of a response rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fractal_core.fitting.bags import BagSet
from fractal_core.mil.aggregate import log_positive
from fractal_core.mil.losses import bag_log_likelihood

_CALIBRATION_RIDGE = 1e-3
_CALIBRATION_STEPS = 40  # L-BFGS iterations (3 to C + 1 parameters)


class Calibration(nn.Module):
    """A logistic map of a score: P(level >= 1) = sigmoid(a z + b) with z the score's logit.

    ``kind="prior"``: z = logit of the cosine target t, and ordinal levels >= 1 share the positive mass by fitted
    proportions (the prior knows no levels). ``kind="logit"``: z = the scorer's logit of P(level >= 1), and the
    scorer's own split of the positive mass over the levels is kept (Platt scaling of a trained scorer).
    Three to C + 1 parameters, fitted by the exact bag likelihood of the labels (:func:`fit_calibration`).
    """

    def __init__(self, n_classes: int, kind: str = "prior") -> None:
        super().__init__()
        if kind not in ("prior", "logit"):
            raise ValueError(f"unknown calibration kind {kind!r}")
        self.n_classes = n_classes
        self.kind = kind
        self.scale = nn.Parameter(torch.ones(()))
        self.shift = nn.Parameter(torch.zeros(()))
        self.levels = nn.Parameter(torch.zeros(max(n_classes - 1, 1)))

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (N, C) from the cosine target (N,) (prior) or the scorer's log-probabilities (N, C)."""
        if self.kind == "prior":
            t = score.clamp(1e-4, 1 - 1e-4)
            z = torch.log(t / (1 - t))
            split = torch.log_softmax(self.levels, 0).view(1, -1).expand(z.shape[0], -1)
        else:
            positive = log_positive(score)
            z = positive - score[:, 0]
            split = score[:, 1:] - positive.view(-1, 1)  # the scorer's split over the levels >= 1
        z = self.scale * z + self.shift
        return torch.cat(
            [nn.functional.logsigmoid(-z).view(-1, 1), nn.functional.logsigmoid(z).view(-1, 1) + split], 1
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_classes": self.n_classes,
            "scale": float(self.scale.detach()),
            "shift": float(self.shift.detach()),
            "levels": [float(v) for v in self.levels.detach()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        out = cls(int(data["n_classes"]), str(data.get("kind", "prior")))
        with torch.no_grad():
            out.scale.fill_(float(data["scale"]))
            out.shift.fill_(float(data["shift"]))
            out.levels.copy_(torch.as_tensor(data["levels"], dtype=torch.float32))
        return out


def cosine_target(bags: BagSet) -> torch.Tensor:
    """The cosine target (N,) of ``bags`` (computed when the bags do not carry it yet)."""
    if bags.cos_target is not None:
        return bags.cos_target
    target = bags.with_cosine_target().cos_target
    assert target is not None
    return target


def fit_calibration(
    score: torch.Tensor, bags: BagSet, *, aggregation: str, n_classes: int, kind: str
) -> Calibration:
    """Fit a :class:`Calibration` of ``score`` (cosine target (N,) or scorer log-probabilities (N, C), detached)
    on every bag of ``bags`` at once by L-BFGS on the exact bag likelihood."""
    calibration = Calibration(n_classes, kind).to(bags.device)
    score = score.detach()
    labels = torch.nan_to_num(bags.labels, nan=0.0)
    optimiser = torch.optim.LBFGS(
        calibration.parameters(), lr=1.0, max_iter=_CALIBRATION_STEPS, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:  # each evaluation is vectorised over every bag
        optimiser.zero_grad(set_to_none=True)
        loss = -bag_log_likelihood(calibration(score), bags.bag_index, labels, aggregation=aggregation).mean()
        # A weak pull towards the identity map keeps separable data from sending the slope to infinity.
        loss = loss + _CALIBRATION_RIDGE * ((calibration.scale - 1) ** 2 + calibration.shift**2)
        loss.backward()
        return loss

    optimiser.step(closure)
    if not all(bool(torch.isfinite(v).all()) for v in calibration.parameters()):
        calibration = Calibration(n_classes, kind).to(bags.device)  # the identity map: never worse than NaN
    return calibration.eval()


def fit_prior_calibration(train: BagSet, *, aggregation: str, n_classes: int) -> Calibration:
    """The cosine target calibrated to the training bags' labels (``auto``'s prior-only candidate)."""
    return fit_calibration(
        cosine_target(train), train, aggregation=aggregation, n_classes=n_classes, kind="prior"
    )


def calibrated_log_proba(calibration: dict[str, Any], bags: BagSet, scorer: nn.Module | None) -> torch.Tensor:
    """Log-probabilities (N, C) of ``bags`` under a stored calibration: of the cosine target (``kind="prior"``)
    or of ``scorer``'s log-probabilities (``kind="logit"``)."""
    calibrate = Calibration.from_dict(calibration).to(bags.device)
    with torch.inference_mode():
        if calibrate.kind == "prior":
            return calibrate(cosine_target(bags))
        assert scorer is not None
        return calibrate(scorer.to(bags.device)(bags))


@dataclass
class Calibrated:
    """A trained scorer followed by a :class:`Calibration` of its logit (what ``auto`` compares and keeps)."""

    scorer: nn.Module
    calibration: Calibration

    def __call__(self, bags: BagSet) -> torch.Tensor:
        return self.calibration(self.scorer(bags))


__all__ = [
    "Calibrated",
    "Calibration",
    "calibrated_log_proba",
    "cosine_target",
    "fit_calibration",
    "fit_prior_calibration",
]
