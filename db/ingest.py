"""Ingest a JSONL / CSV / Parquet file in the shared schema into a dataset: staged in chunks, all or nothing.

Parsing and row validation are :mod:`fractal_core.data.io`'s (one reader for the whole project); this module adds
the checks only the store can make: dataset name rules, the same file ingested twice into a dataset (sha256
of its bytes), ids already stored in the dataset, and records that do not fit the dataset's label kind.

Staged ingest: records stream in chunks (``CHUNK_RESPONSES``); each chunk is read and checked outside any
transaction, then written in its own short write transaction into a hidden staging dataset that belongs to this
import alone (an ``ingested_files`` row in state ``staging``; readers never list such a dataset, see
:func:`db.repository.staging_dataset_ids`). Between chunks the write lock is free, so an annotator's save
waits for one chunk at most. When the whole file is in, one short transaction publishes it: a new dataset is
the staging dataset renamed (constant time), an existing one receives the staged responses with one UPDATE.
A bad row anywhere (or a publish that is refused) removes the staged rows at once, chunk by chunk; a process
killed mid-way leaves them hidden until :func:`purge_abandoned_imports` (run when a worker or ``fractal
ingest`` starts) finds its process gone or its heartbeat stale. A file refused in its first chunk writes
nothing at all.

Label kind: fixed when the dataset is created, either declared (``label_kind="ordinal:5"``, ``fractal ingest
--label-kind``) or derived from the first file (binary when every level is 0/1, ordinal with its highest
level, proportion for mean bags). Later files must fit it (a 2 in a binary dataset is refused, never turns it
ordinal). Concurrent ingests into one new dataset are serialised when they publish (the dataset row is locked,
and its unique name decides who creates it): the second sees the first's kind and either fits it or is
refused.

Provenance in a file is data, not authority: sentence labels enter only through the file's
``sentence_labels``, validated like any label (range, the dataset's kind, consistency with the response label),
stored with source ``imported`` (or ``imported_gold`` when whoever ingests says they are gold:
``labels_as="gold"``; see :mod:`db.sources`), annotator
``imported_by`` (default ``import:<file name>``) and the time of the ingest. The ``meta.fractal`` block of a
native export (:mod:`db.export`: per-label source, annotator and time, scores, provenance) is never restored:
only its ``split`` is kept, and the block is dropped from ``meta`` (every export writes it afresh).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, Engine, Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from db.engine import run_read, run_write
from db.jobs import owner_gone, process_owner
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
from db.repository import parse_label_kind, staging_dataset_ids, validate_dataset_name
from db.rows import IngestSummary
from db.sources import IMPORTED, IMPORTED_GOLD
from fractal_core.data import io
from fractal_core.data.files import require_format
from fractal_core.data.records import MAX_LABEL, ResponseRecord, kind_mismatch
from fractal_core.data.segment import SEGMENTER_VERSION
from fractal_core.errors import InputError

ProgressCallback = Callable[[int, int | None], None]  # (records done, records expected or None)
NATIVE_KEY = "fractal"  # meta key of the provenance block written by the native export
_SPLIT_STEMS = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
_KIND_ORDER = {"binary": 0, "ordinal": 1}
SPLIT_CHARS = 32  # responses.split
_SPLIT_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{SPLIT_CHARS - 1}}}")
ANNOTATOR_CHARS = 128  # label_events.annotator
CHUNK_RESPONSES = 500
"""Records per write transaction: the longest another writer waits for an ingest (benchmarks/bench_ingest_lock.py)."""
STAGING_PREFIX = "~import-"  # staging datasets' names: no dataset name may start with "~"
IMPORT_STALE_S = 300.0
"""A staged import with no heartbeat (one per chunk) for this long is abandoned, whatever host it ran on."""


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


def check_split_name(split: object, **where: Any) -> str:
    """``split`` when it is a plain name (1 to ``SPLIT_CHARS`` letters, digits, ``.``, ``_``, ``-``, not first):
    never a path such as ``../x`` or ``a/b``, nor blank. InputError at ``where`` (file, line, field) otherwise."""
    if not isinstance(split, str) or not _SPLIT_NAME.fullmatch(split):
        raise InputError(
            f"must be a plain name of 1 to {SPLIT_CHARS} letters, digits, '.', '_' or '-' "
            f"(starting with a letter or digit), got {split!r:.80}",
            **where,
        )
    return split


def _native_split(record: ResponseRecord, file: str, line: int) -> str | None:
    """The split recorded by a native export (``meta.fractal.split``), or None."""
    block = record.meta.get(NATIVE_KEY)
    if not isinstance(block, Mapping) or block.get("split") is None:
        return None
    return check_split_name(block["split"], file=file, line=line, field=f"meta.{NATIVE_KEY}.split")


def _kind_error(
    what: str, field: str, kind: str, top: float, dataset: str, file: str, line: int
) -> InputError:
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


def _check_fits(record: ResponseRecord, kind: str, top: float, dataset: str, file: str, line: int) -> None:
    """Refuse a record that does not fit a dataset's fixed label kind (``top``: its highest level)."""
    found = kind_mismatch(record, kind, top)
    if found is not None:
        raise _kind_error(found[0], found[1], kind, top, dataset, file, line)


@dataclass
class _Staging:
    """An import being staged: its hidden dataset and ``ingested_files`` row (None until the first chunk)."""

    dataset: str
    file: str
    dataset_id: int | None = None
    file_id: int | None = None
    kind: str | None = None  # derived from the records so far
    max_label: float = 0.0
    first_line: int = 0  # the file's first record
    first_aggregation: str = ""
    max_line: int = 0  # the first record with the highest level so far
    counts: dict[str, int] = field(default_factory=lambda: {"responses": 0, "sentences": 0, "labels": 0})


def _refuse_same_file(session: Session, dataset_id: int, sha: str, dataset: str, file: str) -> None:
    seen = session.scalars(
        select(IngestedFile).where(
            IngestedFile.dataset_id == dataset_id,
            IngestedFile.sha256 == sha,
            IngestedFile.state == "published",
        )
    ).first()
    if seen is not None:
        raise InputError(
            f"this file (sha256 {sha[:12]}) was already ingested into dataset {dataset!r} "
            f"on {seen.ingested_at:%Y-%m-%d %H:%M} UTC as {seen.filename}",
            file=file,
        )


def _refuse_other_declared_kind(
    ds: Dataset, declared: tuple[str, float | None] | None, label_kind: str | None, dataset: str
) -> None:
    if declared is not None and (declared[0] != ds.label_kind or declared[1] not in (None, ds.max_label)):
        raise InputError(
            f"dataset {dataset!r} is already {ds.label_kind}"
            + (f" with levels 0..{ds.max_label:g}" if ds.label_kind == "ordinal" else "")
            + f"; it cannot be ingested as {label_kind}",
            field="label_kind",
        )


def _refuse_other_staged_kind(ds: Dataset, staging: _Staging) -> None:
    """At publish, into a dataset another ingest created while this file was being staged: the file's labels
    (their kind and highest level) must fit the kind that ingest fixed."""
    kind, top, args = (
        staging.kind,
        staging.max_label,
        (ds.label_kind, ds.max_label, staging.dataset, staging.file),
    )
    if (ds.label_kind == "proportion") != (kind == "proportion"):
        raise _kind_error(
            f"aggregation is {staging.first_aggregation}", "aggregation", *args, staging.first_line
        )
    if kind != "proportion" and top > ds.max_label:
        raise _kind_error(f"a label is {top:g}", "response_label", *args, staging.max_line)


def ingest_file(
    engine: Engine,
    path: str | Path,
    dataset: str,
    *,
    format: Literal["jsonl", "csv", "parquet"] | None = None,
    segment_mode: Literal["sentences", "steps"] = "sentences",
    column_map: Mapping[str, str] | None = None,
    label_map: Mapping[str, float] | None = None,
    labels_as: Literal["imported", "gold"] = "imported",
    label_kind: str | None = None,
    imported_by: str | None = None,
    split: str | None = None,
    max_field_chars: int = 1_000_000,
    chunk_size: int = CHUNK_RESPONSES,
    progress: ProgressCallback | None = None,
) -> IngestSummary:
    """Validate and store every record of ``path`` in ``dataset`` (created if missing): all or nothing.

    Chunks of ``chunk_size`` records are read and checked outside any transaction, then each is written in its
    own short write transaction into a hidden staging dataset; the file is published in one short transaction
    at the end. Readers see the whole file or nothing of it, and other writers wait at most one chunk.

    Args:
        path: the file; the format comes from its suffix unless ``format`` is given.
        dataset: dataset name (1-64 of ``[A-Za-z0-9._-]``).
        segment_mode: how raw ``text`` is split; pre-split ``sentences`` are kept as given.
        column_map: ``{your column: schema field}`` renames.
        label_map: ``{value as written: response label}`` for response labels written as words (e.g.
            ``{"correct": 0, "wrong": 1}``); a value it does not list is refused with its line.
        labels_as: ``gold`` when whoever ingests vouches for the file's labels: stored as ``imported_gold``
            (gold for training, still told apart from labels set in the tool); else ``imported``.
        label_kind: for a new dataset, its kind (``binary``, ``proportion``, ``ordinal`` or ``ordinal:C``);
            default: derived from the file. For an existing one it must match (or be omitted).
        imported_by: who imports (recorded as the labels' annotator); default ``import:<file name>``.
        split: split name for every response; default: the file stem when it is train/valid/dev/test.
        chunk_size: records per write transaction.
        progress: called after each chunk is committed (its write lock released) with (records done,
            records expected or None).

    Raises:
        InputError: naming file:line:field; nothing is visible and staged rows are removed.
    """
    path = Path(path)
    file = str(path)
    validate_dataset_name(dataset)
    if labels_as not in ("imported", "gold"):
        raise InputError(f"labels_as must be 'imported' or 'gold', got {labels_as!r}", field="labels_as")
    source = IMPORTED_GOLD if labels_as == "gold" else IMPORTED
    declared = parse_label_kind(label_kind) if label_kind is not None else None
    if split is not None:
        check_split_name(split, field="split")
    annotator = (imported_by or f"import:{path.name}")[:ANNOTATOR_CHARS]
    if not annotator.strip() or "\x00" in annotator:
        raise InputError("the importing user's name must be a non-empty name", field="imported_by")
    if chunk_size < 1:
        raise InputError(f"chunk size must be at least 1, got {chunk_size}", field="chunk_size")
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a regular file", file=file)
    fmt = require_format(path, format)
    started = time.perf_counter()
    sha = file_sha256(path)
    expected = _expected_records(path, fmt)
    default_split = split if split is not None else _split_of(path)

    def plan(session: Session) -> tuple[int | None, tuple[str, float] | None]:
        """The target's id and fixed kind when it exists (else a declared kind with its levels, or None)."""
        ds = session.scalars(select(Dataset).where(Dataset.name == dataset)).first()
        if ds is None:
            if declared is not None and declared[1] is not None:
                return None, (declared[0], declared[1])
            return None, None
        _refuse_same_file(session, ds.id, sha, dataset, file)
        _refuse_other_declared_kind(ds, declared, label_kind, dataset)
        return ds.id, (ds.label_kind, ds.max_label)

    target_id, fixed = run_read(engine, plan)
    staging = _Staging(dataset=dataset, file=file)
    if fixed is not None:
        staging_kind = fixed
    else:  # levels unknown until the whole file is read: the staging dataset allows every level meanwhile
        staging_kind = (declared[0] if declared is not None else "ordinal", float(MAX_LABEL))
    file_row = {
        "filename": path.name,
        "sha256": sha,
        "format": fmt,
        "segment_mode": segment_mode,
        "segmenter_version": SEGMENTER_VERSION,
        "n_responses": 0,
        "n_sentences": 0,
        "state": "staging",
        "owner": process_owner(),
    }
    records = io.iter_records(
        path,
        format=format,
        segment_mode=segment_mode,
        column_map=column_map,
        label_map=label_map,
        max_field_chars=max_field_chars,
    )
    try:
        for chunk in _chunks(records, chunk_size):
            first_line = chunk[0][0]
            if fixed is not None:
                for line, record in chunk:
                    _check_fits(record, *fixed, dataset, file, line)
            try:
                chunk_kind = io.label_kind([r for _, r in chunk])
            except ValueError as err:
                raise InputError(str(err), file=file, line=first_line, field="aggregation") from err
            if fixed is None and declared is not None and chunk_kind not in (declared[0], "binary"):
                raise InputError(
                    f"dataset {dataset!r} is declared {declared[0]} but this file has {chunk_kind} labels",
                    file=file,
                    line=first_line,
                    field="response_label",
                )
            staging.kind = _combine_kind(staging.kind, chunk_kind, file, first_line, dataset)
            if not staging.first_line:
                staging.first_line, staging.first_aggregation = first_line, chunk[0][1].aggregation
            chunk_max = float(io.max_level([r for _, r in chunk]))
            if chunk_max > staging.max_label or not staging.max_line:
                staging.max_label = chunk_max
                staging.max_line = next(ln for ln, r in chunk if io.max_level([r]) == chunk_max)
            rows = _prepare_chunk(chunk, file, default_split, source, annotator)

            def write(session: Session, rows: list[_Prepared] = rows) -> tuple[int, int, dict[str, int]]:
                ds_id, file_id = _stage(session, staging, staging_kind, file_row)
                return ds_id, file_id, _write_chunk(session, staging, ds_id, file_id, rows)

            staging.dataset_id, staging.file_id, written = run_write(engine, write)
            for key, value in written.items():
                staging.counts[key] += value
            if progress is not None:
                progress(staging.counts["responses"], expected)
        assert staging.kind is not None  # io raises on an empty file
        if fixed is not None:
            kind, top = fixed
        else:
            kind = declared[0] if declared is not None else staging.kind
            top = max(staging.max_label, 1.0) if kind == "ordinal" else 1.0

        def publish(session: Session) -> int:
            return _publish(session, staging, sha, kind, top, target_id, declared, label_kind)

        dataset_id = run_write(engine, publish)
    except BaseException:
        if staging.dataset_id is not None:
            # If removing fails too (the database went away), the next worker or ingest removes what is left.
            with contextlib.suppress(Exception):
                discard_staged(engine, staging.dataset_id)
        raise
    return IngestSummary(
        dataset_id=dataset_id,
        dataset=dataset,
        file=file,
        sha256=sha,
        format=fmt,
        n_responses=staging.counts["responses"],
        n_sentences=staging.counts["sentences"],
        n_labels=staging.counts["labels"],
        labels_source=source,
        seconds=time.perf_counter() - started,
    )


def _stage(
    session: Session, staging: _Staging, kind: tuple[str, float], file_row: dict[str, Any]
) -> tuple[int, int]:
    """The staging dataset and file row: created with the first chunk; later chunks renew the heartbeat and
    make sure nobody removed them meanwhile (an import judged abandoned)."""
    now = utcnow()
    if staging.dataset_id is None or staging.file_id is None:
        ds_id = session.execute(
            insert(Dataset)
            .values(
                name=f"{STAGING_PREFIX}{uuid.uuid4().hex}",
                label_kind=kind[0],
                max_label=kind[1],
                description="",
                gold_target=0.1,
                created_at=now,
            )
            .returning(Dataset.id)
        ).scalar_one()
        file_id = session.execute(
            insert(IngestedFile)
            .values(dataset_id=ds_id, heartbeat_at=now, ingested_at=now, **file_row)
            .returning(IngestedFile.id)
        ).scalar_one()
        return ds_id, file_id
    _renew(session, staging)
    return staging.dataset_id, staging.file_id


def _renew(session: Session, staging: _Staging) -> None:
    alive = session.execute(
        update(IngestedFile)
        .where(IngestedFile.id == staging.file_id, IngestedFile.state == "staging")
        .values(heartbeat_at=utcnow())
    )
    if not (isinstance(alive, CursorResult) and alive.rowcount == 1):
        raise InputError(
            f"the rows staged for dataset {staging.dataset!r} were removed while this file was read (the "
            f"import was judged abandoned: no sign of life for {IMPORT_STALE_S:g} s); nothing was stored",
            file=staging.file,
        )


def _publish(
    session: Session,
    staging: _Staging,
    sha: str,
    kind: str,
    top: float,
    target_id: int | None,
    declared: tuple[str, float | None] | None,
    label_kind: str | None,
) -> int:
    """Make the staged file visible in one transaction; returns the dataset id it now belongs to.

    A new dataset is the staging dataset renamed (O(1)); into an existing one the staged responses move with one
    UPDATE. On PostgreSQL the target row is locked (``FOR UPDATE``), and two ingests publishing into one new
    name are serialised by its unique index: the second finds the first's dataset and joins it if it fits."""
    assert staging.dataset_id is not None and staging.file_id is not None
    _renew(session, staging)
    name = staging.dataset

    def locked_target() -> Dataset | None:
        return session.scalars(select(Dataset).where(Dataset.name == name).with_for_update()).first()

    target = locked_target()
    if target is None:
        try:
            with session.begin_nested():
                session.execute(
                    update(Dataset)
                    .where(Dataset.id == staging.dataset_id)
                    .values(name=name, label_kind=kind, max_label=top, created_at=utcnow())
                )
        except IntegrityError:  # another ingest published this name first
            target = locked_target()
            if target is None:
                raise
    if target is None:
        dataset_id = staging.dataset_id
    else:
        session.refresh(target)
        if target.id != target_id:  # not the dataset the chunks were checked against
            _refuse_other_declared_kind(target, declared, label_kind, name)
            _refuse_other_staged_kind(target, staging)
        _refuse_same_file(session, target.id, sha, name, staging.file)
        responses = cast(Table, Response.__table__)
        try:
            with session.begin_nested():
                session.execute(
                    update(responses)
                    .where(responses.c.dataset_id == staging.dataset_id)
                    .values(dataset_id=target.id)
                )
        except IntegrityError as err:
            clash = _clashing_id(session, staging.dataset_id, target.id)
            if clash is None:
                raise
            raise InputError(
                f"id {clash!r} is already stored in dataset {name!r} (another ingest stored it while this file "
                "was read; ids must be unique within a dataset)",
                file=staging.file,
                field="id",
            ) from err
        session.execute(
            update(IngestedFile).where(IngestedFile.id == staging.file_id).values(dataset_id=target.id)
        )
        dataset_id = target.id
    session.execute(
        update(IngestedFile)
        .where(IngestedFile.id == staging.file_id)
        .values(
            state="published",
            owner=None,
            heartbeat_at=None,
            ingested_at=utcnow(),
            n_responses=staging.counts["responses"],
            n_sentences=staging.counts["sentences"],
        )
    )
    if dataset_id != staging.dataset_id:
        session.execute(delete(Dataset).where(Dataset.id == staging.dataset_id))
    return dataset_id


def _clashing_id(session: Session, staged_id: int, target_id: int) -> str | None:
    held = aliased(Response)
    return session.scalar(
        select(Response.external_id)
        .join(held, (held.dataset_id == target_id) & (held.external_id == Response.external_id))
        .where(Response.dataset_id == staged_id)
        .limit(1)
    )


def discard_staged(engine: Engine, dataset_id: int, *, chunk_size: int = CHUNK_RESPONSES) -> int:
    """Remove a staging dataset and its rows, ``chunk_size`` responses per short transaction (their sentences
    and labels go with them); returns the responses removed. Does nothing to a published dataset."""
    staged = staging_dataset_ids().where(IngestedFile.dataset_id == dataset_id)
    responses = cast(Table, Response.__table__)

    def work(session: Session) -> int:
        ids = list(
            session.scalars(
                select(responses.c.id)
                .where(responses.c.dataset_id == dataset_id, responses.c.dataset_id.in_(staged))
                .limit(chunk_size)
            )
        )
        if ids:
            session.execute(delete(responses).where(responses.c.id.in_(ids)))
        else:
            session.execute(delete(Dataset).where(Dataset.id == dataset_id, Dataset.id.in_(staged)))
        return len(ids)

    removed = 0
    while n := run_write(engine, work):
        removed += n
    return removed


def purge_abandoned_imports(engine: Engine, *, stale_after_s: float = IMPORT_STALE_S) -> int:
    """Remove the staged rows of ingests whose process died before publishing: its process is gone (same
    host) or it showed no sign of life for ``stale_after_s`` seconds (any host). Workers run this when they
    start, and so does ``fractal ingest``. Returns how many imports were removed."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    staged = run_read(
        engine,
        lambda s: s.execute(
            select(IngestedFile.dataset_id, IngestedFile.owner, IngestedFile.heartbeat_at).where(
                IngestedFile.state == "staging"
            )
        ).all(),
    )
    abandoned = [ds for ds, owner, beat in staged if owner_gone(owner) or beat is None or beat < cutoff]
    for dataset_id in abandoned:
        discard_staged(engine, dataset_id)
    return len(abandoned)


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


# (line, record, stored meta, labels as (value, source, annotator, time) or None, gold labels, split)
_Prepared = tuple[
    int, ResponseRecord, dict[str, Any], list[tuple[int, str, str, datetime] | None], int, str | None
]


def _prepare_chunk(
    chunk: Sequence[tuple[int, ResponseRecord]],
    file: str,
    default_split: str | None,
    source: str,
    annotator: str,
) -> list[_Prepared]:
    """Each record's stored meta, labels (value, source, annotator, time), gold count and split; no database."""
    prepared = []
    now = utcnow()
    for line, record in chunk:
        native_split = _native_split(record, file, line)
        labels: list[tuple[int, str, str, datetime] | None] = (
            [None if y is None else (int(y), source, annotator, now) for y in record.sentence_labels]
            if record.sentence_labels is not None
            else [None] * len(record.spans)
        )
        # The native block (labels, scores, provenance of another store) is regenerated by every export.
        meta = {k: v for k, v in record.meta.items() if k != NATIVE_KEY}
        n_gold = sum(1 for lab in labels if lab is not None and lab[1] in GOLD_SOURCES)
        prepared.append((line, record, meta, labels, n_gold, native_split or default_split))
    return prepared


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
