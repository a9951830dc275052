"""Writing one prepared chunk of an upload into its staging dataset: responses, sentences, label events and
current labels, each table in one executemany."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from db.ingest_checks import _Prepared
from db.ingest_staging import _Staging
from db.models import CurrentLabel, Dataset, LabelEvent, Response, Sentence
from fractal_core.data.segment import SEGMENTER_VERSION
from fractal_core.errors import InputError


def _insert_returning_ids(session: Session, table: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` into ``table`` in one executemany and return their new ids, in order.

    SQLite cannot return ids of a multi-row INSERT in parameter order, so SQLAlchemy would fall back to one
    statement per row (10x slower). We hold SQLite's write lock for the chunk's transaction (BEGIN IMMEDIATE),
    so nobody else can take ids meanwhile: assign them ourselves. Other backends use ordered RETURNING.
    """
    if not rows:
        return []
    if session.get_bind().dialect.name == "sqlite":
        start = (session.scalar(select(func.max(table.c.id))) or 0) + 1
        ids = list(range(start, start + len(rows)))
        for row, new_id in zip(rows, ids, strict=True):
            row["id"] = new_id
        session.execute(insert(table), rows)
        return ids
    return list(session.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows))


def _write_chunk(
    session: Session,
    staging: _Staging,
    dataset_id: int,
    file_id: int,
    chunk: Sequence[_Prepared],
) -> dict[str, int]:
    """Insert one chunk into the staging dataset; returns how many responses, sentences and labels it wrote.

    Ids are checked against the target dataset as it is now (one created meanwhile included); a clash with a
    file published later is caught at publish."""
    ids = [record.id for _, record, *_ in chunk]
    taken = set(
        session.scalars(
            select(Response.external_id)
            .join(Dataset, Dataset.id == Response.dataset_id)
            .where(Dataset.name == staging.dataset, Response.external_id.in_(ids))
        )
    )
    if taken:
        line, clash = next((ln, r) for ln, r, *_ in chunk if r.id in taken)
        raise InputError(
            f"id {clash.id!r} is already stored in this dataset (ids must be unique within a dataset)",
            file=staging.file,
            line=line,
            field="id",
        )
    prepared = chunk
    response_ids = _insert_returning_ids(
        session,
        Response.__table__,
        [
            {
                "dataset_id": dataset_id,
                "file_id": file_id,
                "external_id": record.id,
                "context": record.context,
                "text": record.text,
                "response_label": float(record.response_label),
                "aggregation": record.aggregation,
                "label_kind": "proportion"
                if record.aggregation == "mean"
                else ("ordinal" if record.response_label > 1 else "binary"),
                "split": split,
                "task": record.task,
                "meta": meta,
                "n_sentences": len(record.spans),
                "n_gold": n_gold,
            }
            for _, record, meta, _, n_gold, split in prepared
        ],
    )
    sentence_rows: list[dict[str, Any]] = []
    for rid, (_, record, _, _, _, _) in zip(response_ids, prepared, strict=True):
        sentence_rows.extend(
            {
                "response_id": rid,
                "position": i,
                "start": span.start,
                "end": span.end,
                "text": span.text,
                "segmenter_version": SEGMENTER_VERSION,
            }
            for i, span in enumerate(record.spans)
        )
    sentence_ids = _insert_returning_ids(session, Sentence.__table__, sentence_rows)
    event_rows: list[dict[str, Any]] = []
    at = 0
    for rid, (_, record, _, labels, _, _) in zip(response_ids, prepared, strict=True):
        for i, lab in enumerate(labels):
            if lab is not None:
                label, source, who, when = lab
                event_rows.append(
                    {
                        "action_id": f"ingest-{file_id}",
                        "sentence_id": sentence_ids[at + i],
                        "response_id": rid,
                        "annotator": who,
                        "source": source,
                        "old_label": None,
                        "old_source": None,
                        "old_annotator": None,
                        "new_label": label,
                        "new_annotator": who,
                        "created_at": when,
                    }
                )
        at += len(record.spans)
    if event_rows:
        event_ids = _insert_returning_ids(session, LabelEvent.__table__, event_rows)
        session.execute(
            insert(cast(Table, CurrentLabel.__table__)),
            [
                {
                    "sentence_id": ev["sentence_id"],
                    "response_id": ev["response_id"],
                    "label": ev["new_label"],
                    "source": ev["source"],
                    "annotator": ev["annotator"],
                    "event_id": eid,
                    "updated_at": ev["created_at"],
                }
                for ev, eid in zip(event_rows, event_ids, strict=True)
            ],
        )
    return {"responses": len(prepared), "sentences": len(sentence_rows), "labels": len(event_rows)}
