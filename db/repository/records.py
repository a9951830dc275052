"""Training records: a dataset's responses as ``fractal_core`` records with their current gold labels."""

from __future__ import annotations

import math
from array import array

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import run_read
from db.models import GOLD_SOURCES, CurrentLabel, Response, Sentence, live_sentence
from db.rows import TrainingSet
from db.sources import IMPORTED
from fractal_core.data.records import ResponseRecord, Span

STREAM_ROWS = 10_000
"""Rows fetched per round trip while loading: the loader holds one such batch of each query, never all rows."""


def load_training_set(
    engine: Engine,
    dataset_id: int,
    *,
    with_gold: bool = True,
    include_imported: bool = False,
    split: str | None = None,
) -> TrainingSet:
    """A dataset's responses as ``fractal_core`` records in id order, with their database ids as arrays.

    ``sentence_labels`` carry the current gold labels (sources ``human``, ``adjudicated`` and ``imported_gold``, never ``model``; plus
    ``imported``
    when ``include_imported``, e.g. to evaluate against a file's own labels), ``None`` for other sentences,
    and are ``None`` as a whole when a response has none (or ``with_gold=False``). ``response_ids`` (B,) and
    ``sentence_ids`` (N, in the records' span order) are what :func:`store_scores` and
    :func:`store_response_summaries` take; ``file_labels`` (N,) holds every current label, imported ones
    included (-1: none), read in the same pass.

    Both queries are streamed in id order (``STREAM_ROWS`` rows at a time) and merged as they come: each record
    is built when its response's sentences end, and ids and labels go straight into compact arrays, so memory
    beyond the records themselves stays bounded whatever the dataset's size.
    """
    sources = (*GOLD_SOURCES, IMPORTED) if include_imported else GOLD_SOURCES

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
            .execution_options(yield_per=STREAM_ROWS)
        )
        sentences = iter(
            session.execute(
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
                .where(*conds, live_sentence())
                .order_by(Sentence.response_id, Sentence.position)
                .execution_options(yield_per=STREAM_ROWS)
            )
        )
        records: list[ResponseRecord] = []
        response_ids, sentence_ids, file_labels, sizes = array("q"), array("q"), array("q"), array("q")
        pending = next(sentences, None)
        for rid, external_id, context, text, label, aggregation, task, meta in responses:
            spans: list[Span] = []
            labels: list[int | None] = []
            # Both streams are in response id order: this response's sentences are the next rows (rows of a
            # response the first query did not return, e.g. one published between the two, are passed over).
            while pending is not None and pending[0] < rid:
                pending = next(sentences, None)
            while pending is not None and pending[0] == rid:
                _, sid, start, end, stext, lab, src = pending
                spans.append(Span(start, end, stext))
                labels.append(lab if (with_gold and src in sources) else None)
                sentence_ids.append(sid)
                file_labels.append(-1 if lab is None else lab)
                pending = next(sentences, None)
            records.append(
                ResponseRecord(
                    id=external_id,
                    context=context,
                    text=text,
                    spans=spans,
                    # NaN: no label of its own (a response of a preference pair), as the library reads it.
                    response_label=math.nan if label is None else label,
                    aggregation=aggregation,
                    sentence_labels=labels if any(v is not None for v in labels) else None,
                    task=task,
                    meta=dict(meta or {}),
                )
            )
            response_ids.append(rid)
            sizes.append(len(spans))
        return TrainingSet(
            records=records,
            # Sentence rows come in (response id, position) order: the records' flattened span order.
            offsets=np.concatenate([[0], np.cumsum(np.frombuffer(sizes, dtype=np.int64))]).astype(np.int64),
            response_ids=np.frombuffer(response_ids, dtype=np.int64).copy(),
            sentence_ids=np.frombuffer(sentence_ids, dtype=np.int64).copy(),
            file_labels=np.frombuffer(file_labels, dtype=np.int64).copy(),
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
