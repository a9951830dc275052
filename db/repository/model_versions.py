"""Model versions: register a training run, store its scores, finish, activate and roll back."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
from sqlalchemy import Engine, Table, and_, case, delete, func, insert, select
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import (
    GOLD_SOURCES,
    MODEL_STATUSES,
    CurrentLabel,
    Dataset,
    ModelVersion,
    Response,
    ResponseScore,
    Sentence,
    SentenceScore,
    utcnow,
)
from db.rows import LabelledScores, ModelVersionRow
from fractal_core.errors import InputError
from fractal_core.evaluation import versions
from fractal_core.mil import semantics


def _version_rows(session: Session, where: object) -> list[ModelVersionRow]:
    counts = (
        select(SentenceScore.model_version_id, func.count().label("n"))
        .group_by(SentenceScore.model_version_id)
        .subquery()
    )
    rows = session.execute(
        select(ModelVersion, Dataset.active_model_version_id, counts.c.n)
        .join(Dataset, Dataset.id == ModelVersion.dataset_id)
        .outerjoin(counts, counts.c.model_version_id == ModelVersion.id)
        .where(where)  # type: ignore[arg-type]
        .order_by(ModelVersion.version.desc())
    ).all()
    return [
        ModelVersionRow(
            id=m.id,
            dataset_id=m.dataset_id,
            version=m.version,
            method=m.method,
            status=m.status,
            config=dict(m.config or {}),
            metrics=dict(m.metrics or {}),
            artifact_path=m.artifact_path,
            error=m.error,
            parent_id=m.parent_id,
            replaced_id=m.replaced_id,
            is_active=active == m.id,
            n_scores=int(n or 0),
            created_at=m.created_at,
            finished_at=m.finished_at,
            activated_at=m.activated_at,
        )
        for m, active, n in rows
    ]


def get_model_version(engine: Engine, model_version_id: int) -> ModelVersionRow | None:
    rows = run_read(engine, lambda s: _version_rows(s, ModelVersion.id == model_version_id))
    return rows[0] if rows else None


def find_model_version(engine: Engine, dataset_id: int, version: int) -> ModelVersionRow | None:
    """A model version by its per-dataset number (the ``--model`` of ``fractal export``)."""
    rows = run_read(
        engine,
        lambda s: _version_rows(
            s, and_(ModelVersion.dataset_id == dataset_id, ModelVersion.version == version)
        ),
    )
    return rows[0] if rows else None


def list_model_versions(engine: Engine, dataset_id: int) -> list[ModelVersionRow]:
    """A dataset's model versions, newest first, with status, metrics and whether each is active."""
    return run_read(engine, lambda s: _version_rows(s, ModelVersion.dataset_id == dataset_id))


def active_model_version(engine: Engine, dataset_id: int) -> ModelVersionRow | None:
    rows = run_read(
        engine,
        lambda s: _version_rows(
            s,
            ModelVersion.id
            == select(Dataset.active_model_version_id).where(Dataset.id == dataset_id).scalar_subquery(),
        ),
    )
    return rows[0] if rows else None


def active_model_version_id(engine: Engine, dataset_id: int) -> int | None:
    """Just the id of the dataset's active version (one indexed read): cheap enough to poll for a page that
    must notice when a training job activates a new version."""
    return run_read(
        engine, lambda s: s.scalar(select(Dataset.active_model_version_id).where(Dataset.id == dataset_id))
    )


def create_model_version(
    engine: Engine,
    dataset_id: int,
    *,
    method: str,
    config: Mapping[str, object] | None = None,
    parent_id: int | None = None,
    status: str = "training",
) -> ModelVersionRow:
    """Register a training run; its number is the dataset's next version (1, 2, ...)."""
    if status not in MODEL_STATUSES:
        raise InputError(f"status must be one of {', '.join(MODEL_STATUSES)}, got {status!r}", field="status")

    def work(session: Session) -> int:
        if session.get(Dataset, dataset_id) is None:
            raise InputError(f"no dataset with id {dataset_id}", field="dataset")
        version = (
            session.scalar(
                select(func.max(ModelVersion.version)).where(ModelVersion.dataset_id == dataset_id)
            )
            or 0
        ) + 1
        mv = ModelVersion(
            dataset_id=dataset_id,
            version=version,
            method=method,
            config=dict(config or {}),
            metrics={},
            status=status,
            parent_id=parent_id,
        )
        session.add(mv)
        session.flush()
        return mv.id

    row = get_model_version(engine, run_write(engine, work))
    assert row is not None
    return row


def store_scores(
    engine: Engine,
    model_version_id: int,
    sentence_ids: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    uncertainties: Sequence[float] | np.ndarray | None = None,
    *,
    chunk_size: int = 20_000,
) -> int:
    """Bulk-write sentence scores of a version that is still training; returns the rows written.

    Shapes: ``sentence_ids``, ``scores`` and ``uncertainties`` are (n,); scores and uncertainties in [0, 1]
    (default uncertainty: ``fractal_core.mil.semantics.uncertainty``). Rows go in chunks, each its own short transaction, so
    annotators saving corrections meanwhile wait at most one chunk; the version's scores are only used once
    :func:`finish_model_version` marks it ready.
    """
    ids = np.asarray(sentence_ids, dtype=np.int64)
    values = np.asarray(scores, dtype=np.float64)
    unc = (
        semantics.uncertainty(values)
        if uncertainties is None
        else np.asarray(uncertainties, dtype=np.float64)
    )
    if not (ids.ndim == values.ndim == unc.ndim == 1 and len(ids) == len(values) == len(unc)):
        raise ValueError(
            f"sentence_ids, scores and uncertainties must be (n,) each: {ids.shape} {values.shape} {unc.shape}"
        )
    for name, arr in (("scores", values), ("uncertainties", unc)):
        if not np.all(np.isfinite(arr)) or arr.min(initial=0.0) < 0.0 or arr.max(initial=0.0) > 1.0:
            raise ValueError(f"{name} must be finite and in [0, 1]")
    status = run_read(
        engine, lambda s: s.scalar(select(ModelVersion.status).where(ModelVersion.id == model_version_id))
    )
    if status != "training":
        raise ValueError(
            f"model version {model_version_id} is {status or 'missing'}; scores go to a training version"
        )
    table = cast(Table, SentenceScore.__table__)
    for lo in range(0, len(ids), chunk_size):
        hi = lo + chunk_size
        rows = [
            {"model_version_id": model_version_id, "sentence_id": i, "score": s, "uncertainty": u}
            for i, s, u in zip(ids[lo:hi].tolist(), values[lo:hi].tolist(), unc[lo:hi].tolist(), strict=True)
        ]
        _insert_rows(engine, table, rows)
    return len(ids)


def _insert_rows(engine: Engine, table: Table, rows: list[dict[str, Any]]) -> None:
    run_write(engine, lambda session: session.execute(insert(table), rows))


def finish_model_version(
    engine: Engine,
    model_version_id: int,
    *,
    status: Literal["ready", "failed"] = "ready",
    metrics: Mapping[str, object] | None = None,
    artifact_path: str | None = None,
    error: str | None = None,
) -> ModelVersionRow:
    """Close a training run. ``ready`` keeps the per-response figures stored with
    :func:`store_response_summaries`, or computes them from the stored sentence scores when there are none
    (``fractal_core.mil.semantics``: aggregate score, uncertainty, disagreement, consistency of the gold labels)."""
    if status not in ("ready", "failed"):
        raise InputError(f"a training run finishes as ready or failed, not {status!r}", field="status")

    def work(session: Session) -> None:
        mv = session.get(ModelVersion, model_version_id)
        if mv is None:
            raise InputError(f"no model version with id {model_version_id}", field="model")
        if mv.status != "training":
            raise ValueError(f"model version {mv.version} is already {mv.status}")
        mv.status = status
        mv.finished_at = utcnow()
        mv.metrics = dict(metrics or {})
        mv.artifact_path = artifact_path
        mv.error = error
        if status == "ready":
            _summarise_scores(session, mv)

    run_write(engine, work)
    row = get_model_version(engine, model_version_id)
    assert row is not None
    return row


def _check_training(session: Session, model_version_id: int) -> ModelVersion:
    mv = session.get(ModelVersion, model_version_id)
    if mv is None:
        raise InputError(f"no model version with id {model_version_id}", field="model")
    if mv.status != "training":
        raise ValueError(f"model version {mv.version} is {mv.status}; scores go to a training version")
    return mv


def store_response_summaries(
    engine: Engine,
    model_version_id: int,
    response_ids: Sequence[int] | np.ndarray,
    summaries: semantics.ResponseSummaries,
    *,
    chunk_size: int = 20_000,
) -> int:
    """Write the per-response figures the library computed (``fractal_core.mil.semantics.summarise``) for a
    version that is still training; returns the rows written. ``response_ids`` (B,) is aligned with every
    array of ``summaries``. Replaces what the version had; :func:`finish_model_version` keeps them."""
    ids = np.asarray(response_ids, dtype=np.int64)
    columns = {
        "score": summaries.score,
        "uncertainty": summaries.uncertainty,
        "disagreement": summaries.disagreement,
    }
    if ids.ndim != 1 or any(np.shape(v) != ids.shape for v in (*columns.values(), summaries.consistent)):
        raise ValueError("response_ids and every summary array must be (B,) and aligned")
    for name, values in columns.items():
        finite = values[np.isfinite(values)]
        if finite.min(initial=0.0) < 0.0 or finite.max(initial=0.0) > 1.0:
            raise ValueError(f"response {name} must lie in [0, 1]")

    def clear(session: Session) -> None:
        _check_training(session, model_version_id)
        session.execute(delete(ResponseScore).where(ResponseScore.model_version_id == model_version_id))

    run_write(engine, clear)
    table = cast(Table, ResponseScore.__table__)
    for lo in range(0, len(ids), chunk_size):
        part = semantics.ResponseSummaries(
            *(
                getattr(summaries, f)[lo : lo + chunk_size]
                for f in semantics.ResponseSummaries.__dataclass_fields__
            )
        )
        _insert_rows(engine, table, _summary_rows(model_version_id, ids[lo : lo + chunk_size], part))
    return len(ids)


def _summary_rows(
    model_version_id: int, ids: np.ndarray, summaries: semantics.ResponseSummaries
) -> list[dict[str, Any]]:
    def clean(values: np.ndarray) -> list[float | None]:
        return [v if math.isfinite(v) else None for v in values.tolist()]  # undefined -> NULL

    return [
        {
            "model_version_id": model_version_id,
            "response_id": r,
            "score": s,
            "uncertainty": u,
            "disagreement": d,
            "consistent": None if c < 0 else c,
        }
        for r, s, u, d, c in zip(
            ids.tolist(),
            clean(summaries.score),
            clean(summaries.uncertainty),
            clean(summaries.disagreement),
            summaries.consistent.tolist(),
            strict=True,
        )
    ]


def _summarise_scores(session: Session, mv: ModelVersion) -> None:
    """Per-response figures from the version's stored sentence scores, when the caller stored none itself
    (``fractal_core.mil.semantics.summarise`` with the version's bag variant and the current gold labels)."""
    if session.scalar(select(func.count()).where(ResponseScore.model_version_id == mv.id)):
        return
    foreign = session.scalar(
        select(func.count())
        .select_from(SentenceScore)
        .join(Sentence, Sentence.id == SentenceScore.sentence_id)
        .join(Response, Response.id == Sentence.response_id)
        .where(SentenceScore.model_version_id == mv.id, Response.dataset_id != mv.dataset_id)
    )
    if foreign:
        raise ValueError(f"{foreign} scores of model version {mv.id} belong to sentences of another dataset")
    rows = session.execute(
        select(
            Sentence.response_id,
            SentenceScore.score,
            Response.response_label,
            Response.aggregation,
            case((CurrentLabel.source.in_(GOLD_SOURCES), CurrentLabel.label), else_=-1),
        )
        .select_from(SentenceScore)
        .join(Sentence, Sentence.id == SentenceScore.sentence_id)
        .join(Response, Response.id == Sentence.response_id)
        .outerjoin(CurrentLabel, CurrentLabel.sentence_id == Sentence.id)
        .where(SentenceScore.model_version_id == mv.id)
        .order_by(Sentence.response_id)
    ).all()
    if not rows:
        return
    response, score, label, aggregation, gold = (np.asarray(c) for c in zip(*rows, strict=True))
    response_ids, bag_index = np.unique(response.astype(np.int64), return_inverse=True)
    first = np.unique(bag_index, return_index=True)[1]
    labels, aggregations = label.astype(np.float64)[first], aggregation[first]
    train = (mv.config or {}).get("train") or {}
    variant = str(train.get("bag_variant", "hard"))
    temperature = float(train.get("lse_temperature", 0.1))
    gold = gold.astype(np.int64)
    for agg in np.unique(aggregations).tolist():  # at most max, min, mean: not a loop over responses
        bags = np.flatnonzero(aggregations == agg)
        keep = np.isin(bag_index, bags)
        local = np.searchsorted(bags, bag_index[keep])
        summary = semantics.summarise(
            score[keep].astype(np.float64),
            local,
            labels[bags],
            aggregation=agg,
            variant=variant,
            temperature=temperature,
            gold=gold[keep],
        )
        summary_rows = _summary_rows(mv.id, response_ids[bags], summary)
        if summary_rows:
            session.execute(insert(ResponseScore), summary_rows)


def activate_model_version(engine: Engine, model_version_id: int) -> ModelVersionRow:
    """Make a ready version the one the list pages and exports use; remembers the one it replaces."""

    def work(session: Session) -> None:
        mv = session.get(ModelVersion, model_version_id)
        if mv is None:
            raise InputError(f"no model version with id {model_version_id}", field="model")
        if mv.status != "ready":
            raise InputError(
                f"model version {mv.version} is {mv.status}; only a ready version can be activated",
                field="model",
            )
        dataset = session.get(Dataset, mv.dataset_id)
        assert dataset is not None
        if dataset.active_model_version_id == mv.id:
            return
        mv.replaced_id = dataset.active_model_version_id
        mv.activated_at = utcnow()
        dataset.active_model_version_id = mv.id

    run_write(engine, work)
    row = get_model_version(engine, model_version_id)
    assert row is not None
    return row


def rollback_model_version(engine: Engine, dataset_id: int) -> ModelVersionRow | None:
    """Re-activate the version the active one replaced; returns it (None if there was none: then no
    version is active any more only if the active one replaced nothing, which raises instead)."""

    def work(session: Session) -> int:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise InputError(f"no dataset with id {dataset_id}", field="dataset")
        if dataset.active_model_version_id is None:
            raise InputError("no active model version to roll back", field="model")
        current = session.get(ModelVersion, dataset.active_model_version_id)
        assert current is not None
        if current.replaced_id is None:
            raise InputError(f"model version {current.version} replaced no earlier version", field="model")
        dataset.active_model_version_id = current.replaced_id
        return current.replaced_id

    return get_model_version(engine, run_write(engine, work))


def labelled_scores(engine: Engine, dataset_id: int, model_version_id: int) -> LabelledScores:
    """Every labelled sentence of the dataset that ``model_version_id`` scored: its score, its current label
    and whether that label is gold (one read; e.g. the Models page's calibration chart)."""

    def work(session: Session) -> list[tuple[float, int, str]]:
        rows = session.execute(
            select(SentenceScore.score, CurrentLabel.label, CurrentLabel.source)
            .join(CurrentLabel, CurrentLabel.sentence_id == SentenceScore.sentence_id)
            .join(Sentence, Sentence.id == SentenceScore.sentence_id)
            .join(Response, and_(Response.id == Sentence.response_id, Response.dataset_id == dataset_id))
            .where(SentenceScore.model_version_id == model_version_id)
        ).all()
        return [(float(s), int(label), str(src)) for s, label, src in rows]

    rows = run_read(engine, work)
    if not rows:
        empty = np.zeros(0)
        return LabelledScores(empty, empty.astype(np.int64), empty.astype(bool))
    scores, labels, sources = zip(*rows, strict=True)
    return LabelledScores(
        np.asarray(scores, dtype=np.float64),
        np.asarray(labels, dtype=np.int64),
        np.isin(np.asarray(sources, dtype=object), GOLD_SOURCES),
    )


# ------------------------------------------------------------------------------------ evidence on gold labels


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
