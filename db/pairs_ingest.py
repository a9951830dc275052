"""Ingest a preference pairs file (JSONL / CSV / Parquet, :mod:`fractal_core.data.pairs`) into a dataset.

The whole file is read and checked first (file, line, field on the first bad row; nothing written), then
written in one write transaction: the pairs' distinct responses as ordinary responses and sentences of the
dataset, and one ``preference_pairs`` row per pair with source ``imported``, annotator ``imported_by`` (default
``import:<file name>``) and the pair's strength. A response without a label of its own is stored with
``response_label`` NULL; a labelled one must fit the dataset's label kind like any ingested response. A
response id already stored in the dataset is linked when it is the same response (text, context, label) and
refused otherwise; a pair id already stored is refused. The same file is never ingested twice into a dataset.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from db.engine import run_write
from db.ingest import ANNOTATOR_CHARS, check_split_name, file_sha256
from db.ingest_checks import _check_fits, _refuse_same_file, _split_of
from db.ingest_write import _insert_returning_ids
from db.models import Dataset, IngestedFile, PreferencePair, Response, Sentence
from db.repository import parse_label_kind, validate_dataset_name
from db.sources import IMPORTED
from fractal_core.data import io
from fractal_core.data.files import require_format
from fractal_core.data.pairs import PairRecord, iter_pairs
from fractal_core.data.records import MAX_FIELD_CHARS, ResponseRecord
from fractal_core.data.segment import SEGMENTER_VERSION
from fractal_core.errors import InputError


@dataclass(frozen=True, slots=True)
class PairsIngestSummary:
    dataset_id: int
    dataset: str
    file: str
    sha256: str
    n_pairs: int
    n_responses: int  # responses stored by this file
    n_linked: int  # responses already in the dataset that its pairs link to
    n_sentences: int
    seconds: float


def _kind(labelled: list[ResponseRecord], declared: tuple[str, float | None] | None) -> tuple[str, float]:
    """A new dataset's label kind: declared, else derived from the responses that have a label, else binary."""
    if declared is not None:
        kind, top = declared
        if top is None:
            top = float(max([io.max_level(labelled), 1])) if labelled else 1.0
        return kind, top
    if not labelled:
        return "binary", 1.0
    kind = io.label_kind(labelled)
    return kind, float(max(io.max_level(labelled), 1)) if kind == "ordinal" else 1.0


def _response_row(
    record: ResponseRecord, dataset_id: int, file_id: int, kind: str, split: str | None
) -> dict:
    label = None if math.isnan(record.response_label) else float(record.response_label)
    return {
        "dataset_id": dataset_id,
        "file_id": file_id,
        "external_id": record.id,
        "context": record.context,
        "text": record.text,
        "response_label": label,
        "aggregation": record.aggregation,
        "label_kind": kind,
        "split": split,
        "task": record.task,
        "meta": {},
        "n_sentences": len(record.spans),
        "n_gold": 0,
    }


def _same(stored: Response, record: ResponseRecord) -> bool:
    label = None if math.isnan(record.response_label) else float(record.response_label)
    return stored.text == record.text and stored.context == record.context and stored.response_label == label


def ingest_pairs(
    engine: Engine,
    path: str | Path,
    dataset: str,
    *,
    format: Literal["jsonl", "csv", "parquet"] | None = None,
    segment_mode: Literal["sentences", "steps"] = "sentences",
    label_kind: str | None = None,
    imported_by: str | None = None,
    split: str | None = None,
    max_field_chars: int = MAX_FIELD_CHARS,
) -> PairsIngestSummary:
    """Validate and store every pair of ``path`` in ``dataset`` (created if missing): all or nothing.

    Raises:
        InputError: naming file:line:field; nothing is written.
    """
    path = Path(path)
    file = str(path)
    started = time.perf_counter()
    validate_dataset_name(dataset)
    declared = parse_label_kind(label_kind) if label_kind is not None else None
    if split is not None:
        check_split_name(split, field="split")
    annotator = (imported_by or f"import:{path.name}")[:ANNOTATOR_CHARS]
    if not annotator.strip() or "\x00" in annotator:
        raise InputError("the importing user's name must be a non-empty name", field="imported_by")
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a regular file", file=file)
    fmt = require_format(path, format)
    sha = file_sha256(path)
    rows: list[tuple[int, PairRecord]] = list(
        iter_pairs(path, format=fmt, segment_mode=segment_mode, max_field_chars=max_field_chars)
    )
    first_line: dict[str, tuple[int, str]] = {}
    for line, pair in rows:
        for record, side in ((pair.chosen, "chosen"), (pair.rejected, "rejected")):
            first_line.setdefault(record.id, (line, side))
    distinct: dict[str, ResponseRecord] = {}
    for _, pair in rows:
        distinct.setdefault(pair.chosen.id, pair.chosen)
        distinct.setdefault(pair.rejected.id, pair.rejected)
    labelled = [r for r in distinct.values() if not math.isnan(r.response_label)]
    default_split = split if split is not None else _split_of(path)

    def work(session: Session) -> PairsIngestSummary:
        ds = session.scalars(select(Dataset).where(Dataset.name == dataset)).first()
        if ds is None:
            kind, top = _kind(labelled, declared)
            ds = Dataset(name=dataset, label_kind=kind, max_label=top)
            session.add(ds)
            session.flush()
        else:
            _refuse_same_file(session, ds.id, sha, dataset, file)
            if declared is not None and declared[0] != ds.label_kind:
                raise InputError(f"dataset {dataset!r} is already {ds.label_kind}", field="label_kind")
        for record in labelled:
            line = first_line[record.id][0]
            _check_fits(record, ds.label_kind, ds.max_label, dataset, file, line)
        taken = session.scalars(
            select(PreferencePair.external_id).where(
                PreferencePair.dataset_id == ds.id, PreferencePair.external_id.in_([p.id for _, p in rows])
            )
        ).first()
        if taken is not None:
            line = next(ln for ln, p in rows if p.id == taken)
            raise InputError(
                f"pair id {taken!r} is already stored in this dataset", file=file, line=line, field="id"
            )
        stored = {
            r.external_id: r
            for r in session.scalars(
                select(Response).where(Response.dataset_id == ds.id, Response.external_id.in_(list(distinct)))
            )
        }
        for rid, response in stored.items():
            if not _same(response, distinct[rid]):
                line, side = first_line[rid]
                raise InputError(
                    f"response id {rid!r} is already stored in this dataset with another text, context or label",
                    file=file,
                    line=line,
                    field=f"{side} response id",
                )
        file_row = IngestedFile(
            dataset_id=ds.id,
            filename=path.name,
            sha256=sha,
            format=fmt,
            segment_mode=segment_mode,
            segmenter_version=SEGMENTER_VERSION,
            n_responses=0,
            n_sentences=0,
        )
        session.add(file_row)
        session.flush()
        new = [r for rid, r in distinct.items() if rid not in stored]
        new_ids = _insert_returning_ids(
            session,
            Response.__table__,
            [_response_row(r, ds.id, file_row.id, ds.label_kind, default_split) for r in new],
        )
        sentence_rows = [
            {
                "response_id": rid,
                "position": i,
                "start": span.start,
                "end": span.end,
                "text": span.text,
                "segmenter_version": SEGMENTER_VERSION,
            }
            for rid, record in zip(new_ids, new, strict=True)
            for i, span in enumerate(record.spans)
        ]
        _insert_returning_ids(session, Sentence.__table__, sentence_rows)
        file_row.n_responses, file_row.n_sentences = len(new), len(sentence_rows)
        ids = {rid: r.id for rid, r in stored.items()} | {r.id: i for r, i in zip(new, new_ids, strict=True)}
        session.execute(
            insert(PreferencePair),
            [
                {
                    "dataset_id": ds.id,
                    "file_id": file_row.id,
                    "external_id": pair.id,
                    "chosen_id": ids[pair.chosen.id],
                    "rejected_id": ids[pair.rejected.id],
                    "strength": pair.strength,
                    "source": IMPORTED,
                    "annotator": annotator,
                    "meta": pair.meta,
                }
                for _, pair in rows
            ],
        )
        return PairsIngestSummary(
            dataset_id=ds.id,
            dataset=dataset,
            file=file,
            sha256=sha,
            n_pairs=len(rows),
            n_responses=len(new),
            n_linked=len(stored),
            n_sentences=len(sentence_rows),
            seconds=time.perf_counter() - started,
        )

    return run_write(engine, work)


__all__ = ["PairsIngestSummary", "ingest_pairs"]
