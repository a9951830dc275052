"""Fixing a response's split in the store: merge two neighbouring sentences, split one, undo the last fix.

The span arithmetic and its checks are the library's (:mod:`fractal_core.data.segment_edit`); this module
applies an edit to the sentence rows in one write transaction, with the response row locked like a label save:

- sentences the edit does not touch keep their rows (and so their labels, keyed by sentence id, and their
  scores); the rows after the edit move to their new positions; ``responses.n_sentences`` follows;
- the sentences it replaces end: their labels in the shared view and in every annotator's own labels are
  cleared through the one label write path (:func:`~db.repository.label_events.apply_label`, which keeps the
  gold counter), and their adjudication rows are removed. What ended is kept, with source, author and time, in
  the edit's ``segment_edits`` row. The rows themselves are *retired*, not deleted: ``retired_by`` names the
  edit and the position moves to ``RETIRED_POSITION + id``, so their label history (who labelled what, when)
  and scores stay, and every reader of current sentences leaves them out (``live_sentence()``);
- the new sentences get new rows (segmenter version ``manual``), without labels or scores.

**Undo** reverts the response's last edit not yet undone (whoever made it: a response has one split, and the
person undoing saw it), walking further back on each call: the rows the edit retired come back (the same ids,
with their history and scores) and the labels the edit ended come back through the label path with their
original source and author (the event is by the person undoing, like any undo); the edit's own rows are
retired in turn, and labels set on them since end and are kept in the undo's row.

**Stale scores**: the new rows have no score under any model version, so a response whose split was changed
has current sentences without a score in the active version until the next scoring (a ``score`` or ``train``
job, which scores every current sentence, embedding the new texts first):
:func:`~db.repository.responses.get_response` reports ``scores_stale`` from exactly that. (After an undo the
old rows have their old scores again, so the response is stale only if the active version never scored them.)

**Groups of criteria** (:mod:`db.ingest_criteria`): the datasets of a group hold the same responses with the
same sentences, one dataset per criterion. An edit (or undo) of a response applies, in the same transaction, to
the response with the same external id in every sibling dataset (each one's own labels ended or restored and
kept in its own ``segment_edits`` row), so the splits stay identical; a sibling whose split already differs
refuses the whole edit.

``expected`` (the spans the caller's view showed, ``[(start, end), ...]``) refuses an edit made from a stale
view with :class:`StaleSplitError`: someone changed the split meanwhile, and nothing is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import (
    RETIRED_POSITION,
    Dataset,
    Response,
    SegmentEdit,
    Sentence,
    live_sentence,
    utcnow,
)
from db.repository.label_events import lock_response
from db.repository.segment_labels import count_ended, end_labels, restore_labels
from db.rows import SegmentEditResult, SegmentEditRow
from fractal_core.data.records import Span
from fractal_core.data.segment_edit import SpanEdit, check_spans, merge_edit, revert_edit, split_edit
from fractal_core.errors import InputError

MANUAL_SEGMENTER = "manual"
"""``sentences.segmenter_version`` of a sentence a person made by merging or splitting."""
_PARK = 1_000_000
"""Live positions move through ``[_PARK, 2 * _PARK)`` when sentences shift, so no two rows of a response ever
share a position (PostgreSQL checks the unique index row by row). More than any response's sentence count (a
field holds at most 1,000,000 characters), far below ``RETIRED_POSITION``."""


class StaleSplitError(InputError):
    """An edit from a stale view: the response's sentences changed since the caller read them."""

    def __init__(self, n_now: int) -> None:
        super().__init__(
            "someone changed the split of this response after you opened it (it now has "
            f"{n_now} sentences); nothing was changed: look at it again and retry",
            field="sentence",
        )


Spans = Sequence[tuple[int, int]]
Make = Callable[[Session, int, str, list[Span]], tuple[SpanEdit, SegmentEdit | None]]


def merge_sentences(
    engine: Engine, response_id: int, position: int, editor: str, *, expected: Spans | None = None
) -> SegmentEditResult:
    """Merge sentence ``position`` (0-based) of a response with the next one."""
    return _run(
        engine,
        response_id,
        editor,
        expected,
        lambda s, rid, text, spans: (merge_edit(text, spans, position), None),
    )


def split_sentence(
    engine: Engine,
    response_id: int,
    position: int,
    offset: int,
    editor: str,
    *,
    expected: Spans | None = None,
) -> SegmentEditResult:
    """Split sentence ``position`` (0-based) at ``offset`` characters from its start."""
    return _run(
        engine,
        response_id,
        editor,
        expected,
        lambda s, rid, text, spans: (split_edit(text, spans, position, offset), None),
    )


def undo_segment_edit(
    engine: Engine, response_id: int, editor: str, *, expected: Spans | None = None
) -> SegmentEditResult | None:
    """Undo the response's last split fix not yet undone; None when there is none."""

    def make(session: Session, rid: int, text: str, spans: list[Span]) -> tuple[SpanEdit, SegmentEdit | None]:
        edit = _last_undoable(session, rid)
        if edit is None:  # checked before the write for the response itself; a sibling may lack it
            raise InputError(
                "the same response in another criterion of its group has no split fix to undo; nothing was "
                "changed",
                field="sentence",
            )
        return revert_edit(spans, _as_span_edit(edit, text)), edit

    def nothing(session: Session) -> bool:
        return _last_undoable(session, response_id) is None

    return _run(engine, response_id, editor, expected, make, skip_if=nothing)


def segment_history(engine: Engine, response_id: int) -> list[SegmentEditRow]:
    """A response's split fixes, oldest first."""

    def work(session: Session) -> list[SegmentEditRow]:
        edits = session.scalars(
            select(SegmentEdit).where(SegmentEdit.response_id == response_id).order_by(SegmentEdit.id)
        ).all()
        undone = {e.undoes_id for e in edits if e.undoes_id is not None}
        return [
            SegmentEditRow(
                id=e.id,
                kind=e.kind,
                position=e.position,
                offset=e.offset,
                editor=e.editor,
                at=e.created_at,
                ended_labels=sum(count_ended(item) for item in e.ended),
                undoes_id=e.undoes_id,
                undone=e.id in undone,
            )
            for e in edits
        ]

    return run_read(engine, work)


def _last_undoable(session: Session, response_id: int) -> SegmentEdit | None:
    undone = select(SegmentEdit.undoes_id).where(
        SegmentEdit.response_id == response_id, SegmentEdit.undoes_id.is_not(None)
    )
    return session.scalars(
        select(SegmentEdit)
        .where(
            SegmentEdit.response_id == response_id, SegmentEdit.kind != "undo", SegmentEdit.id.not_in(undone)
        )
        .order_by(SegmentEdit.id.desc())
        .limit(1)
    ).first()


def _spans(text: str, pairs: Sequence[Sequence[int]]) -> tuple[Span, ...]:
    return tuple(Span(int(a), int(b), text[int(a) : int(b)]) for a, b in pairs)


def _as_span_edit(edit: SegmentEdit, text: str) -> SpanEdit:
    """The library's view of a stored merge or split (which spans it removed and added)."""
    n_removed, n_added = (2, 1) if edit.kind == "merge" else (1, 2)
    before, after = _spans(text, edit.spans_before), _spans(text, edit.spans_after)
    p = edit.position
    return SpanEdit(edit.kind, p, before[p : p + n_removed], after[p : p + n_added], edit.offset)


MAX_EDITOR_CHARS = 128
"""Longest editor name (``segment_edits.editor``; the label history's name columns have the same width)."""


def _check_editor(editor: str) -> None:
    if not isinstance(editor, str) or not editor.strip():
        raise InputError("the editor must be a non-empty name", field="user")
    if len(editor) > MAX_EDITOR_CHARS or "\x00" in editor:
        raise InputError(
            f"the editor's name must be at most {MAX_EDITOR_CHARS} characters, without NUL", field="user"
        )


def _run(
    engine: Engine,
    response_id: int,
    editor: str,
    expected: Spans | None,
    make: Make,
    *,
    skip_if: Callable[[Session], bool] | None = None,
) -> Any:
    _check_editor(editor)

    def work(session: Session) -> SegmentEditResult | None:
        siblings = sibling_response_ids(session, response_id)
        for rid in sorted([response_id, *siblings]):  # one order for every writer: no lock cycle
            lock_response(session, rid)
        response = session.get(Response, response_id)
        if response is None:
            raise InputError(f"no response with id {response_id}", field="response")
        rows = _live_rows(session, response_id)
        spans = [Span(r.start, r.end, r.text) for r in rows]
        if expected is not None and [(s.start, s.end) for s in spans] != [tuple(p) for p in expected]:
            raise StaleSplitError(len(spans))
        if skip_if is not None and skip_if(session):
            return None
        result = _edit(session, response, rows, make, editor)
        for rid in siblings:
            sibling = session.get(Response, rid)
            assert sibling is not None
            sibling_rows = _live_rows(session, rid)
            if [(r.start, r.end) for r in sibling_rows] != [(s.start, s.end) for s in spans]:
                raise InputError(
                    f"the same response in another criterion of its group (response {rid}) has another split; "
                    "nothing was changed",
                    field="sentence",
                )
            _edit(session, sibling, sibling_rows, make, editor)
        return result

    result: SegmentEditResult | None = run_write(engine, work)
    return result


def sibling_response_ids(session: Session, response_id: int) -> list[int]:
    """The same response (same external id) in the other datasets of its group of criteria; [] outside one."""
    sibling = select(Dataset.id).where(
        Dataset.criteria_group
        == select(Dataset.criteria_group)
        .join(Response, Response.dataset_id == Dataset.id)
        .where(Response.id == response_id)
        .scalar_subquery()
    )
    external = select(Response.external_id).where(Response.id == response_id).scalar_subquery()
    return list(
        session.scalars(
            select(Response.id)
            .where(
                Response.dataset_id.in_(sibling), Response.external_id == external, Response.id != response_id
            )
            .order_by(Response.id)
        )
    )


def sibling_responses(engine: Engine, response_id: int) -> list[int]:
    """:func:`sibling_response_ids` in its own read."""
    return run_read(engine, lambda s: sibling_response_ids(s, response_id))


def _live_rows(session: Session, response_id: int) -> list[Sentence]:
    return list(
        session.scalars(
            select(Sentence)
            .where(Sentence.response_id == response_id, live_sentence())
            .order_by(Sentence.position)
        )
    )


def _edit(
    session: Session, response: Response, rows: list[Sentence], make: Make, editor: str
) -> SegmentEditResult:
    spans = [Span(r.start, r.end, r.text) for r in rows]
    edit, undone = make(session, response.id, response.text, spans)
    after = edit.apply(spans)
    check_spans(response.text, after)
    return _write(session, response, rows, spans, after, edit, undone, editor)


def _write(
    session: Session,
    response: Response,
    rows: list[Sentence],
    before: list[Span],
    after: list[Span],
    edit: SpanEdit,
    undone: SegmentEdit | None,
    editor: str,
) -> SegmentEditResult:
    p, n_removed = edit.position, len(edit.removed)
    action_id = str(uuid.uuid4())
    gone = rows[p : p + n_removed]
    ended = [end_labels(session, response, row, editor, action_id) for row in gone]
    record = SegmentEdit(
        response_id=response.id,
        editor=editor,
        created_at=utcnow(),
        kind=edit.kind,
        position=p,
        offset=edit.offset,
        spans_before=[[s.start, s.end] for s in before],
        spans_after=[[s.start, s.end] for s in after],
        ended=ended,
        undoes_id=undone.id if undone is not None else None,
    )
    session.add(record)
    session.flush()
    here = Sentence.response_id == response.id
    session.execute(
        update(Sentence)
        .where(Sentence.id.in_([r.id for r in gone]))
        .values(retired_by=record.id, position=RETIRED_POSITION + Sentence.id)
        .execution_options(synchronize_session=False)
    )
    delta = len(edit.added) - n_removed
    if delta:
        live_after = (here, live_sentence(), Sentence.position >= p + n_removed, Sentence.position < _PARK)
        session.execute(
            update(Sentence)
            .where(*live_after)
            .values(position=Sentence.position + _PARK)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Sentence)
            .where(here, live_sentence(), Sentence.position >= _PARK)
            .values(position=Sentence.position - _PARK + delta)
            .execution_options(synchronize_session=False)
        )
    if undone is None:
        session.add_all(
            Sentence(
                response_id=response.id,
                position=p + k,
                start=s.start,
                end=s.end,
                text=s.text,
                segmenter_version=MANUAL_SEGMENTER,
            )
            for k, s in enumerate(edit.added)
        )
        session.flush()
    else:  # the sentences the undone edit replaced come back: the same rows, with their history and scores
        back = sorted(
            session.scalars(select(Sentence).where(here, Sentence.retired_by == undone.id)).all(),
            key=lambda r: r.start,
        )
        if [(r.start, r.end) for r in back] != [(s.start, s.end) for s in edit.added]:
            raise InputError(
                "the sentences this edit replaced are not in the store any more", field="sentence"
            )
        for k, r in enumerate(back):
            session.execute(
                update(Sentence)
                .where(Sentence.id == r.id)
                .values(retired_by=None, position=p + k)
                .execution_options(synchronize_session=False)
            )
    new_ids = list(
        session.scalars(
            select(Sentence.id)
            .where(here, live_sentence(), Sentence.position >= p, Sentence.position < p + len(edit.added))
            .order_by(Sentence.position)
        )
    )
    session.execute(
        update(Response)
        .where(Response.id == response.id)
        .values(n_sentences=len(after))
        .execution_options(synchronize_session=False)
    )
    restored = 0
    if undone is not None:
        for item in undone.ended:
            sentence_id = new_ids[int(item["position"]) - p]
            restored += restore_labels(session, response, sentence_id, item, editor, action_id)
    return SegmentEditResult(
        edit_id=record.id,
        kind=edit.kind,
        response_id=response.id,
        position=p,
        n_sentences=len(after),
        sentence_ids=new_ids,
        ended_labels=sum(count_ended(item) for item in ended),
        restored_labels=restored,
        undone_edit_id=undone.id if undone is not None else None,
    )
