"""Each annotator's own labels of overlap responses, kept apart from the gold view until adjudication."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db import repository as repo
from db.engine import run_read
from db.models import Annotation
from db.rows import LabelChange, SaveResult, UndoResult


def own_labels(engine: Engine, response_id: int, annotator: str) -> dict[int, int]:
    """``annotator``'s own labels of an overlap response: sentence id -> label."""
    return run_read(
        engine,
        lambda s: {
            sid: lab
            for sid, lab in s.execute(
                select(Annotation.sentence_id, Annotation.label).where(
                    Annotation.response_id == response_id, Annotation.annotator == annotator
                )
            )
        },
    )


def annotations_by_annotator(engine: Engine, response_id: int) -> dict[str, dict[int, int]]:
    """Every annotator's own labels of a response: annotator -> {sentence id -> label}."""

    def work(session: Session) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = defaultdict(dict)
        for who, sid, lab in session.execute(
            select(Annotation.annotator, Annotation.sentence_id, Annotation.label).where(
                Annotation.response_id == response_id
            )
        ):
            out[who][sid] = lab
        return dict(out)

    return run_read(engine, work)


def record_annotations(
    engine: Engine, response_id: int, labels: Mapping[int, int | None], annotator: str
) -> SaveResult:
    """Store ``annotator``'s own labels of an overlap response (one action; :func:`undo_annotation` reverts
    it) through the one label path (:func:`db.repository.record_labels` with ``own=True``). The gold view is
    not touched: a reviewer's :func:`adjudicate` sets it."""
    return repo.record_labels(engine, response_id, labels, annotator, own=True)


def undo_annotation(engine: Engine, annotator: str, response_id: int) -> UndoResult | None:
    """Revert ``annotator``'s last not yet undone action on their own labels of a response (the one undo
    rule: sentences changed since are left alone)."""
    return repo.undo_last(engine, annotator, response_id, own=True)


def annotation_history(engine: Engine, response_id: int) -> list[LabelChange]:
    """Every change to annotators' own labels of a response, oldest first (source ``annotation``)."""
    return repo.label_history(engine, response_id=response_id, own=True)
