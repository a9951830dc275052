"""Sentence scores from preferences ("response B is better than response A"), alone or beside response labels.

Alone: PrefBagLoss on the pairs. Beside the labels the responses carry (:class:`PairsAndLabels`): PrefBagLoss on
the pairs + the suite's BagLoss (``objectives.bag_objective``, the configured variant and aggregation) on the
responses that have a label of their own, each term divided by its value under the fresh scorer
(``objectives.balancing_scales``, as the joint fit of several criteria does), early stopping on the same sum
over the held-out pairs and held-out labelled responses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.context import FitResult
from fractal_core.fitting.methods import fresh_scorer, scorer_spec
from fractal_core.fitting.model import SentenceScorer
from fractal_core.fitting.objectives import (
    BALANCE_BAGS,
    bag_objective,
    balance_sample,
    balancing_scales,
    preference_objective,
)
from fractal_core.fitting.train import ProgressFn, cpu_threads, train_stage

STAGE_PREFERENCE = "preference"
"""The one training stage of a fit on pairs, with or without response labels (its progress stage name)."""
PREFERENCE_WITH_LABELS = "preference+labels"
"""The method name of a fit on pairs beside response labels (``resolved_method_``)."""


def preference_bags(
    bags: BagSet, first: torch.Tensor, second: torch.Tensor, second_better: torch.Tensor
) -> BagSet:
    """Bags laid out as pairs: bag 2k is ``first[k]``, bag 2k+1 is ``second[k]`` (K,), whose label holds the
    preference ``second_better[k]`` in [0, 1]."""
    order = torch.stack([first, second], 1).flatten()
    paired = bags.select(order)  # a response may appear in several pairs
    labels = torch.stack([torch.zeros_like(second_better), second_better], 1).flatten().to(paired.labels)
    return BagSet(**{**paired.__dict__, "labels": labels})


@dataclass(frozen=True)
class PairsAndLabels:
    """The training units of the combined objective: K pairs (``pairs``, laid out by :func:`preference_bags`)
    then L responses with a label of their own (``labelled``). Unit u < K is pair u (bags 2u, 2u + 1 of
    ``pairs``), unit K + l is labelled response l; ``n_bags`` counts units, so the training loop shuffles and
    batches pairs and labelled responses together (a batch holds both, in proportion)."""

    pairs: BagSet
    labelled: BagSet

    @property
    def n_pairs(self) -> int:
        return self.pairs.n_bags // 2

    @property
    def n_bags(self) -> int:
        return self.n_pairs + self.labelled.n_bags

    @property
    def device(self) -> torch.device:
        return self.pairs.device

    def select(self, bags: torch.Tensor) -> PairsAndLabels:
        """The units ``bags`` (K,) long: their pairs (both bags of each) and their labelled responses."""
        k = self.n_pairs
        pair_units = bags[bags < k]
        pair_bags = torch.stack([2 * pair_units, 2 * pair_units + 1], 1).flatten()
        return PairsAndLabels(self.pairs.select(pair_bags), self.labelled.select(bags[bags >= k] - k))

    def head(self, n: int = BALANCE_BAGS) -> PairsAndLabels:
        """The first (up to) ``n`` pairs and the first (up to) ``n`` labelled responses: where each term's
        starting loss is measured (``objectives.balance_sample`` of each part)."""
        pairs = balance_sample(self.pairs, 2 * n) if self.pairs.n_bags else self.pairs
        return PairsAndLabels(pairs, balance_sample(self.labelled, n))


PairTerms = Callable[[SentenceScorer, PairsAndLabels], tuple[torch.Tensor, torch.Tensor]]


def pair_label_terms(config: TrainConfig, aggregation: str) -> PairTerms:
    """(PrefBagLoss on a batch's pairs, BagLoss on its labelled responses); a part the batch lacks gives 0."""
    bag = bag_objective(config, aggregation, {"bag": 1.0})

    def terms(model: SentenceScorer, batch: PairsAndLabels) -> tuple[torch.Tensor, torch.Tensor]:
        zero = torch.zeros((), device=batch.device)
        pref = preference_objective(model, batch.pairs) if batch.pairs.n_bags else zero
        labels = bag(model, batch.labelled) if batch.labelled.n_bags else zero
        return pref, labels

    return terms


def combined_objective(
    config: TrainConfig,
    aggregation: str,
    *,
    scales: tuple[float, float] = (1.0, 1.0),
    pair_weight: float = 1.0,
) -> Callable[[SentenceScorer, PairsAndLabels], torch.Tensor]:
    """``pair_weight`` * scales[0] * PrefBagLoss + scales[1] * BagLoss (:func:`pair_label_terms`)."""
    terms = pair_label_terms(config, aggregation)

    def objective(model: SentenceScorer, batch: PairsAndLabels) -> torch.Tensor:
        pref, labels = terms(model, batch)
        return pair_weight * scales[0] * pref + scales[1] * labels

    return objective


def fit_preference(
    train: BagSet,
    valid: BagSet | None,
    *,
    config: TrainConfig,
    seed: int,
    progress: ProgressFn | None = None,
    labelled: BagSet | None = None,
    labelled_valid: BagSet | None = None,
    aggregation: str = "max",
    n_classes: int = 2,
) -> FitResult:
    """PrefBagLoss: learn sentence scores from preference pairs, beside response labels when ``labelled`` holds
    some responses.

    ``train``/``valid`` come from :func:`preference_bags`. A response's score is the mean of its sentence
    scores and P(B2 > B1) = s2 / (s1 + s2). Without labelled responses: PrefBagLoss alone, early stopping on the
    validation pairs' loss. With them (``labelled``: responses whose labels are all known, under
    ``aggregation``; ``n_classes`` label levels): the balanced sum (:func:`combined_objective`), early stopping
    on it over ``valid`` and ``labelled_valid`` (either may be None).
    """
    generator = torch.Generator().manual_seed(seed)
    if labelled is None or labelled.n_bags == 0:
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
                stage=STAGE_PREFERENCE,
                progress=progress,
                group_size=2,
            )
        return FitResult(method="preference", model=model, stages=[stage])
    if not bool(torch.isfinite(labelled.labels).all()):
        raise ValueError("labelled responses must all carry a label of their own")
    spec = scorer_spec(config, train, valid, labelled, labelled_valid)
    model = fresh_scorer(spec, int(train.sent_emb.shape[1]), n_classes, config, generator, train.device)
    units = PairsAndLabels(train, labelled)
    empty = labelled.select(torch.zeros(0, dtype=torch.long, device=labelled.device))
    held = PairsAndLabels(
        valid if valid is not None else train.select(torch.zeros(0, dtype=torch.long, device=train.device)),
        labelled_valid if labelled_valid is not None else empty,
    )
    with torch.no_grad():
        start = pair_label_terms(config, aggregation)(model, units.head())
    pref_scale, label_scale = balancing_scales(start)
    objective = combined_objective(config, aggregation, scales=(pref_scale, label_scale))

    def validate_both(m: SentenceScorer) -> float:
        with torch.inference_mode():
            return -float(objective(m, held))

    with cpu_threads(config.cpu_threads, train.device):
        stage = train_stage(
            model,
            units,
            objective,
            config=config,
            generator=generator,
            validate=validate_both if held.n_bags else None,
            stage=STAGE_PREFERENCE,
            progress=progress,
        )
    return FitResult(method=PREFERENCE_WITH_LABELS, model=model, stages=[stage])


__all__ = [
    "PREFERENCE_WITH_LABELS",
    "STAGE_PREFERENCE",
    "PairsAndLabels",
    "combined_objective",
    "fit_preference",
    "pair_label_terms",
    "preference_bags",
]
