"""The hidden staging dataset of one import: created and kept alive chunk by chunk, published in one short
transaction, or removed (a refused file, an import abandoned by a dead process)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from db.engine import run_read, run_write
from db.ingest_checks import (
    _check_fits,
    _combine_kind,
    _kind_error,
    _refuse_other_declared_kind,
    _refuse_same_file,
)
from db.jobs import owner_gone
from db.models import Dataset, IngestedFile, Response, utcnow
from db.repository import staging_dataset_ids
from fractal_core.data import io
from fractal_core.data.records import ResponseRecord
from fractal_core.errors import InputError

CHUNK_RESPONSES = 500
"""Records per write transaction: the longest another writer waits for an ingest (benchmarks/bench_ingest_lock.py)."""
STAGING_PREFIX = "~import-"  # staging datasets' names: no dataset name may start with "~"
IMPORT_STALE_S = 300.0
"""A staged import with no heartbeat (one per chunk) for this long is abandoned, whatever host it ran on."""


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
    # A criterion's dataset of a group (db.ingest_criteria); both None for an ordinary dataset.
    group: str | None = None
    criterion: str | None = None


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


def _absorb_chunk(
    staging: _Staging,
    chunk: list[tuple[int, ResponseRecord]],
    fixed: tuple[str, float] | None,
    declared: tuple[str, float | None] | None,
) -> None:
    """Check a chunk against the target's fixed kind (or the declared one) and fold its kind and highest level
    into ``staging``; raises InputError at the first record that does not fit."""
    dataset, file = staging.dataset, staging.file
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


def _final_kind(
    staging: _Staging, fixed: tuple[str, float] | None, declared: tuple[str, float | None] | None
) -> tuple[str, float]:
    """The kind and highest level the published dataset has: the target's, else declared or derived."""
    assert staging.kind is not None  # io raises on an empty file
    if fixed is not None:
        return fixed
    kind = declared[0] if declared is not None else staging.kind
    return kind, (max(staging.max_label, 1.0) if kind == "ordinal" else 1.0)


def _refuse_other_group(ds: Dataset, staging: _Staging) -> None:
    """A dataset of a group of criteria receives only files with every criterion of the group (so that its
    siblings keep the same responses), and an ordinary dataset never joins a group."""
    if (ds.criteria_group, ds.criterion) == (staging.group, staging.criterion):
        return
    if ds.criteria_group is not None:
        raise InputError(
            f"dataset {ds.name!r} is criterion {ds.criterion!r} of the group {ds.criteria_group!r}: ingest a file "
            f"with every criterion of the group into {ds.criteria_group!r} instead (its datasets share their "
            "responses)",
            file=staging.file,
            field="dataset",
        )
    raise InputError(
        f"dataset {ds.name!r} already exists outside any group of criteria; ingest this file under another "
        "name",
        file=staging.file,
        field="dataset",
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
                    .values(
                        name=name,
                        label_kind=kind,
                        max_label=top,
                        created_at=utcnow(),
                        criteria_group=staging.group,
                        criterion=staging.criterion,
                    )
                )
        except IntegrityError:  # another ingest published this name first
            target = locked_target()
            if target is None:
                raise
    if target is None:
        dataset_id = staging.dataset_id
    else:
        session.refresh(target)
        _refuse_other_group(target, staging)
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
