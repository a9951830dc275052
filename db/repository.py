"""Every business query of FRACTAL Studio: the app, the worker and the CLI call these, never SQL.

All functions take an :class:`~sqlalchemy.Engine` first and return plain rows from :mod:`db.rows`. Writes
run through :func:`db.engine.run_write` (one transaction each, retried on lock contention), so a failed call
leaves nothing behind.

Label sources: ``gold`` (an annotator's correction), ``reviewed`` (a reviewer's confirmation) and
``imported`` (sentence labels that came with an ingested file). Only ``gold`` and ``reviewed`` count as gold
for training and for the gold budget; a file's labels are stored as ``gold`` only when ingested with
``labels_as="gold"`` (``fractal ingest --labels-as gold``), i.e. when whoever ingests says they are gold.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np
from sqlalchemy import (
    Engine,
    Select,
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from db.consistency import check_consistency
from db.engine import run_read, run_write
from db.jobs import (  # noqa: F401  (re-exported: the queue is part of the repository API)
    append_log,
    claim_next_job,
    create_job,
    finish_job,
    get_job,
    heartbeat,
    is_cancel_requested,
    list_jobs,
    mark_stale_jobs_failed,
    request_cancel,
    update_progress,
)
from db.models import (
    GOLD_SOURCES,
    LABEL_SOURCES,
    CurrentLabel,
    Dataset,
    LabelEvent,
    ModelVersion,
    Response,
    ResponseScore,
    Sentence,
    SentenceScore,
    utcnow,
)
from db.rows import (  # noqa: F401  (JobRow, IngestSummary: re-exported for callers' annotations)
    DatasetRow,
    GoldBudget,
    IngestSummary,
    JobRow,
    LabelChange,
    ModelVersionRow,
    ResponseDetail,
    ResponseListRow,
    ResponsePage,
    SaveResult,
    SentenceRow,
    UndoResult,
)
from fractal_core.errors import InputError
from fractal_core.records import ResponseRecord, Span

SortKey = Literal["uncertainty", "disagreement", "score", "id"]
LabelStatus = Literal["unlabelled", "partial", "complete", "any_gold"]
PREVIEW_CHARS = 200
MAX_PAGE_SIZE = 500
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# ---------------------------------------------------------------- datasets


def validate_dataset_name(name: str) -> str:
    """Return ``name`` if it is 1-64 characters of letters, digits, ``.``, ``_``, ``-`` (not first)."""
    if not isinstance(name, str) or not _DATASET_NAME.match(name):
        raise InputError(
            f"invalid dataset name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="dataset",
        )
    return name


def _dataset_rows(session: Session, where: object | None = None) -> list[DatasetRow]:
    stats = (
        select(
            Response.dataset_id,
            func.count().label("n_responses"),
            func.coalesce(func.sum(Response.n_sentences), 0).label("n_sentences"),
            func.coalesce(func.sum(case((Response.n_gold > 0, 1), else_=0)), 0).label("n_gold_responses"),
        )
        .group_by(Response.dataset_id)
        .subquery()
    )
    q = select(Dataset, stats.c.n_responses, stats.c.n_sentences, stats.c.n_gold_responses).outerjoin(
        stats, stats.c.dataset_id == Dataset.id
    )
    if where is not None:
        q = q.where(where)  # type: ignore[arg-type]
    q = q.order_by(Dataset.name)
    found = session.execute(q).all()
    ids = [row[0].id for row in found]
    balance: dict[int, dict[str, int]] = defaultdict(dict)
    if ids:
        for dataset_id, label, count in session.execute(
            select(Response.dataset_id, Response.response_label, func.count())
            .where(Response.dataset_id.in_(ids))
            .group_by(Response.dataset_id, Response.response_label)
            .order_by(Response.dataset_id, Response.response_label)
        ):
            balance[dataset_id][_label_text(label)] = count
    return [
        DatasetRow(
            id=d.id,
            name=d.name,
            description=d.description,
            label_kind=d.label_kind,
            max_label=d.max_label,
            gold_target=d.gold_target,
            n_responses=n_resp or 0,
            n_sentences=int(n_sent or 0),
            n_gold_responses=int(n_gold or 0),
            label_balance=dict(balance[d.id]),
            active_model_version_id=d.active_model_version_id,
            created_at=d.created_at,
        )
        for d, n_resp, n_sent, n_gold in found
    ]


def _label_text(label: float) -> str:
    return str(int(label)) if float(label).is_integer() else f"{label:g}"


def create_dataset(
    engine: Engine,
    name: str,
    *,
    label_kind: Literal["binary", "ordinal", "proportion"] = "binary",
    description: str = "",
    gold_target: float = 0.1,
) -> DatasetRow:
    """Create an empty dataset; InputError if the name is invalid or taken."""
    validate_dataset_name(name)
    if not 0.0 < gold_target <= 1.0:
        raise InputError(f"gold target must be in (0, 1], got {gold_target}", field="gold_target")

    def work(session: Session) -> int:
        if session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
            raise InputError(f"dataset {name!r} already exists", field="dataset")
        dataset = Dataset(name=name, label_kind=label_kind, description=description, gold_target=gold_target)
        session.add(dataset)
        session.flush()
        return dataset.id

    dataset_id = run_write(engine, work)
    row = get_dataset(engine, dataset_id)
    assert row is not None
    return row


def get_dataset(engine: Engine, dataset: int | str) -> DatasetRow | None:
    """A dataset by id or by name, with counts; None if there is none."""
    where = Dataset.id == dataset if isinstance(dataset, int) else Dataset.name == dataset
    rows = run_read(engine, lambda s: _dataset_rows(s, where))
    return rows[0] if rows else None


def require_dataset(engine: Engine, dataset: int | str) -> DatasetRow:
    """Like :func:`get_dataset` but an InputError naming the known datasets when it does not exist."""
    row = get_dataset(engine, dataset)
    if row is None:
        names = ", ".join(d.name for d in list_datasets(engine)) or "none yet"
        raise InputError(f"no dataset {dataset!r} (datasets: {names})", field="dataset")
    return row


def list_datasets(engine: Engine) -> list[DatasetRow]:
    """All datasets by name, with response/sentence/gold counts and the response label balance."""
    return run_read(engine, _dataset_rows)


def set_gold_target(engine: Engine, dataset_id: int, fraction: float) -> None:
    """Set the dataset's gold budget target (fraction of responses, in (0, 1])."""
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"gold target must be in (0, 1], got {fraction}", field="gold_target")
    run_write(
        engine,
        lambda s: s.execute(update(Dataset).where(Dataset.id == dataset_id).values(gold_target=fraction)),
    )


# ---------------------------------------------------------------- responses


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
    leave out unscored responses), ``split``. ``page`` is 0-based; ``page_size`` at most 500.
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
        annotated = None
        if annotator is not None:
            annotated = select(CurrentLabel.response_id).where(CurrentLabel.annotator == annotator)
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
            )
            .outerjoin(CurrentLabel, CurrentLabel.sentence_id == Sentence.id)
            .outerjoin(
                SentenceScore,
                and_(SentenceScore.sentence_id == Sentence.id, SentenceScore.model_version_id == (mv or -1)),
            )
            .where(Sentence.response_id == response_id)
            .order_by(Sentence.position)
        )
        sentences = [SentenceRow(*row) for row in session.execute(q)]
        summary = None
        if mv is not None:
            summary = session.get(ResponseScore, (mv, response_id))
        gold = [s.label if s.label_source in GOLD_SOURCES else None for s in sentences]
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


# ---------------------------------------------------------------- labels


def _check_label(label: int | None, label_kind: str, max_label: float) -> None:
    if label is None:
        return
    if isinstance(label, bool) or not isinstance(label, int | np.integer):
        raise InputError(f"sentence label must be an integer or None, got {label!r}", field="label")
    top = int(max_label) if label_kind == "ordinal" else 1
    if not 0 <= label <= top:
        raise InputError(
            f"sentence label {label} is outside 0..{top} for a {label_kind} dataset", field="label"
        )


def _apply_label(
    session: Session,
    *,
    sentence_id: int,
    response_id: int,
    label: int | None,
    annotator: str,
    source: str,
    action_id: str,
    undoes: LabelEvent | None = None,
    restore_annotator: str | None = None,
) -> LabelChange | None:
    """Write one label change: history event, current view and the response's gold counter."""
    current = session.get(CurrentLabel, sentence_id)
    old_label = current.label if current else None
    old_source = current.source if current else None
    if undoes is None and old_label == label and (label is None or old_source == source):
        return None
    now = utcnow()
    event = LabelEvent(
        action_id=action_id,
        sentence_id=sentence_id,
        response_id=response_id,
        annotator=annotator,
        source=source,
        old_label=old_label,
        old_source=old_source,
        old_annotator=current.annotator if current else None,
        new_label=None if label is None else int(label),
        created_at=now,
        undoes_id=undoes.id if undoes else None,
    )
    session.add(event)
    session.flush()
    if undoes is not None:
        undoes.undone_by_id = event.id
    if label is None:
        if current is not None:
            session.delete(current)
    elif current is None:
        session.add(
            CurrentLabel(
                sentence_id=sentence_id,
                response_id=response_id,
                label=int(label),
                source=source,
                annotator=restore_annotator or annotator,
                event_id=event.id,
                updated_at=now,
            )
        )
    else:
        current.label = int(label)
        current.source = source
        current.annotator = restore_annotator or annotator
        current.event_id = event.id
        current.updated_at = now
    delta = int(label is not None and source in GOLD_SOURCES) - int(old_source in GOLD_SOURCES)
    if delta:
        session.execute(
            update(Response).where(Response.id == response_id).values(n_gold=Response.n_gold + delta)
        )
    return LabelChange(
        event_id=event.id,
        sentence_id=sentence_id,
        response_id=response_id,
        old_label=old_label,
        new_label=event.new_label,
        annotator=annotator,
        source=source,
        at=now,
    )


def _response_warning(session: Session, response_id: int) -> str | None:
    r = session.get(Response, response_id)
    assert r is not None
    labels = session.execute(
        select(CurrentLabel.label, CurrentLabel.source)
        .select_from(Sentence)
        .outerjoin(CurrentLabel, CurrentLabel.sentence_id == Sentence.id)
        .where(Sentence.response_id == response_id)
        .order_by(Sentence.position)
    ).all()
    gold = [label if source in GOLD_SOURCES else None for label, source in labels]
    return check_consistency(r.aggregation, r.response_label, gold)


def _check_writer(annotator: str, source: str) -> None:
    if not isinstance(annotator, str) or not annotator.strip():
        raise InputError("annotator must be a non-empty name", field="annotator")
    if source not in LABEL_SOURCES:
        raise InputError(
            f"label source must be one of {', '.join(LABEL_SOURCES)}, got {source!r}", field="source"
        )


def record_label(
    engine: Engine, sentence_id: int, label: int | None, annotator: str, *, source: str = "gold"
) -> SaveResult:
    """Set (or with ``label=None`` clear) one sentence's label, appending to its history (old, new, who,
    when) in one transaction. Returns the change (empty when the label was already that) and the response's
    MIL consistency warning after the save."""
    _check_writer(annotator, source)

    def work(session: Session) -> SaveResult:
        found = session.execute(
            select(Sentence.response_id, Dataset.label_kind, Dataset.max_label)
            .join(Response, Response.id == Sentence.response_id)
            .join(Dataset, Dataset.id == Response.dataset_id)
            .where(Sentence.id == sentence_id)
        ).first()
        if found is None:
            raise InputError(f"no sentence with id {sentence_id}", field="sentence_id")
        response_id, label_kind, max_label = found
        _check_label(label, label_kind, max_label)
        change = _apply_label(
            session,
            sentence_id=sentence_id,
            response_id=response_id,
            label=label,
            annotator=annotator,
            source=source,
            action_id=str(uuid.uuid4()),
        )
        return SaveResult([change] if change else [], _response_warning(session, response_id))

    return run_write(engine, work)


def record_labels(
    engine: Engine,
    response_id: int,
    labels: Mapping[int, int | None],
    annotator: str,
    *,
    source: str = "gold",
) -> SaveResult:
    """Set several sentence labels of one response (``{sentence_id: label or None}``) as one action: one
    transaction, and one :func:`undo_last` reverts them together."""
    _check_writer(annotator, source)

    def work(session: Session) -> SaveResult:
        found = session.execute(
            select(Dataset.label_kind, Dataset.max_label)
            .join(Response, Response.dataset_id == Dataset.id)
            .where(Response.id == response_id)
        ).first()
        if found is None:
            raise InputError(f"no response with id {response_id}", field="response_id")
        own = set(session.scalars(select(Sentence.id).where(Sentence.response_id == response_id)))
        foreign = sorted(set(labels) - own)
        if foreign:
            raise InputError(
                f"sentences {foreign[:5]} do not belong to response {response_id}", field="sentence_id"
            )
        for label in labels.values():
            _check_label(label, *found)
        action_id = str(uuid.uuid4())
        changes = []
        for sentence_id in sorted(labels):
            change = _apply_label(
                session,
                sentence_id=sentence_id,
                response_id=response_id,
                label=labels[sentence_id],
                annotator=annotator,
                source=source,
                action_id=action_id,
            )
            if change:
                changes.append(change)
        return SaveResult(changes, _response_warning(session, response_id))

    return run_write(engine, work)


def undo_last(engine: Engine, annotator: str, response_id: int | None = None) -> UndoResult | None:
    """Revert ``annotator``'s most recent not-yet-undone action (optionally within one response).

    The previous label, source and annotator come back; the undo itself is appended to the history, so
    repeated calls walk further back. A sentence someone else has relabelled since is left alone and listed
    in ``skipped``. Returns None when there is nothing to undo.
    """

    def work(session: Session) -> UndoResult | None:
        latest = select(LabelEvent.action_id).where(
            LabelEvent.annotator == annotator,
            LabelEvent.undone_by_id.is_(None),
            LabelEvent.undoes_id.is_(None),
        )
        if response_id is not None:
            latest = latest.where(LabelEvent.response_id == response_id)
        action_id = session.scalar(latest.order_by(LabelEvent.id.desc()).limit(1))
        if action_id is None:
            return None
        events = session.scalars(
            select(LabelEvent)
            .where(LabelEvent.action_id == action_id, LabelEvent.undone_by_id.is_(None))
            .order_by(LabelEvent.id.desc())
        ).all()
        undo_action = str(uuid.uuid4())
        reverted: list[LabelChange] = []
        skipped: list[int] = []
        for event in events:
            current = session.get(CurrentLabel, event.sentence_id)
            # Revert only what this event left in place: same label, source and author (someone else's
            # later edit wins, even if it set the same value).
            still_ours = (
                event.new_label is None
                if current is None
                else (current.label, current.source, current.annotator)
                == (event.new_label, event.source, event.annotator)
            )
            if not still_ours:
                # Mark it handled (self-reference) so the next undo moves on to an earlier action.
                event.undone_by_id = event.id
                skipped.append(event.sentence_id)
                continue
            change = _apply_label(
                session,
                sentence_id=event.sentence_id,
                response_id=event.response_id,
                label=event.old_label,
                annotator=annotator,
                source=event.old_source or event.source,
                action_id=undo_action,
                undoes=event,
                restore_annotator=event.old_annotator,
            )
            assert change is not None
            reverted.append(change)
        warning = _response_warning(session, events[0].response_id) if events else None
        return UndoResult(reverted, sorted(skipped), warning)

    return run_write(engine, work)


def label_history(
    engine: Engine, *, sentence_id: int | None = None, response_id: int | None = None
) -> list[LabelChange]:
    """The label events of a sentence or of a whole response, oldest first."""
    if (sentence_id is None) == (response_id is None):
        raise ValueError("give exactly one of sentence_id or response_id")
    where = (
        LabelEvent.sentence_id == sentence_id
        if sentence_id is not None
        else LabelEvent.response_id == response_id
    )

    def work(session: Session) -> list[LabelChange]:
        rows = session.execute(
            select(
                LabelEvent.id,
                LabelEvent.sentence_id,
                LabelEvent.response_id,
                LabelEvent.old_label,
                LabelEvent.new_label,
                LabelEvent.annotator,
                LabelEvent.source,
                LabelEvent.created_at,
            )
            .where(where)
            .order_by(LabelEvent.id)
        ).all()
        return [LabelChange(*r) for r in rows]

    return run_read(engine, work)


def gold_budget(engine: Engine, dataset_id: int) -> GoldBudget:
    """Responses with at least one current gold/reviewed sentence label, all responses, and the target
    fraction (``gold_responses / total_responses`` is the meter; ``target_fraction`` the goal)."""

    def work(session: Session) -> GoldBudget:
        gold, total = session.execute(
            select(func.coalesce(func.sum(case((Response.n_gold > 0, 1), else_=0)), 0), func.count()).where(
                Response.dataset_id == dataset_id
            )
        ).one()
        target = session.scalar(select(Dataset.gold_target).where(Dataset.id == dataset_id))
        if target is None:
            raise InputError(f"no dataset with id {dataset_id}", field="dataset")
        return GoldBudget(int(gold), int(total), float(target))

    return run_read(engine, work)


# ---------------------------------------------------------------- model versions


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


def default_uncertainty(scores: np.ndarray) -> np.ndarray:
    """Binary uncertainty 1 - |2p - 1|: 1 at p = 0.5, 0 at p in {0, 1}. Shape (n,) -> (n,)."""
    return 1.0 - np.abs(2.0 * scores - 1.0)


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
    (default uncertainty: :func:`default_uncertainty`). Rows go in chunks, each its own short transaction, so
    annotators saving corrections meanwhile wait at most one chunk; the version's scores are only used once
    :func:`finish_model_version` marks it ready.
    """
    ids = np.asarray(sentence_ids, dtype=np.int64)
    values = np.asarray(scores, dtype=np.float64)
    unc = (
        default_uncertainty(values) if uncertainties is None else np.asarray(uncertainties, dtype=np.float64)
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
    """Close a training run. ``ready`` also summarises its scores per response (aggregate score by the
    response's aggregation, max sentence uncertainty, disagreement with the bag label) for the list pages."""

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


def _summarise_scores(session: Session, mv: ModelVersion) -> None:
    foreign = session.scalar(
        select(func.count())
        .select_from(SentenceScore)
        .join(Sentence, Sentence.id == SentenceScore.sentence_id)
        .join(Response, Response.id == Sentence.response_id)
        .where(SentenceScore.model_version_id == mv.id, Response.dataset_id != mv.dataset_id)
    )
    if foreign:
        raise ValueError(f"{foreign} scores of model version {mv.id} belong to sentences of another dataset")
    # Ordinal labels are compared with scores in [0, 1] after dividing by the top level; binary and
    # proportion labels already live in [0, 1].
    top = session.scalar(select(Dataset.max_label).where(Dataset.id == mv.dataset_id)) or 1.0
    label = Response.response_label / max(float(top), 1.0)
    agg = case(
        (Response.aggregation == "max", func.max(SentenceScore.score)),
        (Response.aggregation == "min", func.min(SentenceScore.score)),
        else_=func.avg(SentenceScore.score),
    )
    summary = (
        select(
            literal(mv.id),
            Response.id,
            agg,
            func.max(SentenceScore.uncertainty),
            func.abs(agg - label),
        )
        .select_from(SentenceScore)
        .join(Sentence, Sentence.id == SentenceScore.sentence_id)
        .join(Response, Response.id == Sentence.response_id)
        .where(SentenceScore.model_version_id == mv.id)
        .group_by(Response.id, Response.aggregation, Response.response_label)
    )
    session.execute(delete(ResponseScore).where(ResponseScore.model_version_id == mv.id))
    session.execute(
        insert(ResponseScore).from_select(
            ["model_version_id", "response_id", "score", "uncertainty", "disagreement"], summary
        )
    )


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


# ---------------------------------------------------------------- training records


def load_records(
    engine: Engine,
    dataset_id: int,
    *,
    with_gold: bool = True,
    include_imported: bool = False,
    split: str | None = None,
) -> list[ResponseRecord]:
    """A dataset's responses as :class:`ResponseRecord` s in id order, ready for ``fractal_core``.

    ``sentence_labels`` carry the current gold labels (sources ``gold`` and ``reviewed``; plus ``imported``
    when ``include_imported``, e.g. to evaluate against a file's own labels), ``None`` for other sentences,
    and are ``None`` as a whole when a response has none (or ``with_gold=False``). Every record's ``meta``
    gains ``db_response_id`` (int) and ``db_sentence_ids`` (list[int], one per span): the ids to pass to
    :func:`store_scores`.
    """
    sources = (*GOLD_SOURCES, "imported") if include_imported else GOLD_SOURCES

    def work(session: Session) -> list[ResponseRecord]:
        conds = [Response.dataset_id == dataset_id]
        if split is not None:
            conds.append(Response.split == split)
        responses = session.execute(
            select(
                Response.id,
                Response.external_id,
                Response.context,
                Response.text,
                Response.response_label,
                Response.aggregation,
                Response.task,
                Response.meta,
            )
            .where(*conds)
            .order_by(Response.id)
        ).all()
        sentence_rows = session.execute(
            select(
                Sentence.response_id,
                Sentence.id,
                Sentence.start,
                Sentence.end,
                Sentence.text,
                CurrentLabel.label,
                CurrentLabel.source,
            )
            .join(Response, Response.id == Sentence.response_id)
            .outerjoin(CurrentLabel, CurrentLabel.sentence_id == Sentence.id)
            .where(*conds)
            .order_by(Sentence.response_id, Sentence.position)
        ).all()
        by_response: dict[int, list[tuple[int, int, int, str, int | None, str | None]]] = defaultdict(list)
        for response_id, *rest in sentence_rows:
            by_response[response_id].append(tuple(rest))  # type: ignore[arg-type]
        records = []
        for rid, external_id, context, text, label, aggregation, task, meta in responses:
            sents = by_response.get(rid, [])
            labels = [lab if (with_gold and src in sources) else None for _, _, _, _, lab, src in sents]
            records.append(
                ResponseRecord(
                    id=external_id,
                    context=context,
                    text=text,
                    spans=[Span(start, end, stext) for _, start, end, stext, _, _ in sents],
                    response_label=label,
                    aggregation=aggregation,
                    sentence_labels=labels if any(v is not None for v in labels) else None,
                    task=task,
                    meta={**(meta or {}), "db_response_id": rid, "db_sentence_ids": [s[0] for s in sents]},
                )
            )
        return records

    return run_read(engine, work)
