"""Ingest of a file whose rows carry several criteria: one dataset per criterion (``GROUP.<criterion>``), all of
group ``GROUP``, each holding every response of the file with the same external id and the same sentences, and
the criterion's own response label, aggregation and sentence labels (source as for any ingest).

Each criterion's dataset is an ordinary dataset (label kind, gold queue, agreement, exports, models work
unchanged); ``datasets.criteria_group`` / ``datasets.criterion`` tie the siblings together. The ingest is the
staged ingest of :mod:`db.ingest` run for every criterion at once: each chunk is written into every criterion's
staging dataset in one write transaction, and one transaction publishes them all, so readers see the whole file
in every sibling or nothing. The refusal rules are those of any file, checked per criterion, plus: a criterion
name must fit in a dataset name, a group keeps its set of criteria, and neither an ordinary dataset nor a single
criterion's dataset receives the file alone (:func:`db.ingest_staging._refuse_other_group`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.ingest_checks import _prepare_chunk, _Prepared, _refuse_other_declared_kind, _refuse_same_file
from db.ingest_staging import (
    _absorb_chunk,
    _final_kind,
    _publish,
    _refuse_other_group,
    _stage,
    _Staging,
    discard_staged,
)
from db.ingest_write import _write_chunk
from db.models import Dataset
from db.rows import IngestSummary
from fractal_core.data.records import MAX_LABEL, ResponseRecord, criterion_view
from fractal_core.errors import InputError

GROUP_SEPARATOR = "."
"""Between a group's name and a criterion in its datasets' names (a character dataset names already allow)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class _CriteriaJob:
    """What :func:`db.ingest.ingest_file` has read and decided before the first chunk."""

    group: str
    file: str
    sha: str
    file_row: dict[str, Any]
    default_split: str | None
    source: str
    annotator: str
    declared: tuple[str, float | None] | None
    label_kind: str | None
    expected: int | None
    progress: Callable[[int, int | None], None] | None


def criterion_dataset(group: str, criterion: str) -> str:
    """The name of criterion ``criterion``'s dataset in group ``group``."""
    return f"{group}{GROUP_SEPARATOR}{criterion}"


def _names(job: _CriteriaJob, record: ResponseRecord, line: int) -> list[str]:
    assert record.criteria is not None
    names = list(record.criteria)
    for name in names:
        full = criterion_dataset(job.group, name)
        if not _NAME.fullmatch(name) or not _NAME.fullmatch(full):
            raise InputError(
                f"criterion {name!r} names a dataset of group {job.group!r} ({full!r}): use letters, digits, '.', "
                "'_' or '-' (starting with a letter or digit), 64 characters at most with the group's name",
                file=job.file,
                line=line,
                field="criteria",
            )
    return names


def _refuse_other_criteria(session: Session, job: _CriteriaJob, names: list[str], line: int) -> None:
    """A group keeps the criteria of its first file: every sibling must receive every response."""
    held = set(session.scalars(select(Dataset.criterion).where(Dataset.criteria_group == job.group)))
    if held and held != set(names):
        raise InputError(
            f"group {job.group!r} holds the criteria {', '.join(sorted(c for c in held if c))} but this file "
            f"declares {', '.join(names)}; every file of a group declares the same criteria",
            file=job.file,
            line=line or None,
            field="criteria",
        )


def _plan(
    session: Session, job: _CriteriaJob, names: list[str], line: int
) -> dict[str, tuple[int | None, tuple[str, float] | None]]:
    """For every criterion: its dataset's id and fixed kind when it exists (else the declared kind or None)."""
    _refuse_other_criteria(session, job, names, line)
    taken = session.scalars(select(Dataset).where(Dataset.name == job.group)).first()
    if taken is not None:
        where = (
            f" (criterion {taken.criterion!r} of group {taken.criteria_group!r})"
            if taken.criteria_group
            else ""
        )
        raise InputError(
            f"dataset {job.group!r}{where} exists; a file with several criteria makes a group of datasets "
            f"{criterion_dataset(job.group, '<criterion>')!r}: ingest it under the group's name or a new one",
            file=job.file,
            line=line,
            field="dataset",
        )
    plans: dict[str, tuple[int | None, tuple[str, float] | None]] = {}
    for name in names:
        full = criterion_dataset(job.group, name)
        ds = session.scalars(select(Dataset).where(Dataset.name == full)).first()
        if ds is None:
            declared = job.declared
            plans[name] = (None, (declared[0], declared[1]) if declared and declared[1] is not None else None)
            continue
        _refuse_other_group(ds, _Staging(dataset=full, file=job.file, group=job.group, criterion=name))
        _refuse_same_file(session, ds.id, job.sha, full, job.file)
        _refuse_other_declared_kind(ds, job.declared, job.label_kind, full)
        plans[name] = (ds.id, (ds.label_kind, ds.max_label))
    return plans


def ingest_criteria(
    engine: Engine,
    chunks: Iterable[list[tuple[int, ResponseRecord]]],
    job: _CriteriaJob,
    finish: Callable[[int, dict[str, int], tuple[str, ...], tuple[int, ...]], IngestSummary],
) -> IngestSummary:
    """Store every chunk's records in every criterion's dataset of ``job.group``: all or nothing (InputError
    naming file, line and field; staged rows removed)."""
    chunks = iter(chunks)
    first = next(chunks)
    first_line = first[0][0]
    names = _names(job, first[0][1], first_line)
    plans = run_read(engine, lambda s: _plan(s, job, names, first_line))
    kinds = {  # the staging datasets' kinds: the target's, else every level allowed until the file is read
        name: fixed
        if fixed is not None
        else (job.declared[0] if job.declared is not None else "ordinal", float(MAX_LABEL))
        for name, (_, fixed) in plans.items()
    }
    stagings = {
        n: _Staging(dataset=criterion_dataset(job.group, n), file=job.file, group=job.group, criterion=n)
        for n in names
    }

    def write(
        session: Session, rows: dict[str, list[_Prepared]]
    ) -> dict[str, tuple[int, int, dict[str, int]]]:
        out = {}
        for name, staging in stagings.items():
            ds_id, file_id = _stage(session, staging, kinds[name], job.file_row)
            out[name] = (ds_id, file_id, _write_chunk(session, staging, ds_id, file_id, rows[name]))
        return out

    try:
        for chunk in itertools.chain([first], chunks):
            rows: dict[str, list[_Prepared]] = {}
            for name, staging in stagings.items():
                view = [(line, criterion_view(record, name)) for line, record in chunk]
                _absorb_chunk(staging, view, plans[name][1], job.declared)
                rows[name] = _prepare_chunk(view, job.file, job.default_split, job.source, job.annotator)
            written = run_write(engine, functools.partial(write, rows=rows))
            for name, (ds_id, file_id, counts) in written.items():
                staging = stagings[name]
                staging.dataset_id, staging.file_id = ds_id, file_id
                for key, value in counts.items():
                    staging.counts[key] += value
            if job.progress is not None:
                job.progress(stagings[names[0]].counts["responses"], job.expected)
        finals = {
            name: _final_kind(staging, plans[name][1], job.declared) for name, staging in stagings.items()
        }

        def publish(session: Session) -> list[int]:
            ids = [
                _publish(
                    session, staging, job.sha, *finals[name], plans[name][0], job.declared, job.label_kind
                )
                for name, staging in stagings.items()
            ]
            _refuse_other_criteria(session, job, list(stagings), 0)  # nobody changed the group meanwhile
            return ids

        dataset_ids = run_write(engine, publish)
    except BaseException:
        for staging in stagings.values():
            if staging.dataset_id is not None:
                with contextlib.suppress(Exception):
                    discard_staged(engine, staging.dataset_id)
        raise
    counts = {
        "responses": stagings[names[0]].counts["responses"],
        "sentences": stagings[names[0]].counts["sentences"],
        "labels": sum(s.counts["labels"] for s in stagings.values()),
    }
    return finish(dataset_ids[0], counts, tuple(s.dataset for s in stagings.values()), tuple(dataset_ids))
