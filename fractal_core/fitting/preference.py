"""Sentence scores from preferences ("response B is better than response A") instead of response labels."""

from __future__ import annotations

import torch

from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.context import FitResult
from fractal_core.fitting.methods import fresh_scorer, scorer_spec
from fractal_core.fitting.model import SentenceScorer
from fractal_core.fitting.objectives import preference_objective
from fractal_core.fitting.train import ProgressFn, cpu_threads, train_stage


def preference_bags(
    bags: BagSet, first: torch.Tensor, second: torch.Tensor, second_better: torch.Tensor
) -> BagSet:
    """Bags laid out as pairs: bag 2k is ``first[k]``, bag 2k+1 is ``second[k]`` (K,), whose label holds the
    preference ``second_better[k]`` in [0, 1]."""
    order = torch.stack([first, second], 1).flatten()
    paired = bags.select(order)  # a response may appear in several pairs
    labels = torch.stack([torch.zeros_like(second_better), second_better], 1).flatten().to(paired.labels)
    return BagSet(**{**paired.__dict__, "labels": labels})


def fit_preference(
    train: BagSet, valid: BagSet | None, *, config: TrainConfig, seed: int, progress: ProgressFn | None = None
) -> FitResult:
    """PrefBagLoss: learn sentence scores from preference pairs.

    ``train``/``valid`` come from :func:`preference_bags`. A response's score is the mean of its sentence
    scores and P(B2 > B1) = s2 / (s1 + s2). Early stopping on the validation pairs' loss.
    """
    generator = torch.Generator().manual_seed(seed)
    spec = scorer_spec(config, train, valid)
    model = fresh_scorer(spec, int(train.sent_emb.shape[1]), 2, config, generator, train.device)

    def validate(m: SentenceScorer) -> float:
        assert valid is not None
        with torch.inference_mode():
            return -float(preference_objective(m, valid))

    with cpu_threads(config.cpu_threads, train.device):
        stage = train_stage(
            model,
            train,
            preference_objective,
            config=config,
            generator=generator,
            validate=validate if valid is not None and valid.n_bags else None,
            stage="preference",
            progress=progress,
            group_size=2,
        )
    return FitResult(method="preference", model=model, stages=[stage])


__all__ = ["fit_preference", "preference_bags"]
