"""Undo: revert an annotator's latest not yet undone action, leaving alone what others changed since."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, exists, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from db.engine import run_write
from db.models import LabelEvent, Response, Sentence, live_sentence, utcnow
from db.repository.label_events import apply_label, label_state, lock_response, response_warning
from db.rows import LabelChange, UndoResult


def _layer_is(layer: str | None) -> ColumnElement[bool]:
    return LabelEvent.layer.is_(None) if layer is None else LabelEvent.layer == layer


def _on_live_sentence() -> ColumnElement[bool]:
    """Events of sentences still in their response: a sentence a split fix replaced keeps its history, but an
    undo never brings a label back onto it (the split fix's own undo restores those labels)."""
    return exists().where(Sentence.id == LabelEvent.sentence_id, live_sentence())


def _not_undone() -> ColumnElement[bool]:
    """Events no later event undoes (the history is append-only: an undo is an event pointing back)."""
    undo = aliased(LabelEvent)
    return ~exists().where(undo.undoes_id == LabelEvent.id)


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
            LabelEvent.annotator == annotator,
            _layer_is(layer),
            LabelEvent.undoes_id.is_(None),
            _not_undone(),
            _on_live_sentence(),
        )
        if response_id is not None:
            latest = latest.where(LabelEvent.response_id == response_id)
        found = session.execute(latest.order_by(LabelEvent.id.desc()).limit(1)).first()
        if found is None:
            return None
        action_id, action_response = found
        lock_response(session, action_response)
        dataset_id = session.scalar(select(Response.dataset_id).where(Response.id == action_response))
        assert dataset_id is not None
        events = session.scalars(
            select(LabelEvent)
            .where(LabelEvent.action_id == action_id, _layer_is(layer), _not_undone(), _on_live_sentence())
            .order_by(LabelEvent.id.desc())
        ).all()
        undo_action = str(uuid.uuid4())
        reverted: list[LabelChange] = []
        skipped: list[int] = []
        for event in events:
            now_state = label_state(session, event.sentence_id, layer)
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
            change = apply_label(
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
        warning = response_warning(session, action_response, layer) if events else None
        return UndoResult(reverted, sorted(skipped), warning)

    return run_write(engine, work)
