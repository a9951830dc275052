"""Datasets: create, look up and list them (with counts and label balance), and their gold target.

An ingest stages a file into a hidden dataset of its own (:mod:`db.ingest`); :func:`staging_dataset_ids` is the
one rule that hides them, so no reader lists, counts or opens a file that is not published yet."""

from __future__ import annotations

import re
from collections import defaultdict

from sqlalchemy import Engine, Select, case, func, select, update
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import Dataset, IngestedFile, Response
from db.rows import DatasetRow
from fractal_core.data.records import parse_label_kind as parse_label_kind
from fractal_core.errors import InputError

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_dataset_name(name: str) -> str:
    """Return ``name`` if it is 1-64 characters of letters, digits, ``.``, ``_``, ``-`` (not first)."""
    if not isinstance(name, str) or not _DATASET_NAME.match(name):
        raise InputError(
            f"invalid dataset name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="dataset",
        )
    return name


def staging_dataset_ids() -> Select[int]:
    """Ids of the hidden datasets files are being staged into: never listed, counted or opened by readers."""
    return select(IngestedFile.dataset_id).where(IngestedFile.state == "staging")


def _dataset_rows(session: Session, where: object | None = None) -> list[DatasetRow]:
    stats = (
        select(
            Response.dataset_id,
            func.count().label("n_responses"),
            func.coalesce(func.sum(Response.n_sentences), 0).label("n_sentences"),
            func.coalesce(func.sum(case((Response.n_gold > 0, 1), else_=0)), 0).label("n_gold_responses"),
        )
        .group_by(Response.dataset_id)
        .subquery()
    )
    q = (
        select(Dataset, stats.c.n_responses, stats.c.n_sentences, stats.c.n_gold_responses)
        .outerjoin(stats, stats.c.dataset_id == Dataset.id)
        .where(Dataset.id.not_in(staging_dataset_ids()))
    )
    if where is not None:
        q = q.where(where)  # type: ignore[arg-type]
    q = q.order_by(Dataset.name)
    found = session.execute(q).all()
    ids = [row[0].id for row in found]
    balance: dict[int, dict[str, int]] = defaultdict(dict)
    if ids:
        for dataset_id, label, count in session.execute(
            select(Response.dataset_id, Response.response_label, func.count())
            .where(Response.dataset_id.in_(ids))
            .group_by(Response.dataset_id, Response.response_label)
            .order_by(Response.dataset_id, Response.response_label)
        ):
            balance[dataset_id][_label_text(label)] = count
    return [
        DatasetRow(
            id=d.id,
            name=d.name,
            description=d.description,
            label_kind=d.label_kind,
            max_label=d.max_label,
            gold_target=d.gold_target,
            n_responses=n_resp or 0,
            n_sentences=int(n_sent or 0),
            n_gold_responses=int(n_gold or 0),
            label_balance=dict(balance[d.id]),
            active_model_version_id=d.active_model_version_id,
            created_at=d.created_at,
            criteria_group=d.criteria_group,
            criterion=d.criterion,
        )
        for d, n_resp, n_sent, n_gold in found
    ]


def _label_text(label: float | None) -> str:
    if label is None:  # responses of preference pairs without a label of their own
        return "none"
    return str(int(label)) if float(label).is_integer() else f"{label:g}"


def create_dataset(
    engine: Engine,
    name: str,
    *,
    label_kind: str = "binary",
    description: str = "",
    gold_target: float = 0.1,
) -> DatasetRow:
    """Create an empty dataset with a fixed label kind (see :func:`parse_label_kind`; ordinal needs its
    number of levels, ``ordinal:C``); InputError if the name is invalid or taken."""
    validate_dataset_name(name)
    kind, max_label = parse_label_kind(label_kind)
    if max_label is None:
        raise InputError("an empty ordinal dataset needs its number of levels: ordinal:C", field="label_kind")
    if not 0.0 < gold_target <= 1.0:
        raise InputError(f"gold target must be in (0, 1], got {gold_target}", field="gold_target")

    def work(session: Session) -> int:
        if session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
            raise InputError(f"dataset {name!r} already exists", field="dataset")
        dataset = Dataset(
            name=name, label_kind=kind, max_label=max_label, description=description, gold_target=gold_target
        )
        session.add(dataset)
        session.flush()
        return dataset.id

    dataset_id = run_write(engine, work)
    row = get_dataset(engine, dataset_id)
    assert row is not None
    return row


def get_dataset(engine: Engine, dataset: int | str) -> DatasetRow | None:
    """A dataset by id or by name, with counts; None if there is none."""
    where = Dataset.id == dataset if isinstance(dataset, int) else Dataset.name == dataset
    rows = run_read(engine, lambda s: _dataset_rows(s, where))
    return rows[0] if rows else None


def require_dataset(engine: Engine, dataset: int | str) -> DatasetRow:
    """Like :func:`get_dataset` but an InputError naming the known datasets when it does not exist."""
    row = get_dataset(engine, dataset)
    if row is None:
        names = ", ".join(d.name for d in list_datasets(engine)) or "none yet"
        raise InputError(f"no dataset {dataset!r} (datasets: {names})", field="dataset")
    return row


def list_datasets(engine: Engine) -> list[DatasetRow]:
    """All datasets by name, with response/sentence/gold counts and the response label balance."""
    return run_read(engine, _dataset_rows)


def criteria_siblings(engine: Engine, dataset_id: int) -> list[DatasetRow]:
    """The datasets of the group of criteria ``dataset_id`` belongs to (itself included), by criterion name;
    [] for an ordinary dataset."""

    def work(session: Session) -> list[DatasetRow]:
        group = session.scalar(select(Dataset.criteria_group).where(Dataset.id == dataset_id))
        if group is None:
            return []
        rows = _dataset_rows(session, Dataset.criteria_group == group)
        return sorted(rows, key=lambda r: r.criterion or "")

    return run_read(engine, work)


def set_gold_target(engine: Engine, dataset_id: int, fraction: float) -> None:
    """Set the dataset's gold budget target (fraction of responses, in (0, 1])."""
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"gold target must be in (0, 1], got {fraction}", field="gold_target")
    run_write(
        engine,
        lambda s: s.execute(update(Dataset).where(Dataset.id == dataset_id).values(gold_target=fraction)),
    )


def segment_modes(engine: Engine, dataset_id: int) -> list[str]:
    """How the files of the dataset's responses were segmented (``sentences`` / ``steps``), each mode once,
    sorted; empty when no response came from a file."""
    query = (
        select(IngestedFile.segment_mode)
        .where(IngestedFile.id.in_(select(Response.file_id).where(Response.dataset_id == dataset_id)))
        .distinct()
    )
    return sorted(run_read(engine, lambda s: list(s.scalars(query))))
