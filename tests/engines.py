"""The database engines the store's tests run on: SQLite always, PostgreSQL when ``FRACTAL_TEST_PG_URL`` is set.

``FRACTAL_TEST_PG_URL`` names a server where the tests may create and drop databases (a superuser URL, e.g.
the one ``.ci/pg_test_server.sh start`` prints); each test gets a fresh database of its own, dropped after.
Without the variable the PostgreSQL variants are skipped on a developer's machine, but fail when ``CI=true`` or
``FRACTAL_REQUIRE_PG=1``: in CI a missing server is an error, not a silent half-run.

A test that wants a store (not an empty database) gets a copy of one made once per test process by the library's
own path (``get_engine`` on an empty database runs every migration): a file copy on SQLite, ``CREATE DATABASE
... TEMPLATE`` on PostgreSQL. Migrating from scratch for each of several hundred tests was minutes of CI; the
migrations themselves are tested on empty databases (``database_url``) and by tests/db/test_schema.py.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
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


@functools.cache
def _sqlite_store_template() -> Path:
    """A store file at the newest revision, created by ``get_engine`` once per process (removed at exit)."""
    from db.engine import get_engine

    directory = Path(tempfile.mkdtemp(prefix="fractal-store-template-"))
    atexit.register(shutil.rmtree, directory, True)
    engine = get_engine(f"sqlite:///{directory / 'store.db'}")
    engine.dispose()  # closes every connection, which checkpoints the WAL into the file
    return directory / "store.db"


@functools.cache
def _pg_store_template(admin_url: str) -> str:
    """The name of a database at the newest revision on the test server, created by ``get_engine`` once per
    process and dropped at exit; new stores are copied from it (``CREATE DATABASE ... TEMPLATE``)."""
    from db.engine import get_engine

    name = f"fractal_template_{uuid.uuid4().hex[:12]}"
    _on_server(admin_url, f'CREATE DATABASE "{name}"')
    atexit.register(_drop_pg_database, admin_url, name)
    # A template must have no session open while it is copied: the engine is disposed at once.
    get_engine(make_url(admin_url).set(database=name).render_as_string(hide_password=False)).dispose()
    return name


def _on_server(admin_url: str, statement: str) -> None:
    """Run one statement on the test server outside a transaction (CREATE / DROP DATABASE)."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def _drop_pg_database(admin_url: str, name: str) -> None:
    """Drop ``name``, closing sessions left open on it."""
    _on_server(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_pg_database(*, store: bool = False) -> Iterator[str]:
    """Create an empty database on the test server (``store``: a copy of a store at the newest revision), yield
    its URL, drop it (closing leftover sessions)."""
    admin_url = pg_admin_url()
    name = f"fractal_test_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{_pg_store_template(admin_url)}"' if store else ""
    _on_server(admin_url, f'CREATE DATABASE "{name}"{template}')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _drop_pg_database(admin_url, name)


@contextmanager
def database_url(kind: str, directory: Path, *, store: bool = False) -> Iterator[str]:
    """A fresh, empty database URL of ``kind`` (``sqlite``: a file in ``directory``; ``postgresql``: a database);
    ``store``: holding an empty store at the newest revision (a copy of one ``get_engine`` created)."""
    if kind == "sqlite":
        path = directory / "fractal.db"
        if store:
            shutil.copyfile(_sqlite_store_template(), path)
        yield f"sqlite:///{path}"
    elif kind == "postgresql":
        with fresh_pg_database(store=store) as url:
            yield url
    else:
        raise ValueError(f"unknown engine kind {kind!r}")
