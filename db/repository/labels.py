"""Sentence labels: saving them (with the stale-view check); undo, history and the gold budget re-exported.

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

Where each part lives (every public name is importable from here):

- this module: :func:`record_label`, :func:`record_labels` and the checks of a save
  (:class:`StaleLabelError`);
- :mod:`db.repository.label_events`: the one write path (the event, then the view) that saves and undos share;
- :mod:`db.repository.label_undo`: :func:`undo_last`;
- :mod:`db.repository.label_views`: :func:`label_history` and :func:`gold_budget`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import LABEL_SOURCES, CurrentLabel, Dataset, Response, Sentence, live_sentence
from db.repository.label_events import OWN_LABEL, apply_label, lock_response, response_warning
from db.repository.label_undo import undo_last
from db.repository.label_views import gold_budget, label_history
from db.rows import LabelConflict, SaveResult
from db.sources import HUMAN
from fractal_core.data.records import sentence_label_problem
from fractal_core.errors import InputError

__all__ = [
    "OWN_LABEL",
    "StaleLabelError",
    "gold_budget",
    "label_history",
    "record_label",
    "record_labels",
    "undo_last",
]


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
    problem = sentence_label_problem(label, label_kind, max_label)
    if problem is not None:
        raise InputError(problem, field="label")


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
        # Locked before the sentences are read: a split fix (db.repository.segment_edits) may replace them.
        lock_response(session, response_id)
        sentences = set(
            session.scalars(select(Sentence.id).where(Sentence.response_id == response_id, live_sentence()))
        )
        foreign = sorted(set(labels) - sentences)
        if foreign:
            raise InputError(
                f"sentences {foreign[:5]} do not belong to response {response_id} (or a split fix replaced them)",
                field="sentence_id",
            )
        for label in labels.values():
            _check_label(label, kind, top)
        if expected is not None and layer is None:
            _check_versions(session, labels, expected)
        action_id = str(uuid.uuid4())
        changes = []
        for sentence_id in sorted(labels):
            change = apply_label(
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
        return SaveResult(changes, response_warning(session, response_id, layer))

    return run_write(engine, work)
