"""Sentence labels: record, undo and history (every change an event), and the gold budget.

Label sources: ``gold`` (an annotator's correction), ``reviewed`` (a reviewer's confirmation) and
``imported`` (sentence labels that came with an ingested file). Only ``gold`` and ``reviewed`` count as gold
for training and for the gold budget; a file's labels are stored as ``gold`` only when ingested with
``labels_as="gold"`` (``fractal ingest --labels-as gold``), i.e. when whoever ingests says they are gold.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import numpy as np
from sqlalchemy import Engine, case, exists, func, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from db.engine import run_read, run_write
from db.models import (
    GOLD_SOURCES,
    LABEL_SOURCES,
    CurrentLabel,
    Dataset,
    LabelEvent,
    Response,
    Sentence,
    utcnow,
)
from db.rows import GoldBudget, LabelChange, LabelConflict, SaveResult, UndoResult
from fractal_core.errors import InputError
from fractal_core.mil.semantics import check_consistency


class StaleLabelError(InputError):
    """A save from a stale view: someone else changed these sentences' labels since; nothing was stored."""

    def __init__(self, conflicts: list[LabelConflict]) -> None:
        who = sorted({c.annotator or "someone" for c in conflicts})
        super().__init__(
            f"{', '.join(who)} changed {len(conflicts)} of these labels after you opened the response",
            field="label",
        )
        self.conflicts = conflicts


def _check_versions(
    session: Session, labels: Mapping[int, int | None], expected: Mapping[int, int | None]
) -> None:
    """Refuse the save when a label it changes is no longer the version the saving view showed.

    ``expected`` maps sentence id -> the label version (``SentenceRow.label_version``, None when there was no
    label) the view was built from. A sentence someone has meanwhile set to the very label being saved is no
    conflict: nothing would be lost."""
    ids = [sid for sid in labels if sid in expected]
    if not ids:
        return
    now = {
        row.sentence_id: row
        for row in session.scalars(select(CurrentLabel).where(CurrentLabel.sentence_id.in_(ids)))
    }
    positions: dict[int, int] = {
        sid: pos
        for sid, pos in session.execute(select(Sentence.id, Sentence.position).where(Sentence.id.in_(ids)))
    }
    conflicts = []
    for sid in sorted(ids):
        cur = now.get(sid)
        version = cur.event_id if cur is not None else None
        if version == expected[sid] or (cur.label if cur is not None else None) == labels[sid]:
            continue
        conflicts.append(
            LabelConflict(
                sentence_id=sid,
                position=positions[sid],
                label=cur.label if cur is not None else None,
                annotator=cur.annotator if cur is not None else None,
                source=cur.source if cur is not None else None,
                version=version,
            )
        )
    if conflicts:
        raise StaleLabelError(conflicts)


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


def _lock_response(session: Session, response_id: int) -> None:
    """Serialise label writes per response: on PostgreSQL (READ COMMITTED) two saves of one sentence would
    otherwise both read the same old label and the history's chain would break. SQLite already serialises
    every write transaction (``BEGIN IMMEDIATE``), and SQLAlchemy leaves ``FOR UPDATE`` out there."""
    session.execute(select(Response.id).where(Response.id == response_id).with_for_update())


def _not_undone() -> ColumnElement[bool]:
    """Events no later event undoes (the history is append-only: an undo is an event pointing back)."""
    undo = aliased(LabelEvent)
    return ~exists().where(undo.undoes_id == LabelEvent.id)


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
        _lock_response(session, response_id)
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
    expected: Mapping[int, int | None] | None = None,
) -> SaveResult:
    """Set several sentence labels of one response (``{sentence_id: label or None}``) as one action: one
    transaction, and one :func:`undo_last` reverts them together.

    ``expected`` (``{sentence_id: label version the caller saw}``) turns on the stale-view check: when someone
    else changed one of these labels since, :class:`StaleLabelError` lists their labels and nothing is stored.
    """
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
        _lock_response(session, response_id)
        if expected is not None:
            _check_versions(session, labels, expected)
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
        latest = select(LabelEvent.action_id, LabelEvent.response_id).where(
            LabelEvent.annotator == annotator, LabelEvent.undoes_id.is_(None), _not_undone()
        )
        if response_id is not None:
            latest = latest.where(LabelEvent.response_id == response_id)
        found = session.execute(latest.order_by(LabelEvent.id.desc()).limit(1)).first()
        if found is None:
            return None
        action_id, action_response = found
        _lock_response(session, action_response)
        events = session.scalars(
            select(LabelEvent)
            .where(LabelEvent.action_id == action_id, _not_undone())
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
                # Record that the undo left it alone (an event that changes nothing), so the next undo moves
                # on to an earlier action.
                now = utcnow()
                session.add(
                    LabelEvent(
                        action_id=undo_action,
                        sentence_id=event.sentence_id,
                        response_id=event.response_id,
                        annotator=annotator,
                        source=current.source if current else event.source,
                        old_label=current.label if current else None,
                        old_source=current.source if current else None,
                        old_annotator=current.annotator if current else None,
                        new_label=current.label if current else None,
                        created_at=now,
                        undoes_id=event.id,
                    )
                )
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
