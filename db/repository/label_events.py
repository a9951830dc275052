"""The one write path of a label change, for saves and undos alike: the history event, then its view.

Shared by :mod:`db.repository.labels` (saves) and :mod:`db.repository.label_undo`; the rules of both views
(shared and own labels) are described in :mod:`db.repository.labels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import (
    GOLD_SOURCES,
    Annotation,
    CurrentLabel,
    LabelEvent,
    Response,
    Sentence,
    live_sentence,
    utcnow,
)
from db.rows import LabelChange
from db.sources import HUMAN
from fractal_core.mil.semantics import check_consistency

OWN_LABEL = "annotation"
"""What an own-label event is called in :func:`~db.repository.label_views.label_history`
(``LabelChange.source``)."""


@dataclass(frozen=True, slots=True)
class LabelState:
    """A sentence's label in one view: the label, its source and whom it is attributed to."""

    label: int
    source: str
    annotator: str


def label_state(session: Session, sentence_id: int, layer: str | None) -> LabelState | None:
    """A sentence's label in the shared view (``layer`` None) or in that annotator's own labels, or None."""
    if layer is None:
        cur = session.get(CurrentLabel, sentence_id)
        return None if cur is None else LabelState(cur.label, cur.source, cur.annotator)
    own = session.get(Annotation, (sentence_id, layer))
    return None if own is None else LabelState(own.label, HUMAN, layer)


def lock_response(session: Session, response_id: int) -> None:
    """Serialise label writes per response: on PostgreSQL (READ COMMITTED) two saves of one sentence would
    otherwise both read the same old label and the history's chain would break. SQLite already serialises
    every write transaction (``BEGIN IMMEDIATE``), and SQLAlchemy leaves ``FOR UPDATE`` out there."""
    session.execute(select(Response.id).where(Response.id == response_id).with_for_update())


def apply_label(
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
    before = label_state(session, sentence_id, layer)
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


def response_warning(session: Session, response_id: int, layer: str | None) -> str | None:
    """The MIL consistency warning of the shared view's gold labels (own labels: none, the page checks them)."""
    if layer is not None:
        return None
    r = session.get(Response, response_id)
    assert r is not None
    labels = session.execute(
        select(CurrentLabel.label, CurrentLabel.source)
        .select_from(Sentence)
        .outerjoin(CurrentLabel, CurrentLabel.sentence_id == Sentence.id)
        .where(Sentence.response_id == response_id, live_sentence())
        .order_by(Sentence.position)
    ).all()
    gold = [label if source in GOLD_SOURCES else None for label, source in labels]
    return check_consistency(r.aggregation, r.response_label, gold)
