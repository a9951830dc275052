"""Ingest a JSONL / CSV / Parquet file in the shared schema into a dataset: one transaction, all or nothing.

Parsing and row validation are :mod:`fractal_core.io`'s (one reader for the whole project); this module adds
the checks only the store can make: dataset name rules, the same file ingested twice into a dataset (sha256
of its bytes), ids already stored in the dataset, and a label kind that does not match the dataset's.
Records stream in chunks and are written as they come, inside one write transaction, so the first bad row
rolls back everything: the database is left exactly as it was.

Sentence labels that come with a file are stored as source ``imported`` (annotator ``import:<file name>``)
unless ``labels_as="gold"``. A native export (:mod:`db.export`) carries each label's source, annotator and
time in ``meta.fractal.labels``; those are restored as they were, so export -> ingest is lossless.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import Engine, Table, func, insert, select
from sqlalchemy.orm import Session

from db.engine import run_write
from db.models import (
    GOLD_SOURCES,
    LABEL_SOURCES,
    CurrentLabel,
    Dataset,
    IngestedFile,
    LabelEvent,
    Response,
    Sentence,
    utcnow,
)
from db.repository import validate_dataset_name
from db.rows import IngestSummary
from fractal_core import io
from fractal_core.errors import InputError
from fractal_core.records import ResponseRecord
from fractal_core.segment import SEGMENTER_VERSION

ProgressCallback = Callable[[int, int | None], None]  # (records done, records expected or None)
NATIVE_KEY = "fractal"  # meta key of the provenance block written by the native export
_SPLIT_STEMS = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
_KIND_ORDER = {"binary": 0, "ordinal": 1}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected_records(path: Path, fmt: str) -> int | None:
    """Record count for the progress bar: Parquet metadata, else line count (JSONL exact, CSV approximate)."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        with path.open("rb") as handle:
            lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
        return max(0, lines - 1) if fmt == "csv" else lines
    except Exception:  # only a progress estimate: a broken file is reported by the reader
        return None


def _split_of(path: Path) -> str | None:
    return _SPLIT_STEMS.get(path.stem.lower())


def _combine_kind(current: str | None, new: str, file: str, line: int, dataset: str) -> str:
    if current is None or current == new:
        return new
    if current in _KIND_ORDER and new in _KIND_ORDER:
        return max(current, new, key=_KIND_ORDER.__getitem__)
    raise InputError(
        f"dataset {dataset!r} holds {current} labels but this record has {new} labels; "
        "use another dataset for it",
        file=file,
        line=line,
        field="aggregation",
    )


def _native_labels(
    record: ResponseRecord, file: str, line: int
) -> tuple[list[dict[str, Any] | None] | None, str | None]:
    """The label provenance and split of a native export record (None, None for any other file)."""
    block = record.meta.get(NATIVE_KEY)
    if block is None:
        return None, None
    field = f"meta.{NATIVE_KEY}"
    if not isinstance(block, Mapping):
        raise InputError(
            "must be an object (written by `fractal export --format native`)",
            file=file,
            line=line,
            field=field,
        )
    split = block.get("split")
    if split is not None and not isinstance(split, str):
        raise InputError("split must be a string", file=file, line=line, field=f"{field}.split")
    labels = block.get("labels")
    if labels is None:
        return None, split
    if not isinstance(labels, list) or len(labels) != len(record.spans):
        raise InputError(
            f"labels must be a list with one entry per sentence ({len(record.spans)})",
            file=file,
            line=line,
            field=f"{field}.labels",
        )
    for i, entry in enumerate(labels):
        where = f"{field}.labels[{i}]"
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            raise InputError("must be an object or null", file=file, line=line, field=where)
        label, source, annotator = entry.get("label"), entry.get("source"), entry.get("annotator")
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise InputError(
                f"label must be a non-negative integer, got {label!r}", file=file, line=line, field=where
            )
        if record.aggregation != "max" and label > 1:
            raise InputError(f"label {label} is not binary", file=file, line=line, field=where)
        if source not in LABEL_SOURCES:
            raise InputError(
                f"source must be one of {', '.join(LABEL_SOURCES)}", file=file, line=line, field=where
            )
        if not isinstance(annotator, str) or not annotator:
            raise InputError("annotator must be a non-empty string", file=file, line=line, field=where)
        at = entry.get("at")
        if at is not None:
            try:
                datetime.fromisoformat(at)
            except (TypeError, ValueError) as err:
                raise InputError(
                    f"at must be an ISO 8601 time, got {at!r}", file=file, line=line, field=where
                ) from err
    return labels, split


def ingest_file(
    engine: Engine,
    path: str | Path,
    dataset: str,
    *,
    format: Literal["jsonl", "csv", "parquet"] | None = None,
    segment_mode: Literal["sentences", "steps"] = "sentences",
    column_map: Mapping[str, str] | None = None,
    labels_as: Literal["imported", "gold"] = "imported",
    split: str | None = None,
    max_field_chars: int = 1_000_000,
    chunk_size: int = 1000,
    progress: ProgressCallback | None = None,
) -> IngestSummary:
    """Validate and store every record of ``path`` in ``dataset`` (created if missing), in one transaction.

    Args:
        path: the file; the format comes from its suffix unless ``format`` is given.
        dataset: dataset name (1-64 of ``[A-Za-z0-9._-]``).
        segment_mode: how raw ``text`` is split; pre-split ``sentences`` are kept as given.
        column_map: ``{your column: schema field}`` renames.
        labels_as: source given to the file's sentence labels (``imported`` unless they are gold).
        split: split name for every response; default: the file stem when it is train/valid/dev/test.
        progress: called after each chunk with (records done, records expected or None).

    Raises:
        InputError: naming file:line:field; nothing is written.
    """
    path = Path(path)
    file = str(path)
    validate_dataset_name(dataset)
    if labels_as not in ("imported", "gold"):
        raise InputError(f"labels_as must be 'imported' or 'gold', got {labels_as!r}", field="labels_as")
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a regular file", file=file)
    # Only for the bookkeeping row and the progress estimate; fractal_core.io decides how to read the file.
    fmt = format or {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(path.suffix.lower(), "jsonl")
    started = time.perf_counter()
    sha = file_sha256(path)
    expected = _expected_records(path, fmt)
    default_split = split if split is not None else _split_of(path)
    annotator = f"import:{path.name}"[:128]

    def work(session: Session) -> IngestSummary:
        ds = session.scalars(select(Dataset).where(Dataset.name == dataset)).first()
        if ds is not None:
            seen = session.scalars(
                select(IngestedFile).where(IngestedFile.dataset_id == ds.id, IngestedFile.sha256 == sha)
            ).first()
            if seen is not None:
                raise InputError(
                    f"this file (sha256 {sha[:12]}) was already ingested into dataset {dataset!r} "
                    f"on {seen.ingested_at:%Y-%m-%d %H:%M} UTC as {seen.filename}",
                    file=file,
                )
        else:
            ds = Dataset(name=dataset, label_kind="binary", description="", gold_target=0.1, max_label=0.0)
            session.add(ds)
            session.flush()
        record_file = IngestedFile(
            dataset_id=ds.id,
            filename=path.name,
            sha256=sha,
            format=fmt,
            segment_mode=segment_mode,
            segmenter_version=SEGMENTER_VERSION,
            n_responses=0,
            n_sentences=0,
        )
        session.add(record_file)
        session.flush()
        had_rows = (
            session.scalar(select(Response.id).where(Response.dataset_id == ds.id).limit(1)) is not None
        )
        kind = ds.label_kind if had_rows else None
        max_label = ds.max_label if had_rows else 0.0
        counts = {"responses": 0, "sentences": 0, "labels": 0}
        records = io.iter_records(
            path,
            format=format,
            segment_mode=segment_mode,
            column_map=column_map,
            max_field_chars=max_field_chars,
        )
        for chunk in _chunks(records, chunk_size):
            first_line = chunk[0][0]
            try:
                chunk_kind = io.label_kind([r for _, r in chunk])
            except ValueError as err:
                raise InputError(str(err), file=file, line=first_line, field="aggregation") from err
            kind = _combine_kind(kind, chunk_kind, file, first_line, dataset)
            max_label = max(max_label, max(r.response_label for _, r in chunk))
            _write_chunk(
                session, ds.id, record_file.id, chunk, file, default_split, labels_as, annotator, counts
            )
            if progress is not None:
                progress(counts["responses"], expected)
        assert kind is not None  # io raises on an empty file
        ds.label_kind = kind
        ds.max_label = float(max_label) if kind == "ordinal" else 1.0
        record_file.n_responses = counts["responses"]
        record_file.n_sentences = counts["sentences"]
        return IngestSummary(
            dataset_id=ds.id,
            dataset=dataset,
            file=file,
            sha256=sha,
            format=fmt,
            n_responses=counts["responses"],
            n_sentences=counts["sentences"],
            n_labels=counts["labels"],
            labels_source=labels_as,
            seconds=time.perf_counter() - started,
        )

    summary = run_write(engine, work)
    return summary


def _insert_returning_ids(session: Session, table: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` into ``table`` in one executemany and return their new ids, in order.

    SQLite cannot return ids of a multi-row INSERT in parameter order, so SQLAlchemy would fall back to one
    statement per row (10x slower). We hold SQLite's write lock for the whole ingest (BEGIN IMMEDIATE), so
    nobody else can take ids meanwhile: assign them ourselves. Other backends use ordered RETURNING.
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


def _chunks(
    records: Iterator[tuple[int, ResponseRecord]], size: int
) -> Iterator[list[tuple[int, ResponseRecord]]]:
    chunk: list[tuple[int, ResponseRecord]] = []
    for item in records:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_chunk(
    session: Session,
    dataset_id: int,
    file_id: int,
    chunk: Sequence[tuple[int, ResponseRecord]],
    file: str,
    default_split: str | None,
    labels_as: str,
    annotator: str,
    counts: dict[str, int],
) -> None:
    ids = [r.id for _, r in chunk]
    taken = set(
        session.scalars(
            select(Response.external_id).where(
                Response.dataset_id == dataset_id, Response.external_id.in_(ids)
            )
        )
    )
    if taken:
        line, record = next((ln, r) for ln, r in chunk if r.id in taken)
        raise InputError(
            f"id {record.id!r} is already stored in this dataset (ids must be unique within a dataset)",
            file=file,
            line=line,
            field="id",
        )
    prepared = []
    for line, record in chunk:
        native, native_split = _native_labels(record, file, line)
        now = utcnow()
        if native is not None:
            labels = [
                None
                if e is None
                else (
                    int(e["label"]),
                    e["source"],
                    e["annotator"],
                    datetime.fromisoformat(e["at"]) if e.get("at") else now,
                )
                for e in native
            ]
        elif record.sentence_labels is not None:
            labels = [
                None if y is None else (int(y), labels_as, annotator, now) for y in record.sentence_labels
            ]
        else:
            labels = [None] * len(record.spans)
        meta = {k: v for k, v in record.meta.items() if k != NATIVE_KEY}
        n_gold = sum(1 for lab in labels if lab is not None and lab[1] in GOLD_SOURCES)
        prepared.append((record, meta, labels, n_gold, native_split or default_split))

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
            for record, meta, _, n_gold, split in prepared
        ],
    )
    sentence_rows: list[dict[str, Any]] = []
    for rid, (record, _, _, _, _) in zip(response_ids, prepared, strict=True):
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
    for rid, (record, _, labels, _, _) in zip(response_ids, prepared, strict=True):
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
    counts["responses"] += len(prepared)
    counts["sentences"] += len(sentence_rows)
    counts["labels"] += len(event_rows)
