"""Activation by evidence: a new version replaces the active one only if not worse on the current gold set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, select
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import GOLD_SOURCES, CurrentLabel, ModelVersion, Response, Sentence, SentenceScore
from db.repository.model_registry import activate_model_version, active_model_version, get_model_version
from db.rows import ModelVersionRow
from fractal_core.errors import InputError
from fractal_core.evaluation import versions


@dataclass(frozen=True)
class GoldScores:
    """Scores of several versions on the dataset's current gold sentences.

    ``sentence_ids``, ``labels`` (gold levels) and ``response_ids`` are (N,); ``scores`` is (V, N) in the order
    of the version ids asked for, NaN where a version has no score for a sentence (e.g. it was trained before the
    sentence's response was imported).
    """

    version_ids: tuple[int, ...]
    sentence_ids: np.ndarray
    labels: np.ndarray
    response_ids: np.ndarray
    scores: np.ndarray

    def scored_by(self, *version_ids: int) -> tuple[np.ndarray, ...]:
        """The gold sentences every one of ``version_ids`` scored: each version's scores, then the labels and
        response ids, (n,) each (what ``fractal_core.evaluation.versions`` takes)."""
        rows = [self.version_ids.index(v) for v in version_ids]
        both = np.isfinite(self.scores[rows]).all(axis=0)
        return (*(self.scores[r, both] for r in rows), self.labels[both], self.response_ids[both])


def current_gold_scores(engine: Engine, dataset_id: int, model_version_ids: Sequence[int]) -> GoldScores:
    """Every sentence of the dataset whose current label counts as gold, with each asked version's score (two
    reads: the gold labels, then the versions' scores of those sentences)."""
    ids = tuple(int(i) for i in model_version_ids)

    def work(session: Session) -> tuple[list[Any], list[Any]]:
        gold = session.execute(
            select(CurrentLabel.sentence_id, CurrentLabel.label, Sentence.response_id)
            .join(Sentence, Sentence.id == CurrentLabel.sentence_id)
            .join(Response, and_(Response.id == Sentence.response_id, Response.dataset_id == dataset_id))
            .where(CurrentLabel.source.in_(GOLD_SOURCES))
            .order_by(CurrentLabel.sentence_id)
        ).all()
        scored = session.execute(
            select(SentenceScore.model_version_id, SentenceScore.sentence_id, SentenceScore.score)
            .join(CurrentLabel, CurrentLabel.sentence_id == SentenceScore.sentence_id)
            .join(Sentence, Sentence.id == SentenceScore.sentence_id)
            .join(Response, and_(Response.id == Sentence.response_id, Response.dataset_id == dataset_id))
            .where(SentenceScore.model_version_id.in_(ids), CurrentLabel.source.in_(GOLD_SOURCES))
        ).all()
        return list(gold), list(scored)

    gold, scored = run_read(engine, work)
    sentence_ids = np.asarray([g[0] for g in gold], dtype=np.int64)
    scores = np.full((len(ids), len(sentence_ids)), np.nan)
    if scored:
        version, sentence, value = (np.asarray(c) for c in zip(*scored, strict=True))
        row = _index_of(ids, version.astype(np.int64))
        scores[row, np.searchsorted(sentence_ids, sentence.astype(np.int64))] = value.astype(np.float64)
    return GoldScores(
        version_ids=ids,
        sentence_ids=sentence_ids,
        labels=np.asarray([g[1] for g in gold], dtype=np.int64),
        response_ids=np.asarray([g[2] for g in gold], dtype=np.int64),
        scores=scores,
    )


def _index_of(ids: tuple[int, ...], values: np.ndarray) -> np.ndarray:
    """Row of each value in the unsorted tuple ``ids`` (vectorised lookup through a sort)."""
    order = np.argsort(ids)
    return order[np.searchsorted(np.asarray(ids)[order], values)]


def compare_on_current_gold(
    engine: Engine, dataset_id: int, version_a_id: int, version_b_id: int, *, seed: int = 0
) -> versions.VersionComparison:
    """Version A against version B on the current gold sentences both have scored
    (``fractal_core.evaluation.versions.compare_versions``: differences B - A with paired bootstrap intervals)."""
    table = current_gold_scores(engine, dataset_id, [version_a_id, version_b_id])
    return versions.compare_versions(*table.scored_by(version_a_id, version_b_id), seed=seed)


@dataclass(frozen=True)
class ActivationDecision:
    """What :func:`activate_if_not_worse` did with a new version, and the evidence (stored in its metrics under
    ``activation``)."""

    activated: bool
    reason: str
    compared_with_version: int | None
    comparison: versions.VersionComparison | None


def activate_if_not_worse(engine: Engine, model_version_id: int, *, seed: int = 0) -> ActivationDecision:
    """Activate a ready version only when it is not worse than the active one on the current gold set beyond
    noise (``fractal_core.evaluation.versions``); otherwise it stays ready and waits for a person to activate it.
    The first version of a dataset is activated at once (there is nothing to compare with). The decision and
    its figures go into the version's metrics (``activation``) so every page can say why."""
    mv = get_model_version(engine, model_version_id)
    if mv is None:
        raise InputError(f"no model version with id {model_version_id}", field="model")
    active = active_model_version(engine, mv.dataset_id)
    comparison = None
    if active is None or active.id == mv.id:
        activated, reason = True, "the first version of this dataset: nothing to compare with"
    else:
        comparison = compare_on_current_gold(engine, mv.dataset_id, active.id, mv.id, seed=seed)
        activated = comparison.not_worse
        reason = (
            f"not worse than version {active.version} on the current gold set: {comparison.reason}"
            if activated
            else f"waiting: compared with version {active.version}, {comparison.reason}"
        )
    record = {
        "activated": activated,
        "reason": reason,
        "compared_with_version": active.version if active is not None else None,
        **({"comparison": comparison.to_dict()} if comparison is not None else {}),
    }

    def work(session: Session) -> None:
        row = session.get(ModelVersion, model_version_id)
        assert row is not None
        row.metrics = {
            **(row.metrics or {}),
            "activation": record,
        }  # a new dict: the JSON column sees a change

    run_write(engine, work)
    if activated:
        activate_model_version(engine, model_version_id)
    return ActivationDecision(activated, reason, record["compared_with_version"], comparison)  # type: ignore[arg-type]


def waiting_reason(mv: ModelVersionRow) -> str | None:
    """Why a ready version that was held back is not active (None for any other version): never activated and
    its activation decision said wait."""
    decision = (mv.metrics or {}).get("activation") or {}
    if mv.status != "ready" or mv.is_active or mv.activated_at is not None or decision.get("activated", True):
        return None
    return str(decision.get("reason") or "waiting to be activated")
