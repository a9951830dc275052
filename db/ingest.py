"""Ingest a JSONL / CSV / Parquet file in the shared schema into a dataset: one transaction, all or nothing.

Parsing and row validation are :mod:`fractal_core.io`'s (one reader for the whole project); this module adds
the checks only the store can make: dataset name rules, the same file ingested twice into a dataset (sha256
of its bytes), ids already stored in the dataset, and records that do not fit the dataset's label kind.
Records stream in chunks and are written as they come, inside one write transaction, so the first bad row
rolls back everything: the database is left exactly as it was.

Label kind: fixed when the dataset is created, either declared (``label_kind="ordinal:5"``, ``fractal ingest
--label-kind``) or derived from the first file (binary when every level is 0/1, ordinal with its highest
level, proportion for mean bags). Later files must fit it (a 2 in a binary dataset is refused, never turns it
ordinal). Concurrent ingests into one new dataset are serialised on the dataset row: the second sees the
first's kind and either fits it or is refused.

Provenance in a file is data, not authority: sentence labels enter only through the file's
``sentence_labels``, validated like any label (range, the dataset's kind, consistency with the response label),
stored with source ``imported`` (or ``gold`` when whoever ingests says so: ``labels_as="gold"``), annotator
``imported_by`` (default ``import:<file name>``) and the time of the ingest. The ``meta.fractal`` block of a
native export (:mod:`db.export`: per-label source, annotator and time, scores, provenance) is never restored:
only its ``split`` is kept, and the block is dropped from ``meta`` (every export writes it afresh).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import Engine, Table, func, insert, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from db.engine import run_write
from db.models import (
    GOLD_SOURCES,
    CurrentLabel,
    Dataset,
    IngestedFile,
    LabelEvent,
    Response,
    Sentence,
    utcnow,
)
from db.repository import parse_label_kind, validate_dataset_name
from db.rows import IngestSummary
from fractal_core import io
from fractal_core.errors import InputError
from fractal_core.files import require_format
from fractal_core.records import MAX_LABEL, ResponseRecord
from fractal_core.segment import SEGMENTER_VERSION

ProgressCallback = Callable[[int, int | None], None]  # (records done, records expected or None)
NATIVE_KEY = "fractal"  # meta key of the provenance block written by the native export
_SPLIT_STEMS = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
_KIND_ORDER = {"binary": 0, "ordinal": 1}
SPLIT_CHARS = 32  # responses.split
ANNOTATOR_CHARS = 128  # label_events.annotator


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


def _native_split(record: ResponseRecord, file: str, line: int) -> str | None:
    """The split recorded by a native export (``meta.fractal.split``), or None."""
    block = record.meta.get(NATIVE_KEY)
    if not isinstance(block, Mapping) or block.get("split") is None:
        return None
    split = block["split"]
    if not isinstance(split, str) or not 0 < len(split) <= SPLIT_CHARS:
        raise InputError(
            f"split must be a string of 1 to {SPLIT_CHARS} characters",
            file=file,
            line=line,
            field=f"meta.{NATIVE_KEY}.split",
        )
    return split


def _check_fits(record: ResponseRecord, kind: str, top: float, dataset: str, file: str, line: int) -> None:
    """Refuse a record that does not fit a dataset's fixed label kind (``top``: its highest level)."""

    def fail(what: str, field: str) -> InputError:
        levels = {
            "binary": "binary (labels 0 and 1)",
            "proportion": "a proportion dataset (mean bags)",
            "ordinal": f"ordinal with levels 0..{top:g}",
        }[kind]
        return InputError(
            f"{what} but dataset {dataset!r} is {levels}; a dataset's label kind is fixed when it is created "
            "(ingest into a new dataset, declared with --label-kind, instead)",
            file=file,
            line=line,
            field=field,
        )

    if (kind == "proportion") != (record.aggregation == "mean"):
        raise fail(f"aggregation is {record.aggregation}", "aggregation")
    if kind == "proportion":
        return
    if record.response_label > top:
        raise fail(f"response_label is {record.response_label:g}", "response_label")
    above = [v for v in record.sentence_labels or [] if v is not None and v > top]
    if above:
        raise fail(f"a sentence label is {above[0]}", "sentence_labels")


def _dataset_for_ingest(
    session: Session, name: str, declared: tuple[str, float | None] | None
) -> tuple[Dataset, bool]:
    """The dataset row, locked for this transaction, created when missing.

    Creating: PostgreSQL's ``INSERT ... ON CONFLICT DO NOTHING`` waits for a concurrent creator to finish, so
    two ingests into one new dataset run one after the other (SQLite's write lock already does that). Until the
    kind is known (declared, or derived at the end of the first file) the new row allows every level; nobody
    sees it before the ingest commits."""
    kind, top = declared if declared is not None else ("ordinal", None)
    values = {
        "name": name,
        "label_kind": kind,
        "max_label": float(MAX_LABEL) if top is None else top,
        "description": "",
        "gold_target": 0.1,
        "created_at": utcnow(),
    }
    created = False
    if session.get_bind().dialect.name == "postgresql":
        statement = (
            postgresql.insert(Dataset).values(**values).on_conflict_do_nothing(index_elements=["name"])
        )
        created = session.execute(statement.returning(Dataset.id)).first() is not None
    elif session.scalar(select(Dataset.id).where(Dataset.name == name)) is None:
        session.execute(insert(Dataset).values(**values))
        created = True
    ds = session.scalars(select(Dataset).where(Dataset.name == name).with_for_update()).one()
    session.refresh(ds)
    return ds, created


def ingest_file(
    engine: Engine,
    path: str | Path,
    dataset: str,
    *,
    format: Literal["jsonl", "csv", "parquet"] | None = None,
    segment_mode: Literal["sentences", "steps"] = "sentences",
    column_map: Mapping[str, str] | None = None,
    labels_as: Literal["imported", "gold"] = "imported",
    label_kind: str | None = None,
    imported_by: str | None = None,
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
        label_kind: for a new dataset, its kind (``binary``, ``proportion``, ``ordinal`` or ``ordinal:C``);
            default: derived from the file. For an existing one it must match (or be omitted).
        imported_by: who imports (recorded as the labels' annotator); default ``import:<file name>``.
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
    declared = parse_label_kind(label_kind) if label_kind is not None else None
    if split is not None and not 0 < len(split) <= SPLIT_CHARS:
        raise InputError(f"split must be 1 to {SPLIT_CHARS} characters", field="split")
    annotator = (imported_by or f"import:{path.name}")[:ANNOTATOR_CHARS]
    if not annotator.strip() or "\x00" in annotator:
        raise InputError("the importing user's name must be a non-empty name", field="imported_by")
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a regular file", file=file)
    fmt = require_format(path, format)
    started = time.perf_counter()
    sha = file_sha256(path)
    expected = _expected_records(path, fmt)
    default_split = split if split is not None else _split_of(path)

    def work(session: Session) -> IngestSummary:
        ds, new = _dataset_for_ingest(session, dataset, declared)
        seen = session.scalars(
            select(IngestedFile).where(IngestedFile.dataset_id == ds.id, IngestedFile.sha256 == sha)
        ).first()
        if seen is not None:
            raise InputError(
                f"this file (sha256 {sha[:12]}) was already ingested into dataset {dataset!r} "
                f"on {seen.ingested_at:%Y-%m-%d %H:%M} UTC as {seen.filename}",
                file=file,
            )
        # The kind is fixed unless this ingest creates the dataset without declaring it (or its levels).
        fixed: tuple[str, float] | None = None
        if not new or (declared is not None and declared[1] is not None):
            fixed = (ds.label_kind, ds.max_label)
        if (
            not new
            and declared is not None
            and (declared[0] != ds.label_kind or declared[1] not in (None, ds.max_label))
        ):
            raise InputError(
                f"dataset {dataset!r} is already {ds.label_kind}"
                + (f" with levels 0..{ds.max_label:g}" if ds.label_kind == "ordinal" else "")
                + f"; it cannot be ingested as {label_kind}",
                field="label_kind",
            )
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
        kind: str | None = None
        max_label = 0.0
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
            if fixed is not None:
                for line, record in chunk:
                    _check_fits(record, *fixed, dataset, file, line)
            else:
                try:
                    chunk_kind = io.label_kind([r for _, r in chunk])
                except ValueError as err:
                    raise InputError(str(err), file=file, line=first_line, field="aggregation") from err
                if declared is not None and chunk_kind != declared[0] and chunk_kind != "binary":
                    raise InputError(
                        f"dataset {dataset!r} is declared {declared[0]} but this file has {chunk_kind} labels",
                        file=file,
                        line=first_line,
                        field="response_label",
                    )
                kind = _combine_kind(kind, chunk_kind, file, first_line, dataset)
                max_label = max(max_label, float(io.max_level([r for _, r in chunk])))
            _write_chunk(
                session, ds.id, record_file.id, chunk, file, default_split, labels_as, annotator, counts
            )
            if progress is not None:
                progress(counts["responses"], expected)
        if fixed is None:
            assert kind is not None  # io raises on an empty file
            if declared is not None:
                kind = declared[0]
            ds.label_kind = kind
            ds.max_label = max(max_label, 1.0) if kind == "ordinal" else 1.0
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
    now = utcnow()
    for line, record in chunk:
        native_split = _native_split(record, file, line)
        labels: list[tuple[int, str, str, datetime] | None] = (
            [None if y is None else (int(y), labels_as, annotator, now) for y in record.sentence_labels]
            if record.sentence_labels is not None
            else [None] * len(record.spans)
        )
        # The native block (labels, scores, provenance of another store) is regenerated by every export.
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
