"""What every fit takes and returns: the data and settings of one fit (:class:`FitContext`), and its result."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.model import SentenceScorer
from fractal_core.fitting.train import ProgressFn, StageResult
from fractal_core.mil.hazard import first_error_protocol


@dataclass(frozen=True)
class FitContext:
    """One fit's data and settings, passed whole to the single-method fit, ``auto`` and their helpers.

    ``train``: the training bags (``train.gold`` holds the gold sentence labels a method may use); ``valid``:
    bags for early stopping (``None``: the training loss decides); ``aggregation`` and ``n_classes``: the task;
    ``config``: the settings the method was resolved with; ``seed``: every generator of the fit derives from
    it; ``progress``: ``(stage, fraction, message)`` callback, may raise to cancel.
    """

    train: BagSet
    valid: BagSet | None
    aggregation: str
    n_classes: int
    config: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    progress: ProgressFn | None = None

    @property
    def device(self) -> torch.device:
        return self.train.device

    @property
    def has_gold(self) -> bool:
        """Whether some training sentence carries a gold label."""
        return bool((self.train.gold >= 0).any())

    def plan(self, method: str) -> registry.MethodPlan:
        """``method`` resolved against this data and config (:func:`registry.resolve`)."""
        train = self.train
        return registry.resolve(
            method,
            has_gold=self.has_gold,
            aggregation=self.aggregation,
            config=self.config,
            first_error=first_error_protocol(train.gold, train.bag_index, train.n_bags),
        )

    def but(self, **changes: Any) -> FitContext:
        """A copy with ``changes`` (e.g. other training bags, a candidate's progress callback)."""
        return replace(self, **changes)


@dataclass
class CandidateFit:
    """One fitted ``auto`` candidate (not stored with the model): what benchmarks need to re-run the choice."""

    name: str
    method: str
    scorer: SentenceScorer | None  # None for the calibrated prior
    calibration: dict[str, Any] | None  # the prior's map (prior-only) or the blend's, else None
    judged: np.ndarray  # held-out log-likelihood of each judged bag (after the logistic map)


@dataclass
class FitResult:
    """A fitted scorer (None for the training-free baselines and the calibrated prior) and what each stage did.

    ``method``: the pipeline that produced the model. ``auto`` also sets ``calibration`` (the fitted
    ``Calibration`` of the prior, as a dict), ``selection`` (what was chosen, the criterion and every
    candidate's figures) and ``candidates`` (each fitted candidate; not stored). The ``constant`` baseline sets
    ``calibration`` too: its one fitted distribution over the levels.
    """

    method: str
    model: SentenceScorer | None
    stages: list[StageResult] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    candidates: list[CandidateFit] = field(default_factory=list)

    def history(self) -> list[dict[str, Any]]:
        return [s.__dict__ for s in self.stages]


__all__ = ["CandidateFit", "FitContext", "FitResult"]
