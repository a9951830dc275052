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
only its ``split`` is kept, and the block is dropped from ``meta`` (every export writes it afresh). Columns
outside the schema are refused unless the caller keeps them in ``meta`` or leaves them out
(``extra_columns``); a column can never write that block (:mod:`fractal_core.data.extras`).

This module runs an ingest; its parts live next to it: :mod:`db.ingest_checks` (what is read and checked
before anything is written), :mod:`db.ingest_staging` (the staging dataset: created, published, removed) and
:mod:`db.ingest_write` (one chunk's inserts). Their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.ingest_checks import (
    NATIVE_KEY,
    SPLIT_CHARS,
    _chunks,
    _expected_records,
    _prepare_chunk,
    _Prepared,
    _refuse_other_declared_kind,
    _refuse_same_file,
    _split_of,
    check_split_name,
    file_sha256,
)
from db.ingest_criteria import _CriteriaJob, ingest_criteria
from db.ingest_staging import (
    CHUNK_RESPONSES,
    IMPORT_STALE_S,
    STAGING_PREFIX,
    _absorb_chunk,
    _final_kind,
    _publish,
    _refuse_other_group,
    _stage,
    _Staging,
    discard_staged,
    purge_abandoned_imports,
)
from db.ingest_write import _write_chunk
from db.jobs import process_owner
from db.models import Dataset
from db.repository import parse_label_kind, validate_dataset_name
from db.rows import IngestSummary
from db.sources import IMPORTED, IMPORTED_GOLD
from fractal_core.data import io
from fractal_core.data.extras import ExtraColumns, check_mode
from fractal_core.data.files import require_format
from fractal_core.data.records import MAX_LABEL
from fractal_core.data.segment import SEGMENTER_VERSION
from fractal_core.errors import InputError

__all__ = [
    "ANNOTATOR_CHARS",
    "CHUNK_RESPONSES",
    "IMPORT_STALE_S",
    "NATIVE_KEY",
    "SPLIT_CHARS",
    "STAGING_PREFIX",
    "IngestSummary",
    "ProgressCallback",
    "check_split_name",
    "discard_staged",
    "file_sha256",
    "ingest_file",
    "purge_abandoned_imports",
]

ProgressCallback = Callable[[int, int | None], None]  # (records done, records expected or None)
ANNOTATOR_CHARS = 128  # label_events.annotator


def ingest_file(
    engine: Engine,
    path: str | Path,
    dataset: str,
    *,
    format: Literal["jsonl", "csv", "parquet"] | None = None,
    segment_mode: Literal["sentences", "steps"] = "sentences",
    column_map: Mapping[str, str] | None = None,
    label_map: Mapping[str, float] | None = None,
    extra_columns: ExtraColumns = "refuse",
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
        extra_columns: columns outside the schema: ``refuse`` the file (default), keep them in each
            response's ``meta``, or ``drop`` them (:mod:`fractal_core.data.extras`); the summary names them.
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
    check_mode(extra_columns)
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
        if (
            ds is None
            and session.scalars(select(Dataset.id).where(Dataset.criteria_group == dataset)).first()
        ):
            raise InputError(
                f"{dataset!r} is a group of criteria (one dataset per criterion): a file with one label per "
                "response goes into a dataset of its own name",
                file=file,
                field="dataset",
            )
        if ds is None:
            if declared is not None and declared[1] is not None:
                return None, (declared[0], declared[1])
            return None, None
        _refuse_other_group(ds, _Staging(dataset=dataset, file=file))
        _refuse_same_file(session, ds.id, sha, dataset, file)
        _refuse_other_declared_kind(ds, declared, label_kind, dataset)
        return ds.id, (ds.label_kind, ds.max_label)

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
    seen_extras: set[str] = set()
    records = io.iter_records(
        path,
        format=format,
        segment_mode=segment_mode,
        column_map=column_map,
        label_map=label_map,
        max_field_chars=max_field_chars,
        extra_columns=extra_columns,
        seen_extras=seen_extras,
    )

    def finish(
        dataset_id: int,
        counts: dict[str, int],
        datasets: tuple[str, ...] = (),
        dataset_ids: tuple[int, ...] = (),
    ) -> IngestSummary:
        return IngestSummary(
            dataset_id=dataset_id,
            dataset=dataset,
            file=file,
            sha256=sha,
            format=fmt,
            n_responses=counts["responses"],
            n_sentences=counts["sentences"],
            n_labels=counts["labels"],
            labels_source=source,
            seconds=time.perf_counter() - started,
            extra_columns=tuple(sorted(seen_extras)),
            extras_mode=extra_columns,
            criteria_datasets=datasets,
            criteria_dataset_ids=dataset_ids,
        )

    chunks = _chunks(records, chunk_size)
    first = next(chunks)  # io raises on an empty file
    if first[0][1].criteria is not None:  # rows share their criteria (io.iter_records checks it)
        return ingest_criteria(
            engine,
            itertools.chain([first], chunks),
            _CriteriaJob(
                group=dataset,
                file=file,
                sha=sha,
                file_row=file_row,
                default_split=default_split,
                source=source,
                annotator=annotator,
                declared=declared,
                label_kind=label_kind,
                expected=expected,
                progress=progress,
            ),
            finish,
        )
    target_id, fixed = run_read(engine, plan)
    staging = _Staging(dataset=dataset, file=file)
    if fixed is not None:
        staging_kind = fixed
    else:  # levels unknown until the whole file is read: the staging dataset allows every level meanwhile
        staging_kind = (declared[0] if declared is not None else "ordinal", float(MAX_LABEL))
    try:
        for chunk in itertools.chain([first], chunks):
            _absorb_chunk(staging, chunk, fixed, declared)
            rows = _prepare_chunk(chunk, file, default_split, source, annotator)

            def write(session: Session, rows: list[_Prepared] = rows) -> tuple[int, int, dict[str, int]]:
                ds_id, file_id = _stage(session, staging, staging_kind, file_row)
                return ds_id, file_id, _write_chunk(session, staging, ds_id, file_id, rows)

            staging.dataset_id, staging.file_id, written = run_write(engine, write)
            for key, value in written.items():
                staging.counts[key] += value
            if progress is not None:
                progress(staging.counts["responses"], expected)
        kind, top = _final_kind(staging, fixed, declared)

        def publish(session: Session) -> int:
            return _publish(session, staging, sha, kind, top, target_id, declared, label_kind)

        dataset_id = run_write(engine, publish)
    except BaseException:
        if staging.dataset_id is not None:
            # If removing fails too (the database went away), the next worker or ingest removes what is left.
            with contextlib.suppress(Exception):
                discard_staged(engine, staging.dataset_id)
        raise
    return finish(dataset_id, staging.counts)
