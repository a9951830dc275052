"""Engine and transactions: the one transactional layer every write goes through.

:func:`get_engine` opens a store (:mod:`db.connect`: which URL, SQLite's set-up, a one-line
:class:`~db.connect.StoreError` when the URL cannot be opened) and checks its schema (:mod:`db.schema`).
Lock contention that outlasts SQLite's busy timeout is retried with backoff by :func:`run_write`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from db.connect import (
    BUSY_TIMEOUT_MS,
    StoreError,
    connect,
    default_home,
    resolve_url,
    shown_url,
    writer,
)
from db.schema import ensure_schema

__all__ = [
    "BUSY_TIMEOUT_MS",
    "StoreError",
    "default_home",
    "get_engine",
    "is_retryable",
    "resolve_url",
    "run_read",
    "run_write",
    "session_scope",
    "writer",
]

T = TypeVar("T")


def get_engine(url: str | None = None, *, check_schema: bool = True, create: bool = True) -> Engine:
    """Open the store at ``url`` (see :func:`db.connect.resolve_url`) and make sure its schema is current.

    ``create=True`` (library default): a new SQLite file (in an existing folder) or a database without tables
    is created at the newest revision. ``create=False`` (every ``fractal`` command but ``db upgrade`` and
    ``serve``): a store that does not exist yet raises :class:`StoreError` naming the command that creates one,
    and nothing is written. A database at an older revision raises :class:`db.schema.SchemaOutdatedError` whose
    message holds ``fractal db upgrade``. ``check_schema=False`` skips the schema (the ``fractal db`` commands).
    """
    resolved = resolve_url(url)
    engine = connect(resolved, create=create)
    if check_schema:
        try:
            ensure_schema(engine, create=create)
        except DBAPIError as err:  # e.g. a read-only or full disk while the schema is created
            engine.dispose()
            why = str(err.orig).strip().splitlines()[0] if str(err.orig).strip() else type(err.orig).__name__
            raise StoreError(f"cannot open the store {shown_url(engine.url)}: {why}") from None
        except BaseException:
            engine.dispose()
            raise
    return engine


@contextmanager
def session_scope(engine: Engine, *, write: bool = True) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back if it raises.

    ``write=True`` takes SQLite's write lock when the transaction begins; use ``write=False`` for reads so
    they never wait for a writer. ``expire_on_commit=False`` keeps loaded values readable after the commit,
    but callers should still return plain rows (:mod:`db.rows`), never ORM objects.
    """
    session = Session(writer(engine) if write else engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_retryable(exc: BaseException) -> bool:
    """True for lock contention the caller should never see: SQLite busy/locked, PostgreSQL
    serialization failures and deadlocks."""
    if isinstance(exc, OperationalError):
        msg = str(exc.orig).lower()
        if "database is locked" in msg or "database is busy" in msg or "database table is locked" in msg:
            return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return code in ("40001", "40P01")
    return False


def run_write(engine: Engine, fn: Callable[[Session], T], *, attempts: int = 8) -> T:
    """Run ``fn(session)`` in one write transaction, retrying lock contention with jittered backoff.

    ``fn`` may run more than once, so it must only touch the database through its session.
    """
    for attempt in range(attempts):
        try:
            with session_scope(engine, write=True) as session:
                return fn(session)
        except DBAPIError as exc:
            if attempt == attempts - 1 or not is_retryable(exc):
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def run_read(engine: Engine, fn: Callable[[Session], T]) -> T:
    """Run ``fn(session)`` in a read transaction (never takes SQLite's write lock)."""
    with session_scope(engine, write=False) as session:
        return fn(session)
