"""A training job for every criterion of a group at once: one :class:`CriteriaModel` fitted, then each criterion
measured and scored as a single-criterion model (the shared trunk and its own head).

    result = train_and_score_criteria({"correct": CriterionData(records, sids, rids), "grounded": ...},
                                      method="priors", config=config)
    result.model                       # the joint CriteriaModel
    result.results["correct"]          # a TrainResult: that criterion's FractalModel, scores, gold figures

Each criterion comes as its own single-label records (a store keeps one dataset per criterion, with its own ids,
labels and gold); they must be the same responses with the same sentences, in the same order. They are merged
into records with ``criteria`` (:func:`joint_records`) and embedded once; the library's criteria bags
(``criteria_model.criteria_bags``) carry every criterion's labels and gold. What is reported of each criterion is
what a single training job reports (``pipeline.measure_and_score``), so a store publishes each as an ordinary
model version.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fractal_core.data.records import CriterionLabels, ResponseRecord
from fractal_core.embedding.encoder import EncoderConfig
from fractal_core.fitting import registry
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.criteria_fit import criterion_bags
from fractal_core.fitting.criteria_model import CriteriaModel, criteria_bags, criteria_of
from fractal_core.fitting.estimator import FractalModel
from fractal_core.fitting.pipeline import (
    QUEUE_SIZE,
    TrainResult,
    check_ids,
    embed_job_records,
    measure_and_score,
)
from fractal_core.fitting.train import ProgressFn


@dataclass(frozen=True)
class CriterionData:
    """One criterion's responses as single-label records (its labels, its gold), with the caller's ids:
    sentence_ids (N,) in the records' span order, response_ids (B,); previous: the model its new one replaces
    (measured on the same gold); file_labels (N,): every current label, imported ones included (-1: none)."""

    records: Sequence[ResponseRecord]
    sentence_ids: np.ndarray
    response_ids: np.ndarray
    previous: FractalModel | None = None
    file_labels: np.ndarray | None = None


@dataclass(frozen=True)
class JointResult:
    """The joint model, and per criterion (in the given order) what a single training job returns."""

    model: CriteriaModel
    results: dict[str, TrainResult]
    stages: tuple[str, ...]


def joint_records(views: Mapping[str, Sequence[ResponseRecord]]) -> list[ResponseRecord]:
    """Each criterion's single-label records merged into records that declare every criterion (names in the
    mapping's order). ValueError when they are not the same responses (ids) with the same sentences, in order."""
    names = list(views)
    if not names:
        raise ValueError("no criteria to train")
    first = views[names[0]]
    for name in names[1:]:
        if len(views[name]) != len(first):
            raise ValueError(
                f"criterion {name!r} holds {len(views[name])} responses, {names[0]!r} {len(first)}: "
                "the criteria of a group must hold the same responses"
            )
    out = []
    for i, record in enumerate(first):  # building records, once per job (not a training or scoring path)
        labels = {}
        for name in names:
            own = views[name][i]
            if own.id != record.id or own.spans != record.spans:
                raise ValueError(
                    f"criterion {name!r}: response {own.id!r} (position {i}) is not {record.id!r} with the same "
                    "sentences; the criteria of a group must hold the same responses and sentences"
                )
            labels[name] = CriterionLabels(own.response_label, own.aggregation, own.sentence_labels)
        out.append(replace(record, criteria=labels))
    return out


def joint_stages(
    method: str, aggregations: Sequence[str], config: TrainConfig | None = None
) -> tuple[str, ...]:
    """The training stages a joint fit of criteria with these aggregations runs, in order (what
    ``criteria_fit.fit_criteria`` runs: the bag stage, then PsLab when any criterion's plan has it)."""
    if method not in registry.CRITERIA_METHODS:
        raise ValueError(
            f"several criteria train with {', '.join(registry.CRITERIA_METHODS)}, not {method!r}"
        )
    plans = [registry.resolve(method, has_gold=False, aggregation=a, config=config) for a in aggregations]
    pslab = any(p.runs(registry.STAGE_PSLAB) for p in plans)
    return (registry.STAGE_BAG, registry.STAGE_PSLAB) if pslab else (registry.STAGE_BAG,)


def train_and_score_criteria(
    data: Mapping[str, CriterionData],
    *,
    method: str = "priors",
    config: TrainConfig | None = None,
    seed: int = 0,
    queue_size: int = QUEUE_SIZE,
    progress: ProgressFn | None = None,
    encoder: EncoderConfig | None = None,
    scratch: str | Path | None = None,
) -> JointResult:
    """Fit one model on every criterion of ``data`` (a seeded ``valid_fraction`` held out for early stopping),
    then measure and score each criterion with its own part of it (``CriteriaModel.criterion_model``).

    progress: ``(stage, fraction, message)`` for the embedding, then each stage of :func:`joint_stages`; it may
    raise to cancel (nothing is returned then). scratch: where the embeddings file is made (as in
    ``pipeline.train_and_score``).
    """
    names = list(data)
    merged = joint_records({name: part.records for name, part in data.items()})
    ids = {
        name: (np.asarray(part.sentence_ids, np.int64), np.asarray(part.response_ids, np.int64))
        for name, part in data.items()
    }
    for name in names:
        check_ids(data[name].records, *ids[name])
    criteria = criteria_of(merged)
    config = config or TrainConfig()
    stages = joint_stages(method, [c.aggregation for c in criteria], config)
    model = CriteriaModel(method, config=config, encoder=encoder, seed=seed)
    results: dict[str, TrainResult] = {}
    with tempfile.TemporaryDirectory(prefix="fractal-embeddings-", dir=scratch) as store:
        bags, encoder_id = embed_job_records(merged, model, progress, store)
        bags = criteria_bags(bags, merged, names)
        model.fit_bags(bags, criteria=criteria, encoder_id=encoder_id, progress=progress)
        for j, name in enumerate(names):  # a handful of criteria, each measured and scored vectorised
            part = data[name]
            labels = None if part.file_labels is None else np.asarray(part.file_labels, np.int64)
            if labels is not None and labels.shape != ids[name][0].shape:
                raise ValueError(
                    f"criterion {name!r}: file_labels must be ({len(ids[name][0])},), got {labels.shape}"
                )
            results[name] = measure_and_score(
                model.criterion_model(name), criterion_bags(bags, j), part.records, stages=stages,
                sentence_ids=ids[name][0], response_ids=ids[name][1], previous=part.previous,
                file_labels=labels, queue_size=queue_size,
            )  # fmt: skip
    return JointResult(model=model, results=results, stages=stages)


__all__ = ["CriterionData", "JointResult", "joint_records", "joint_stages", "train_and_score_criteria"]
