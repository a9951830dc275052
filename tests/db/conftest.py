"""Fixtures for the store's tests: a fresh store per test on each engine (SQLite file, PostgreSQL database; see
:mod:`tests.engines`) and small files in the shared schema."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select, text

from db.engine import get_engine
from db.models import Base
from tests.engines import ENGINES, database_url
from tests.shared_data import shared


def processbench_valid() -> Path:
    """ProcessBench's validation split (skips the test when the shared datasets are absent)."""
    return shared("processbench") / "valid.jsonl"


def delucionqa_valid() -> Path:
    """DelucionQA's validation split (skips the test when the shared datasets are absent)."""
    return shared("delucionqa") / "valid.jsonl"


def make_rows(n: int, *, prefix: str = "r", labelled_every: int = 3) -> list[dict[str, Any]]:
    """``n`` small max-bags: 2-4 sentences, label 1 for odd i (sentence labels on every third response)."""
    rows = []
    for i in range(n):
        k = 2 + i % 3
        sentences = [f"Step {j} of answer {i} is here." for j in range(k)]
        label = i % 2
        row: dict[str, Any] = {
            "id": f"{prefix}{i}",
            "context": f"Question {i}?",
            "sentences": sentences,
            "response_label": label,
            "aggregation": "max",
            "task": "unit",
            "meta": {"n": i},
        }
        if i % labelled_every == 0:
            row["sentence_labels"] = [0] * (k - 1) + [label]
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def db_file_digest(engine: Engine) -> str:
    """sha256 of the database file after closing every connection (which checkpoints the WAL into it)."""
    engine.dispose()
    database = engine.url.database
    assert database
    wal = Path(database + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "WAL not checkpointed"
    return hashlib.sha256(Path(database).read_bytes()).hexdigest()


def store_digest(engine: Engine, *, logical: bool = False) -> str:
    """A digest of everything the store holds: on SQLite the file's bytes; on PostgreSQL (or with
    ``logical=True``, when other engines on the file may still be open) every row of every table in key order
    plus the list of tables, so a refused input must leave the store exactly as it was."""
    if engine.dialect.name == "sqlite" and not logical:
        return db_file_digest(engine)
    digest = hashlib.sha256()
    with engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
        digest.update(repr(tables).encode())
        for name in tables:
            table = Base.metadata.tables.get(name)
            if table is None:  # alembic_version
                rows = conn.execute(text(f"SELECT * FROM {name}")).all()
            else:
                rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            digest.update(f"{name}:{sorted(map(repr, rows))}".encode())
    engine.dispose()
    return digest.hexdigest()


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database; already holding an empty store when the test also uses ``store_url`` or ``engine``
    (which would create one in it): a copy of a store migrated once per process (see :mod:`tests.engines`)."""
    store = not {"store_url", "engine"}.isdisjoint(request.fixturenames)
    with database_url(request.param, tmp_path, store=store) as url:
        yield url


@pytest.fixture
def store_url(db_url: str) -> str:
    """``db_url`` with an empty store created in it: commands other than ``fractal db upgrade`` and ``fractal
    serve`` refuse a store that does not exist."""
    get_engine(db_url).dispose()
    return db_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = get_engine(db_url)
    yield eng
    eng.dispose()
