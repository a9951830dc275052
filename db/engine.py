"""Engine and transactions: the one transactional layer every write goes through.

URL resolution (every CLI command's ``--db URL`` lands here): the ``url`` argument, else ``$FRACTAL_DB_URL``,
else a SQLite file at ``$FRACTAL_HOME/fractal.db`` with ``FRACTAL_HOME`` defaulting to ``./.fractal`` relative
to the current directory. PostgreSQL works through the same code with a URL such as
``postgresql+psycopg://user:password@host:5432/fractal`` (install the ``psycopg`` driver).

SQLite is configured for several annotators and a worker at once: WAL journal (readers never block the writer),
``foreign_keys=ON``, ``busy_timeout`` (a writer waits for the lock instead of failing), and write transactions
begin with ``BEGIN IMMEDIATE`` so that a transaction never has to upgrade a read lock to a write lock mid-way
(the one case where SQLite fails at once with "database is locked" despite the busy timeout). What remains
(a lock held longer than the timeout) is retried with backoff by :func:`run_write`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
_BEGIN_OPTION = "fractal_sqlite_begin"


def default_home() -> Path:
    """The local data directory: ``$FRACTAL_HOME``, else ``./.fractal``."""
    return Path(os.environ.get("FRACTAL_HOME") or ".fractal")


def resolve_url(url: str | None = None) -> str:
    """The database URL to use: ``url``, else ``$FRACTAL_DB_URL``, else the default SQLite file."""
    if url:
        return url
    env = os.environ.get("FRACTAL_DB_URL")
    if env:
        return env
    return f"sqlite:///{(default_home() / 'fractal.db').resolve()}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself, so write transactions can be IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        # NORMAL is durable across application crashes in WAL mode; FULL only adds power-loss durability.
        cur.execute("PRAGMA synchronous = NORMAL")
        # Review-list pages jump between response rows in score order: reading them through a memory map and
        # a 32 MiB page cache (default 2 MiB) makes that ~2x faster at 100k responses (benchmarks/bench_db.py).
        cur.execute("PRAGMA mmap_size = 268435456")
        cur.execute("PRAGMA cache_size = -32768")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def get_engine(url: str | None = None, *, check_schema: bool = True) -> Engine:
    """Build the engine for ``url`` (see :func:`resolve_url`) and make sure its schema is current.

    A database without tables is created at the newest revision. A database at an older revision raises
    :class:`db.schema.SchemaOutdatedError` whose message holds the command ``fractal db upgrade``.
    ``check_schema=False`` skips both (used by the ``fractal db`` commands themselves).
    """
    resolved = resolve_url(url)
    parsed = make_url(resolved)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            # One shared connection, or every connection would see its own empty database.
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs.update(connect_args={"check_same_thread": False})
    else:
        kwargs.update(pool_pre_ping=True)
    engine = create_engine(resolved, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    if check_schema:
        from db.schema import ensure_schema  # schema imports this module

        ensure_schema(engine)
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine, but its transactions take the write lock up front on SQLite (``BEGIN IMMEDIATE``)."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


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
