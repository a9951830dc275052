"""Responses and pages: the filtered, sorted response list, one response in full, and id look-ups."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Engine, Select, and_, exists, func, select
from sqlalchemy.orm import Session

from db.engine import run_read
from db.models import (
    GOLD_SOURCES,
    Assignment,
    CurrentLabel,
    Dataset,
    ModelVersion,
    Response,
    ResponseScore,
    SegmentEdit,
    Sentence,
    SentenceScore,
    live_sentence,
)
from db.rows import ResponseDetail, ResponseListRow, ResponsePage, SentenceRow
from fractal_core.errors import InputError
from fractal_core.mil.reviewer import view_scores
from fractal_core.mil.semantics import check_consistency

SortKey = Literal["uncertainty", "disagreement", "score", "id"]
LabelStatus = Literal["unlabelled", "partial", "complete", "any_gold"]
PREVIEW_CHARS = 200
MAX_PAGE_SIZE = 500


def _resolve_model_version(session: Session, dataset_id: int, model_version_id: int | None) -> int | None:
    if model_version_id is not None:
        owner = session.scalar(select(ModelVersion.dataset_id).where(ModelVersion.id == model_version_id))
        if owner != dataset_id:
            raise InputError(
                f"model version id {model_version_id} does not belong to dataset {dataset_id}", field="model"
            )
        return model_version_id
    return session.scalar(select(Dataset.active_model_version_id).where(Dataset.id == dataset_id))


def list_responses(
    engine: Engine,
    dataset_id: int,
    *,
    model_version_id: int | None = None,
    sort: SortKey = "uncertainty",
    descending: bool = True,
    label_status: LabelStatus | None = None,
    annotator: str | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    disagreement_only: bool = False,
    split: str | None = None,
    queued_for: str | None = None,
    page: int = 0,
    page_size: int = 50,
) -> ResponsePage:
    """One page of a dataset's responses as light rows, plus the number of matching responses.

    Scores come from ``model_version_id`` (default: the dataset's active version). Sorting by
    ``uncertainty`` / ``disagreement`` / ``score`` lists scored responses first (by that column, descending
    unless ``descending=False``, ties by id), then unscored ones by id; ``sort="id"`` is ingest order.
    Filters: ``label_status`` (``unlabelled``: no gold label, ``partial``: some, ``complete``: every
    sentence, ``any_gold``: at least one), ``annotator`` (has a current label by them), score bounds
    and ``disagreement_only`` (aggregate score on the other side of 0.5 from the bag label; these three
    leave out unscored responses), ``split``, ``queued_for`` (in that annotator's queue: assigned to them
    and not done). ``page`` is 0-based; ``page_size`` at most 500.
    """
    if page < 0 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page must be >= 0 and page_size in 1..{MAX_PAGE_SIZE}")
    if sort not in ("uncertainty", "disagreement", "score", "id"):
        raise ValueError(f"unknown sort {sort!r}")

    def work(session: Session) -> ResponsePage:
        mv = _resolve_model_version(session, dataset_id, model_version_id)
        # Conditions on the response row itself (the dataset is implied by a model version's scores).
        rconds = []
        if split is not None:
            rconds.append(Response.split == split)
        if label_status == "unlabelled":
            rconds.append(Response.n_gold == 0)
        elif label_status == "partial":
            rconds.extend([Response.n_gold > 0, Response.n_gold < Response.n_sentences])
        elif label_status == "complete":
            rconds.append(Response.n_gold >= Response.n_sentences)
        elif label_status == "any_gold":
            rconds.append(Response.n_gold > 0)
        elif label_status is not None:
            raise ValueError(f"unknown label_status {label_status!r}")
        annotated: Select[Any] | None = None
        if annotator is not None:
            annotated = select(CurrentLabel.response_id).where(CurrentLabel.annotator == annotator)
        if queued_for is not None:
            queued = select(Assignment.response_id).where(
                Assignment.annotator == queued_for, Assignment.done_at.is_(None)
            )
            annotated = queued if annotated is None else annotated.where(CurrentLabel.response_id.in_(queued))
        sconds = []
        if min_score is not None:
            sconds.append(ResponseScore.score >= min_score)
        if max_score is not None:
            sconds.append(ResponseScore.score <= max_score)
        if disagreement_only:
            sconds.append(ResponseScore.disagreement > 0.5)
        if mv is None and sconds:
            return ResponsePage([], 0, page, page_size, None)
        offset = page * page_size
        in_dataset = Response.dataset_id == dataset_id

        def count(q: Select[Any]) -> int:
            return int(session.scalar(select(func.count()).select_from(q.subquery())) or 0)

        # Step 1 finds the page's response ids along an index; step 2 loads those <= page_size rows. Deep
        # pages then skip index entries, not full rows joined to their scores.
        if mv is None or sort == "id":
            ids_q = select(Response.id).where(in_dataset, *rconds)
            if annotated is not None:
                ids_q = ids_q.where(Response.id.in_(annotated))
            if sconds:
                ids_q = ids_q.join(
                    ResponseScore,
                    and_(ResponseScore.response_id == Response.id, ResponseScore.model_version_id == mv),
                ).where(*sconds)
            total = count(ids_q)
            ids = list(session.scalars(ids_q.order_by(Response.id).offset(offset).limit(page_size)))
            return ResponsePage(_load_rows(session, ids, mv), total, page, page_size, mv)

        key = {
            "uncertainty": ResponseScore.uncertainty,
            "disagreement": ResponseScore.disagreement,
            "score": ResponseScore.score,
        }[sort]
        order = (
            (key.desc(), ResponseScore.response_id.desc()) if descending else (key, ResponseScore.response_id)
        )
        scored_q = select(ResponseScore.response_id).where(ResponseScore.model_version_id == mv, *sconds)
        if annotated is not None:
            # On the score table's key, so the few annotated responses are looked up instead of scanned for.
            scored_q = scored_q.where(ResponseScore.response_id.in_(annotated))
        if rconds:
            scored_q = scored_q.join(Response, Response.id == ResponseScore.response_id).where(*rconds)
        if annotated is not None:
            rconds.append(Response.id.in_(annotated))  # for the unscored responses below
        n_scored = count(scored_q)
        ids = []
        if offset < n_scored:
            ids = list(session.scalars(scored_q.order_by(*order).offset(offset).limit(page_size)))
        # Responses this version never scored (ingested after it was trained) follow, in id order. Every score
        # row of a version belongs to its dataset, so they number (matching responses) - (matching scored).
        n_unscored = 0
        if not sconds:
            n_unscored = count(select(Response.id).where(in_dataset, *rconds)) - n_scored
            room = page_size - len(ids)
            if room > 0 and n_unscored > 0:
                unscored = ~exists().where(
                    ResponseScore.model_version_id == mv, ResponseScore.response_id == Response.id
                )
                ids += list(
                    session.scalars(
                        select(Response.id)
                        .where(in_dataset, *rconds, unscored)
                        .order_by(Response.id)
                        .offset(max(0, offset - n_scored))
                        .limit(room)
                    )
                )
        return ResponsePage(_load_rows(session, ids, mv), n_scored + n_unscored, page, page_size, mv)

    return run_read(engine, work)


def _load_rows(session: Session, ids: list[int], mv: int | None) -> list[ResponseListRow]:
    """The list rows of ``ids``, in that order, with the scores of version ``mv`` (None: unscored)."""
    if not ids:
        return []
    q = select(
        Response.id,
        Response.external_id,
        func.substr(Response.text, 1, PREVIEW_CHARS),
        Response.response_label,
        Response.aggregation,
        Response.split,
        Response.n_sentences,
        Response.n_gold,
        ResponseScore.score,
        ResponseScore.uncertainty,
        ResponseScore.disagreement,
    ).outerjoin(
        ResponseScore,
        and_(ResponseScore.response_id == Response.id, ResponseScore.model_version_id == (mv or -1)),
    )
    by_id = {row[0]: row for row in session.execute(q.where(Response.id.in_(ids)))}
    return [ResponseListRow(*by_id[i]) for i in ids]


def get_response(engine: Engine, response_id: int, model_version_id: int | None = None) -> ResponseDetail:
    """A response with its context, full text, sentences (offsets, current labels with source and
    annotator, scores of the model version; default the active one) and the MIL consistency warning."""

    def work(session: Session) -> ResponseDetail:
        r = session.get(Response, response_id)
        if r is None:
            raise InputError(f"no response with id {response_id}", field="response_id")
        mv = _resolve_model_version(session, r.dataset_id, model_version_id)
        q = (
            select(
                Sentence.id,
                Sentence.position,
                Sentence.start,
                Sentence.end,
                Sentence.text,
                CurrentLabel.label,
                CurrentLabel.source,
                CurrentLabel.annotator,
                CurrentLabel.updated_at,
                SentenceScore.score,
                SentenceScore.uncertainty,
                CurrentLabel.event_id,
            )
            .outerjoin(CurrentLabel, CurrentLabel.sentence_id == Sentence.id)
            .outerjoin(
                SentenceScore,
                and_(SentenceScore.sentence_id == Sentence.id, SentenceScore.model_version_id == (mv or -1)),
            )
            .where(Sentence.response_id == response_id, live_sentence())
            .order_by(Sentence.position)
        )
        rows = session.execute(q).all()
        summary = None
        calibration = None
        if mv is not None:
            summary = session.get(ResponseScore, (mv, response_id))
            version = session.get(ModelVersion, mv)
            calibration = (version.metrics or {}).get("step_calibration") if version is not None else None
        view = view_scores([row[9] for row in rows], calibration)
        sentences = [SentenceRow(*row, view_score=v) for row, v in zip(rows, view, strict=True)]
        gold = [s.label if s.label_source in GOLD_SOURCES else None for s in sentences]
        # A sentence a person made by merging or splitting has no score in any version until the next scoring.
        stale = (
            mv is not None
            and any(s.score is None for s in sentences)
            and session.scalar(select(SegmentEdit.id).where(SegmentEdit.response_id == response_id).limit(1))
            is not None
        )
        return ResponseDetail(
            id=r.id,
            dataset_id=r.dataset_id,
            external_id=r.external_id,
            context=r.context,
            text=r.text,
            response_label=r.response_label,
            aggregation=r.aggregation,
            label_kind=r.label_kind,
            split=r.split,
            task=r.task,
            meta=dict(r.meta or {}),
            sentences=sentences,
            model_version_id=mv,
            score=summary.score if summary else None,
            uncertainty=summary.uncertainty if summary else None,
            disagreement=summary.disagreement if summary else None,
            consistency_warning=check_consistency(r.aggregation, r.response_label, gold),
            scores_stale=stale,
        )

    return run_read(engine, work)


def response_id_by_external(engine: Engine, dataset_id: int, external_id: str) -> int | None:
    """The database id of the response the input file called ``external_id``."""
    return run_read(
        engine,
        lambda s: s.scalar(
            select(Response.id).where(Response.dataset_id == dataset_id, Response.external_id == external_id)
        ),
    )
