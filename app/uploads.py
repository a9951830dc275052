"""Upload handling for the Data page: keep the uploaded bytes, preview rows, ingest inline or as a job.

Validation and storage are the library's and the store's (``fractal_core.data.io``, ``db.ingest``); this module
only moves the uploaded bytes to a file and picks inline versus background work by size.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from app.jobs import queue_after_import
from app.render import md_escape
from app.settings import AppSettings
from db import repository as repo
from db.ingest import ingest_file
from db.rows import IngestSummary, JobRow
from fractal_core.data import extras, files, io, rows
from fractal_core.data.extras import ExtraColumns
from fractal_core.data.records import FIELDS, ResponseRecord
from fractal_core.data.validate import closest_field
from fractal_core.errors import InputError

INLINE_MAX_BYTES = 5_000_000
"""Files up to this size are ingested in the web process (a second or two); larger ones go to the worker."""

SCHEMA_FIELDS: dict[str, bool] = {
    "id": True,
    "context": False,
    "text": False,
    "sentences": False,
    "response_label": True,
    "aggregation": False,
    "sentence_labels": False,
}
"""Fields a CSV column can map to (True: required)."""

_ALIASES = {
    "id": ("id", "uid", "response_id", "example_id"),
    "context": ("context", "prompt", "question", "problem", "source", "document"),
    "text": ("text", "response", "answer", "completion", "output"),
    "sentences": ("sentences", "steps"),
    "response_label": ("response_label", "label", "y", "rating", "score", "verdict"),
    "aggregation": ("aggregation", "agg"),
    "sentence_labels": ("sentence_labels", "step_labels"),
}


def format_of(filename: str) -> str:
    """``jsonl`` / ``csv`` / ``parquet`` from the file name (:mod:`fractal_core.data.files`; the uploader only takes
    known suffixes, anything else is read as JSON Lines)."""
    return files.format_of(filename) or "jsonl"


def default_dataset_name(filename: str) -> str:
    """A valid dataset name derived from the file name (``[A-Za-z0-9._-]``, at most 64 characters)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename).stem).strip("-._") or "dataset"
    return stem[:64]


def save_upload(settings: AppSettings, filename: str, data: bytes) -> Path:
    """Write the uploaded bytes under FRACTAL_HOME/uploads (named by content hash, so re-uploads reuse it)."""
    folder = settings.home / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    suffix = files.FORMAT_SUFFIXES[format_of(filename)]
    path = folder / f"{digest}-{default_dataset_name(filename)}{suffix}"
    if not path.exists():
        files.atomic_write_bytes(path, data)
    return path


def discard(path: Path) -> None:
    """Delete a rejected upload: a file that failed validation is never imported, so it must not stay on disk."""
    path.unlink(missing_ok=True)


def file_columns(path: Path, fmt: str) -> list[str]:
    """Column names as the reader sees them (a CSV header, a Parquet schema, the keys of a JSONL file's first
    rows); empty when unreadable: the preview then reports the real error."""
    try:
        return rows.column_names(path, str(path), fmt)
    except InputError:
        return []


def csv_header(path: Path) -> list[str]:
    """Column names of a CSV file, stripped as the reader strips them (empty when unreadable)."""
    return file_columns(path, "csv")


EXTRA_CHOICES: dict[str, ExtraColumns] = {
    "keep them in each response's meta": "meta",
    "leave them out": "drop",
}
"""The upload form's choice for columns outside the schema (the first is the default)."""


def extra_columns(path: Path, fmt: str, column_map: dict[str, str] | None) -> list[str]:
    """The file's columns the reader treats as extra (not a field, or displaced by the column map)."""
    return extras.extra_columns(file_columns(path, fmt), column_map)


def extra_notes(names: list[str], fmt: str) -> list[str]:
    """Markdown-safe warnings about extra columns that probably should not be extra: a reserved meta key, a
    column displaced by the mapping, a near-miss of a field's name."""
    notes = []
    for name in names:
        shown = md_escape(name)
        if name in extras.RESERVED_META_KEYS:
            notes.append(
                f"'{shown}' cannot be kept in meta: meta.{shown} is reserved for "
                f"{extras.RESERVED_META_KEYS[name]}. Rename the column or leave extra columns out."
            )
        elif name in FIELDS:
            notes.append(f"'{shown}' is not read as the field {shown}: another column is mapped to it.")
        elif (close := closest_field(name)) is not None:
            fix = "map it above" if fmt == "csv" else "fix the name in the file"
            notes.append(f"'{shown}' looks like a misspelt '{close}': if it holds that field, {fix}.")
    return notes


def guess_column(field: str, header: list[str]) -> str | None:
    """The user's column that most likely holds ``field`` (exact name first, then common aliases)."""
    lower = {h.lower(): h for h in header}
    for alias in _ALIASES.get(field, (field,)):
        if alias in lower:
            return lower[alias]
    return None


MAX_LABEL_WORDS = 20
"""Distinct response-label values the upload form offers to map (a verdict column has a handful)."""


def label_words(path: Path, column: str | None) -> list[str] | None:
    """The distinct values of a CSV's response-label ``column`` when some are not numbers (words such as
    ``correct`` / ``wrong`` that the form maps to label values), in order of first appearance; None when every
    value is a number, the column is missing or unreadable, or it holds more than :data:`MAX_LABEL_WORDS`
    distinct values (then validation reports the first bad one with its line)."""
    if column is None:
        return None
    try:
        # Header cells are matched stripped, as the reader (and csv_header) names them.
        frame = pd.read_csv(
            path, usecols=lambda c: str(c).strip() == column, dtype=str, keep_default_na=False
        )
        values = frame.iloc[:, 0]
    except Exception:
        return None
    distinct = [str(v).strip() for v in pd.unique(values)]
    distinct = list(dict.fromkeys(distinct))
    if len(distinct) > MAX_LABEL_WORDS or all(_is_number(v) for v in distinct):
        return None
    return distinct


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def preview(
    path: Path,
    *,
    fmt: str,
    segment_mode: str,
    column_map: dict[str, str] | None,
    label_map: dict[str, float] | None = None,
    extra_columns: ExtraColumns = "refuse",
    limit: int = 5,
) -> list[ResponseRecord]:
    """The first ``limit`` records, validated and segmented exactly as ingest will (raises InputError)."""
    records = io.iter_records(
        path,
        format=fmt,  # type: ignore[arg-type]
        segment_mode=segment_mode,  # type: ignore[arg-type]
        column_map=column_map or None,
        label_map=label_map,
        extra_columns=extra_columns,
    )
    return [rec for _, rec in itertools.islice(records, limit)]


def describe_error(exc: InputError) -> str:
    """One Markdown-safe line for an input error: where (line, field) first, then why."""
    where = []
    if exc.line is not None:
        where.append(f"line {exc.line}")
    if exc.field is not None:
        where.append(f"field {exc.field}")
    prefix = ", ".join(where).capitalize() or "File"
    return md_escape(f"{prefix}: {exc.reason}")


def _options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v}


def import_now(engine: Engine, path: Path, dataset: str, options: dict[str, Any]) -> IngestSummary:
    """Ingest in this process (small files), then queue embedding (and re-scoring when there is a model)."""
    summary = ingest_file(engine, path, dataset, **_options(options))
    for dataset_id in summary.dataset_ids():  # one dataset per criterion for a file with several
        queue_after_import(engine, dataset_id)
    return summary


def queue_import(engine: Engine, path: Path, dataset: str, options: dict[str, Any]) -> JobRow:
    """Queue the ingest of a large file as a worker job (one job per file and dataset)."""
    payload = {"path": str(path), "dataset": dataset, **_options(options)}
    return repo.create_job(engine, "import", payload, idempotency_key=f"import:{dataset}:{path.name}")
