"""Sentence labels: the one write path of every label (record, undo, history) and the gold budget.

Every change is an event in the append-only ``label_events`` and, in the same transaction, a row of a current
view. Two kinds of view share that path and its one undo rule:

- the **shared view** (``current_labels``, ``layer`` NULL): what training, exports and the list pages read;
- an overlap annotator's **own labels** (``annotations``, ``layer`` = that annotator, ``own=True``), kept
  apart until a reviewer adjudicates (:mod:`db.team`).

Undo (:func:`undo_last`) reverts the annotator's latest not yet undone action (one ``record_labels`` call) in
that view and leaves alone every sentence someone changed since, recording an event that changes nothing so
the next undo moves on.

Label sources (:mod:`db.sources`): ``human`` (a person in the tool, the default), ``adjudicated`` (a reviewer's
decision on an overlap response), ``model`` (the model's label accepted by a person: ``record_labels(...,
source="model")``, never gold), ``imported`` / ``imported_gold`` (came with a file). ``human``,
``adjudicated`` and ``imported_gold`` count as gold for training and for the gold budget.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, case, exists, func, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from db.engine import run_read, run_write
from db.models import (
    GOLD_SOURCES,
    LABEL_SOURCES,
    Annotation,
    CurrentLabel,
    Dataset,
    LabelEvent,
    Response,
    Sentence,
    utcnow,
)
from db.rows import GoldBudget, LabelChange, LabelConflict, SaveResult, UndoResult
from db.sources import HUMAN
from fractal_core.data.records import sentence_label_problem
from fractal_core.errors import InputError
from fractal_core.mil.semantics import check_consistency

OWN_LABEL = "annotation"
"""What an own-label event is called in :func:`label_history` (``LabelChange.source``)."""


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


@dataclass(frozen=True, slots=True)
class _State:
    """A sentence's label in one view: the label, its source and whom it is attributed to."""

    label: int
    source: str
    annotator: str


def _state(session: Session, sentence_id: int, layer: str | None) -> _State | None:
    if layer is None:
        cur = session.get(CurrentLabel, sentence_id)
        return None if cur is None else _State(cur.label, cur.source, cur.annotator)
    own = session.get(Annotation, (sentence_id, layer))
    return None if own is None else _State(own.label, HUMAN, layer)


def _layer_is(layer: str | None) -> ColumnElement[bool]:
    return LabelEvent.layer.is_(None) if layer is None else LabelEvent.layer == layer


def _check_label(label: int | None, label_kind: str, max_label: float) -> None:
    problem = sentence_label_problem(label, label_kind, max_label)
    if problem is not None:
        raise InputError(problem, field="label")


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
    dataset_id: int,
    layer: str | None,
    label: int | None,
    annotator: str,
    source: str,
    action_id: str,
    undoes: LabelEvent | None = None,
    restore_annotator: str | None = None,
) -> LabelChange | None:
    """Write one label change: the history event, then the view it belongs to (and the shared view's gold
    counter). ``restore_annotator``: an undo gives the label back to whoever had set it."""
    before = _state(session, sentence_id, layer)
    old_label = before.label if before else None
    old_source = before.source if before else None
    if undoes is None and old_label == label and (label is None or old_source == source):
        return None
    now = utcnow()
    owner = None if label is None else restore_annotator or annotator
    event = LabelEvent(
        action_id=action_id,
        sentence_id=sentence_id,
        response_id=response_id,
        layer=layer,
        annotator=annotator,
        source=source,
        old_label=old_label,
        old_source=old_source,
        old_annotator=before.annotator if before else None,
        new_label=None if label is None else int(label),
        new_annotator=owner,
        created_at=now,
        undoes_id=undoes.id if undoes else None,
    )
    session.add(event)
    session.flush()
    if layer is not None:
        _set_own(session, sentence_id, response_id, dataset_id, layer, label, now)
    else:
        _set_shared(session, sentence_id, response_id, label, source, owner, event.id, now)
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
        source=source if layer is None else OWN_LABEL,
        at=now,
    )


def _set_shared(
    session: Session,
    sentence_id: int,
    response_id: int,
    label: int | None,
    source: str,
    owner: str | None,
    event_id: int,
    now: datetime,
) -> None:
    current = session.get(CurrentLabel, sentence_id)
    if label is None:
        if current is not None:
            session.delete(current)
        return
    assert owner is not None
    if current is None:
        current = CurrentLabel(sentence_id=sentence_id, response_id=response_id)
        session.add(current)
    current.label = int(label)
    current.source = source
    current.annotator = owner
    current.event_id = event_id
    current.updated_at = now
    session.flush()


def _set_own(
    session: Session,
    sentence_id: int,
    response_id: int,
    dataset_id: int,
    layer: str,
    label: int | None,
    now: datetime,
) -> None:
    own = session.get(Annotation, (sentence_id, layer))
    if label is None:
        if own is not None:
            session.delete(own)
        return
    if own is None:
        own = Annotation(
            sentence_id=sentence_id, annotator=layer, response_id=response_id, dataset_id=dataset_id
        )
        session.add(own)
    own.label = int(label)
    own.updated_at = now
    session.flush()


def _response_warning(session: Session, response_id: int, layer: str | None) -> str | None:
    """The MIL consistency warning of the shared view's gold labels (own labels: none, the page checks them)."""
    if layer is not None:
        return None
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


def _check_writer(annotator: str, source: str, own: bool) -> None:
    if not isinstance(annotator, str) or not annotator.strip():
        raise InputError("annotator must be a non-empty name", field="annotator")
    if source not in LABEL_SOURCES:
        raise InputError(
            f"label source must be one of {', '.join(LABEL_SOURCES)}, got {source!r}", field="source"
        )
    if own and source != HUMAN:
        raise InputError("an annotator's own labels are set by that person (source human)", field="source")


def record_label(
    engine: Engine, sentence_id: int, label: int | None, annotator: str, *, source: str = HUMAN
) -> SaveResult:
    """Set (or with ``label=None`` clear) one sentence's label in the shared view, appending to its history
    (old, new, who, when) in one transaction. Returns the change (empty when the label was already that) and
    the response's MIL consistency warning after the save."""
    _check_writer(annotator, source, False)
    response_id = run_read(
        engine, lambda s: s.scalar(select(Sentence.response_id).where(Sentence.id == sentence_id))
    )
    if response_id is None:
        raise InputError(f"no sentence with id {sentence_id}", field="sentence_id")
    return record_labels(engine, response_id, {sentence_id: label}, annotator, source=source)


def record_labels(
    engine: Engine,
    response_id: int,
    labels: Mapping[int, int | None],
    annotator: str,
    *,
    source: str = HUMAN,
    expected: Mapping[int, int | None] | None = None,
    own: bool = False,
) -> SaveResult:
    """Set several sentence labels of one response (``{sentence_id: label or None}``) as one action: one
    transaction, and one :func:`undo_last` reverts them together.

    ``source`` says who set them (:mod:`db.sources`): the N key's "accept the model's labels" passes
    ``"model"``, adjudication ``"adjudicated"``. ``own=True`` writes ``annotator``'s own labels of an overlap
    response instead of the shared view (source ``human``). ``expected`` (``{sentence_id: label version the
    caller saw}``) turns on the stale-view check: when someone else changed one of these labels since,
    :class:`StaleLabelError` lists their labels and nothing is stored.
    """
    _check_writer(annotator, source, own)
    layer = annotator if own else None

    def work(session: Session) -> SaveResult:
        found = session.execute(
            select(Dataset.id, Dataset.label_kind, Dataset.max_label)
            .join(Response, Response.dataset_id == Dataset.id)
            .where(Response.id == response_id)
        ).first()
        if found is None:
            raise InputError(f"no response with id {response_id}", field="response_id")
        dataset_id, kind, top = found
        sentences = set(session.scalars(select(Sentence.id).where(Sentence.response_id == response_id)))
        foreign = sorted(set(labels) - sentences)
        if foreign:
            raise InputError(
                f"sentences {foreign[:5]} do not belong to response {response_id}", field="sentence_id"
            )
        for label in labels.values():
            _check_label(label, kind, top)
        _lock_response(session, response_id)
        if expected is not None and layer is None:
            _check_versions(session, labels, expected)
        action_id = str(uuid.uuid4())
        changes = []
        for sentence_id in sorted(labels):
            change = _apply_label(
                session,
                sentence_id=sentence_id,
                response_id=response_id,
                dataset_id=dataset_id,
                layer=layer,
                label=labels[sentence_id],
                annotator=annotator,
                source=source,
                action_id=action_id,
            )
            if change:
                changes.append(change)
        return SaveResult(changes, _response_warning(session, response_id, layer))

    return run_write(engine, work)


def undo_last(
    engine: Engine, annotator: str, response_id: int | None = None, *, own: bool = False
) -> UndoResult | None:
    """Revert ``annotator``'s most recent not-yet-undone action (optionally within one response), in the
    shared view or (``own=True``) in their own labels.

    The previous label, source and annotator come back; the undo itself is appended to the history, so
    repeated calls walk further back. A sentence someone else has relabelled since is left alone and listed
    in ``skipped``. Returns None when there is nothing to undo.
    """
    layer = annotator if own else None

    def work(session: Session) -> UndoResult | None:
        latest = select(LabelEvent.action_id, LabelEvent.response_id).where(
            LabelEvent.annotator == annotator, _layer_is(layer), LabelEvent.undoes_id.is_(None), _not_undone()
        )
        if response_id is not None:
            latest = latest.where(LabelEvent.response_id == response_id)
        found = session.execute(latest.order_by(LabelEvent.id.desc()).limit(1)).first()
        if found is None:
            return None
        action_id, action_response = found
        _lock_response(session, action_response)
        dataset_id = session.scalar(select(Response.dataset_id).where(Response.id == action_response))
        assert dataset_id is not None
        events = session.scalars(
            select(LabelEvent)
            .where(LabelEvent.action_id == action_id, _layer_is(layer), _not_undone())
            .order_by(LabelEvent.id.desc())
        ).all()
        undo_action = str(uuid.uuid4())
        reverted: list[LabelChange] = []
        skipped: list[int] = []
        for event in events:
            now_state = _state(session, event.sentence_id, layer)
            # Revert only what this event left in place: same label, source and author (someone else's
            # later edit wins, even if it set the same value).
            still_ours = (
                event.new_label is None
                if now_state is None
                else (now_state.label, now_state.source, now_state.annotator)
                == (event.new_label, event.source, event.new_annotator)
            )
            if not still_ours:
                # Record that the undo left it alone (an event that changes nothing), so the next undo moves
                # on to an earlier action.
                session.add(
                    LabelEvent(
                        action_id=undo_action,
                        sentence_id=event.sentence_id,
                        response_id=event.response_id,
                        layer=layer,
                        annotator=annotator,
                        source=now_state.source if now_state else event.source,
                        old_label=now_state.label if now_state else None,
                        old_source=now_state.source if now_state else None,
                        old_annotator=now_state.annotator if now_state else None,
                        new_label=now_state.label if now_state else None,
                        new_annotator=now_state.annotator if now_state else None,
                        created_at=utcnow(),
                        undoes_id=event.id,
                    )
                )
                skipped.append(event.sentence_id)
                continue
            change = _apply_label(
                session,
                sentence_id=event.sentence_id,
                response_id=event.response_id,
                dataset_id=dataset_id,
                layer=layer,
                label=event.old_label,
                annotator=annotator,
                source=event.old_source or event.source,
                action_id=undo_action,
                undoes=event,
                restore_annotator=event.old_annotator,
            )
            assert change is not None
            reverted.append(change)
        session.flush()
        warning = _response_warning(session, action_response, layer) if events else None
        return UndoResult(reverted, sorted(skipped), warning)

    return run_write(engine, work)


def label_history(
    engine: Engine, *, sentence_id: int | None = None, response_id: int | None = None, own: bool = False
) -> list[LabelChange]:
    """The label events of a sentence or of a whole response, oldest first: the shared view's, or
    (``own=True``) every annotator's own labels (source ``annotation``)."""
    if (sentence_id is None) == (response_id is None):
        raise ValueError("give exactly one of sentence_id or response_id")
    where = (
        LabelEvent.sentence_id == sentence_id
        if sentence_id is not None
        else LabelEvent.response_id == response_id
    )
    layer = LabelEvent.layer.is_not(None) if own else LabelEvent.layer.is_(None)

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
            .where(where, layer)
            .order_by(LabelEvent.id)
        ).all()
        return [LabelChange(*r[:6], OWN_LABEL if own else r[6], r[7]) for r in rows]

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
