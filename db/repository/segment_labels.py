"""The labels a split fix ends on the sentences it replaces, and gives back on undo
(:mod:`db.repository.segment_edits`): every label goes through the one label write path
(:func:`~db.repository.label_events.apply_label`); adjudication rows are removed and written back as they were.

What ended is one JSON item per replaced sentence, stored in ``segment_edits.ended``: ``{"position", "shared":
{"label", "source", "annotator"} | null, "own": {annotator: label}, "adjudications": [{"reviewer", "label",
"at"}]}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Adjudication, Annotation, CurrentLabel, Response, Sentence
from db.repository.label_events import apply_label
from db.sources import HUMAN


def count_ended(item: dict[str, Any]) -> int:
    """How many labels (shared, own, adjudications) one item ended."""
    return int(item["shared"] is not None) + len(item["own"]) + len(item["adjudications"])


def end_labels(
    session: Session, response: Response, row: Sentence, editor: str, action_id: str
) -> dict[str, Any]:
    """Clear a replaced sentence's labels through the label path and say what they were."""
    current = session.get(CurrentLabel, row.id)
    shared = (
        None
        if current is None
        else {"label": current.label, "source": current.source, "annotator": current.annotator}
    )
    own: dict[str, int] = {
        a.annotator: a.label
        for a in session.scalars(select(Annotation).where(Annotation.sentence_id == row.id)).all()
    }
    # (layer, source) of every label the replaced sentence carries: the shared one, then each annotator's own.
    layers = ([(None, current.source)] if current is not None else []) + [(a, HUMAN) for a in sorted(own)]
    for layer, source in layers:
        apply_label(
            session,
            sentence_id=row.id,
            response_id=response.id,
            dataset_id=response.dataset_id,
            layer=layer,
            label=None,
            annotator=editor,
            source=source,
            action_id=action_id,
        )
    decided = session.scalars(
        select(Adjudication).where(Adjudication.sentence_id == row.id).order_by(Adjudication.id)
    ).all()
    adjudications = [
        {"reviewer": a.reviewer, "label": a.label, "at": a.created_at.isoformat()} for a in decided
    ]
    # An adjudication of a sentence that no longer exists would still mark the response decided.
    for a in decided:
        session.delete(a)
    return {"position": row.position, "shared": shared, "own": own, "adjudications": adjudications}


def restore_labels(
    session: Session, response: Response, sentence_id: int, item: dict[str, Any], editor: str, action_id: str
) -> int:
    """Give a sentence back the labels an edit ended: each with its source and author, as an event by
    ``editor`` (like an undo); adjudication records with their reviewer and time."""
    n = 0
    shared = item["shared"]
    # (layer, label, source, who set it) of every label to bring back: the shared one, then each annotator's own.
    layers = (
        []
        if shared is None
        else [(None, int(shared["label"]), str(shared["source"]), str(shared["annotator"]))]
    )
    layers += [(a, int(label), HUMAN, a) for a, label in sorted(item["own"].items())]
    for layer, label, source, who in layers:
        apply_label(
            session,
            sentence_id=sentence_id,
            response_id=response.id,
            dataset_id=response.dataset_id,
            layer=layer,
            label=label,
            annotator=editor,
            source=source,
            action_id=action_id,
            restore_annotator=who,
        )
    n += len(layers)
    for adj in item["adjudications"]:
        session.add(
            Adjudication(
                response_id=response.id,
                sentence_id=sentence_id,
                label=adj["label"],
                reviewer=adj["reviewer"],
                created_at=datetime.fromisoformat(adj["at"]),
            )
        )
        n += 1
    session.flush()
    return n
