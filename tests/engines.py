"""The database engines the store's tests run on: SQLite always, PostgreSQL when ``FRACTAL_TEST_PG_URL`` is set.

``FRACTAL_TEST_PG_URL`` names a server where the tests may create and drop databases (a superuser URL, e.g.
the one ``.ci/pg_test_server.sh start`` prints); each test gets a fresh database of its own, dropped after.
Without the variable the PostgreSQL variants are skipped on a developer's machine, but fail when ``CI=true`` or
``FRACTAL_REQUIRE_PG=1``: in CI a missing server is an error, not a silent half-run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ENGINES = ("sqlite", "postgresql")
PG_URL_ENV = "FRACTAL_TEST_PG_URL"


def pg_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("FRACTAL_REQUIRE_PG") == "1"


def pg_admin_url() -> str:
    """The server URL, or skip (fail in CI) when there is none."""
    url = os.environ.get(PG_URL_ENV)
    if url:
        return url
    msg = f"{PG_URL_ENV} is not set (start a server with .ci/pg_test_server.sh start)"
    if pg_required():
        pytest.fail(f"PostgreSQL is required here (CI=true or FRACTAL_REQUIRE_PG=1) but {msg}", pytrace=False)
    pytest.skip(msg)


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """Create an empty database on the test server, yield its URL, drop it (closing leftover sessions)."""
    admin_url = pg_admin_url()
    name = f"fractal_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def database_url(kind: str, directory: Path) -> Iterator[str]:
    """A fresh, empty store URL of ``kind`` (``sqlite``: a file in ``directory``; ``postgresql``: a database)."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'fractal.db'}"
    elif kind == "postgresql":
        with fresh_pg_database() as url:
            yield url
    else:
        raise ValueError(f"unknown engine kind {kind!r}")
