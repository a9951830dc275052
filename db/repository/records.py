"""Training records: a dataset's responses as ``fractal_core`` records with their current gold labels."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import run_read
from db.models import GOLD_SOURCES, CurrentLabel, Response, Sentence
from db.rows import TrainingSet
from fractal_core.records import ResponseRecord, Span


def load_training_set(
    engine: Engine,
    dataset_id: int,
    *,
    with_gold: bool = True,
    include_imported: bool = False,
    split: str | None = None,
) -> TrainingSet:
    """A dataset's responses as ``fractal_core`` records in id order, with their database ids as arrays.

    ``sentence_labels`` carry the current gold labels (sources ``gold`` and ``reviewed``; plus ``imported``
    when ``include_imported``, e.g. to evaluate against a file's own labels), ``None`` for other sentences,
    and are ``None`` as a whole when a response has none (or ``with_gold=False``). ``response_ids`` (B,) and
    ``sentence_ids`` (N, in the records' span order) are what :func:`store_scores` and
    :func:`store_response_summaries` take; ``file_labels`` (N,) holds every current label, imported ones
    included (-1: none), read in the same pass.
    """
    sources = (*GOLD_SOURCES, "imported") if include_imported else GOLD_SOURCES

    def work(session: Session) -> TrainingSet:
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
                    meta=dict(meta or {}),
                )
            )
        # Sentence rows are already in (response id, position) order: the records' flattened span order.
        n = len(sentence_rows)
        sizes = np.fromiter((len(r.spans) for r in records), dtype=np.int64, count=len(records))
        return TrainingSet(
            records=records,
            offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            response_ids=np.fromiter((r[0] for r in responses), dtype=np.int64, count=len(responses)),
            sentence_ids=np.fromiter((r[1] for r in sentence_rows), dtype=np.int64, count=n),
            file_labels=np.fromiter(
                (-1 if r[5] is None else r[5] for r in sentence_rows), dtype=np.int64, count=n
            ),
        )

    return run_read(engine, work)


def load_records(
    engine: Engine,
    dataset_id: int,
    *,
    with_gold: bool = True,
    include_imported: bool = False,
    split: str | None = None,
) -> list[ResponseRecord]:
    """Just the records of :func:`load_training_set` (e.g. to export or evaluate them)."""
    return load_training_set(
        engine, dataset_id, with_gold=with_gold, include_imported=include_imported, split=split
    ).records
