"""Logistic maps of a score fitted to response labels: ``auto``'s calibrated prior, Platt scaling of a scorer,
the blend of a scorer with the cosine prior, and the ``constant`` baseline (a map that reads no score).

A map has three to C + 2 parameters and is fitted on every bag at once by the exact bag likelihood of the
response labels (no sentence label); the prior and Platt maps never change how the sentences of a response rank,
the blend does (its mixing weight of the two logits is what it fits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fractal_core.fitting.bags import BagSet
from fractal_core.mil.aggregate import log_positive
from fractal_core.mil.losses import bag_log_likelihood
from fractal_core.mil.reductions import segment_mean

_CALIBRATION_RIDGE = 1e-3
_CALIBRATION_STEPS = 40  # L-BFGS iterations (3 to C + 1 parameters)


class Calibration(nn.Module):
    """A logistic map of a score: P(level >= 1) = sigmoid(a z + b) with z the score's logit.

    ``kind="prior"``: z = logit of the cosine target t, and ordinal levels >= 1 share the positive mass by fitted
    proportions (the prior knows no levels). ``kind="logit"``: z = the scorer's logit of P(level >= 1), and the
    scorer's own split of the positive mass over the levels is kept (Platt scaling of a trained scorer).
    ``kind="blend"``: z = a z_scorer + b z_prior + c, the scorer's logit and the cosine target's logit centred
    within its response (:func:`blend_prior`) mixed by fitted weights (``b`` is ``prior_scale``), the scorer's
    split kept: ``auto``'s combination candidate. ``kind="constant"``: z = b alone, no score read, the levels
    split as for the prior: one probability vector for every sentence (the ``constant`` baseline). Centred, the prior only reorders a response's sentences: a
    prior that tells responses apart (e.g. every sentence of a hallucinated answer is far from its question)
    would otherwise win weight on the labels without ranking the sentences inside a response.
    Three to C + 2 parameters, fitted by the exact bag likelihood of the labels (:func:`fit_calibration`).
    """

    def __init__(self, n_classes: int, kind: str = "prior") -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown calibration kind {kind!r}")
        self.n_classes = n_classes
        self.kind = kind
        self.scale = nn.Parameter(torch.ones(()), requires_grad=kind != "constant")
        self.shift = nn.Parameter(torch.zeros(()))
        self.levels = nn.Parameter(torch.zeros(max(n_classes - 1, 1)))
        self.prior_scale = nn.Parameter(torch.zeros(()), requires_grad=kind == "blend")

    def forward(self, score: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities (N, C) from the cosine target (N,) (prior) or the scorer's log-probabilities (N, C)
        (logit), or both: the scorer's log-probabilities and ``prior``, :func:`blend_prior` (N,) (blend)."""
        if self.kind in ("prior", "constant"):
            z = _logit(score) if self.kind == "prior" else torch.zeros_like(score)
            split = torch.log_softmax(self.levels, 0).view(1, -1).expand(z.shape[0], -1)
        else:
            positive = log_positive(score)
            z = positive - score[:, 0]
            split = score[:, 1:] - positive.view(-1, 1)  # the scorer's split over the levels >= 1
        z = self.scale * z + self.shift
        if self.kind == "blend":
            if prior is None:
                raise ValueError("a blend calibration needs the cosine target beside the scorer's output")
            z = z + self.prior_scale * prior
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
            **({"prior_scale": float(self.prior_scale.detach())} if self.kind == "blend" else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        out = cls(int(data["n_classes"]), str(data.get("kind", "prior")))
        with torch.no_grad():
            out.scale.fill_(float(data["scale"]))
            out.shift.fill_(float(data["shift"]))
            out.levels.copy_(torch.as_tensor(data["levels"], dtype=torch.float32))
            out.prior_scale.fill_(float(data.get("prior_scale", 0.0)))
        return out


KINDS = ("prior", "logit", "blend", "constant")


def _logit(target: torch.Tensor) -> torch.Tensor:
    t = target.clamp(1e-4, 1 - 1e-4)
    return torch.log(t / (1 - t))


def cosine_target(bags: BagSet) -> torch.Tensor:
    """The cosine target (N,) of ``bags`` (computed when the bags do not carry it yet)."""
    if bags.cos_target is not None:
        return bags.cos_target
    target = bags.with_cosine_target().cos_target
    assert target is not None
    return target


def blend_prior(bags: BagSet) -> torch.Tensor:
    """The blend's prior feature (N,): the logit of the cosine target minus its mean over the sentence's response."""
    z = _logit(cosine_target(bags))
    return z - segment_mean(z, bags.bag_index, bags.n_bags)[bags.bag_index]


def fit_calibration(
    score: torch.Tensor, bags: BagSet, *, aggregation: str, n_classes: int, kind: str
) -> Calibration:
    """Fit a :class:`Calibration` of ``score`` (cosine target (N,) or scorer log-probabilities (N, C), detached)
    on every bag of ``bags`` at once by L-BFGS on the exact bag likelihood (a blend also reads ``bags``' cosine
    target)."""
    calibration = Calibration(n_classes, kind).to(bags.device)
    score = score.detach()
    prior = blend_prior(bags) if kind == "blend" else None
    trained = [p for p in calibration.parameters() if p.requires_grad]
    labels = torch.nan_to_num(bags.labels, nan=0.0)
    optimiser = torch.optim.LBFGS(trained, lr=1.0, max_iter=_CALIBRATION_STEPS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:  # each evaluation is vectorised over every bag
        optimiser.zero_grad(set_to_none=True)
        logp = calibration(score, prior)
        loss = -bag_log_likelihood(logp, bags.bag_index, labels, aggregation=aggregation).mean()
        # A weak pull towards the identity map keeps separable data from sending the slope to infinity.
        ridge = (calibration.scale - 1) ** 2 + calibration.shift**2 + calibration.prior_scale**2
        loss = loss + _CALIBRATION_RIDGE * ridge
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


def fit_constant(train: BagSet, *, aggregation: str, n_classes: int) -> Calibration:
    """The ``constant`` baseline: the one distribution over the levels, the same for every sentence, that makes
    the training bags' labels most likely (exact bag likelihood, no sentence label; under ``mean`` bags this is
    the pooled share of positive sentences). Under ``max``, given the response label Y = 1 a sentence of an
    n-sentence response scores p / (1 - (1 - p)^n): the given-label ranking (response label, then shorter
    responses first) is the same for every p in (0, 1), so the value only matters for ordinal levels, the
    probabilities themselves and the bag likelihood."""
    score = torch.zeros(train.n_sentences, device=train.device)
    return fit_calibration(score, train, aggregation=aggregation, n_classes=n_classes, kind="constant")


def calibrated_log_proba(calibration: dict[str, Any], bags: BagSet, scorer: nn.Module | None) -> torch.Tensor:
    """Log-probabilities (N, C) of ``bags`` under a stored calibration: of the cosine target (``kind="prior"``)
    or of ``scorer``'s log-probabilities (``kind="logit"``), or both (``kind="blend"``); ``kind="constant"``
    reads neither."""
    calibrate = Calibration.from_dict(calibration).to(bags.device)
    with torch.inference_mode():
        if calibrate.kind == "constant":
            return calibrate(torch.zeros(bags.n_sentences, device=bags.device))
        if calibrate.kind == "prior":
            return calibrate(cosine_target(bags))
        assert scorer is not None
        return Calibrated(scorer.to(bags.device), calibrate)(bags)


@dataclass
class Calibrated:
    """A trained scorer followed by a :class:`Calibration` of its logit (what ``auto`` compares and keeps)."""

    scorer: nn.Module
    calibration: Calibration

    def __call__(self, bags: BagSet) -> torch.Tensor:
        prior = blend_prior(bags) if self.calibration.kind == "blend" else None
        return self.calibration(self.scorer(bags), prior)


__all__ = [
    "KINDS",
    "Calibrated",
    "Calibration",
    "blend_prior",
    "calibrated_log_proba",
    "cosine_target",
    "fit_calibration",
    "fit_constant",
    "fit_prior_calibration",
]
