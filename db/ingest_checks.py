"""What an ingest reads and checks before it writes: the file's sha256 and size, splits, label kinds, the
refusals the store decides (the same file twice, a declared kind that does not fit), each chunk's rows."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import GOLD_SOURCES, Dataset, IngestedFile, utcnow
from fractal_core.data.extras import PROVENANCE_META_KEY
from fractal_core.data.records import ResponseRecord, kind_mismatch
from fractal_core.errors import InputError

NATIVE_KEY = PROVENANCE_META_KEY  # meta key of the provenance block written by the native export
_SPLIT_STEMS = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
_KIND_ORDER = {"binary": 0, "ordinal": 1}
SPLIT_CHARS = 32  # responses.split
_SPLIT_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{SPLIT_CHARS - 1}}}")


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
