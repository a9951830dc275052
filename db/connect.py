"""Connecting to a store: which URL, how SQLite is set up, and a one-line reason when a URL cannot be opened.

URL resolution (every CLI command's ``--db URL`` lands here): the ``url`` argument, else ``$FRACTAL_DB_URL``,
else a SQLite file at ``$FRACTAL_HOME/fractal.db`` with ``FRACTAL_HOME`` defaulting to ``./.fractal`` relative
to the current directory. PostgreSQL works through the same code with a URL such as
``postgresql+psycopg://user:password@host:5432/fractal`` (install the ``psycopg`` driver).

Opening (:func:`connect`): a URL that is not a database URL, names an unknown engine or a missing driver, a
SQLite path that is a directory, a device or not an SQLite file, or a server that cannot be reached raises
:class:`StoreError` (an :class:`~fractal_core.errors.InputError`: commands exit with code 2 and one line). A
password in a URL is never shown (:func:`shown_url`). A store is never created by accident: without
``create`` a SQLite file that does not exist is refused before anything touches the disk, and with it the
file's folder must already exist (only the default ``$FRACTAL_HOME`` is made when missing).

SQLite is configured for several annotators and a worker at once: WAL journal (readers never block the writer),
``foreign_keys=ON``, ``busy_timeout`` (a writer waits for the lock instead of failing), and write transactions
begin with ``BEGIN IMMEDIATE`` (:func:`writer`) so that a transaction never has to upgrade a read lock to a write
lock mid-way (the one case where SQLite fails at once with "database is locked" despite the busy timeout).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from fractal_core.errors import InputError

BUSY_TIMEOUT_MS = 30_000
_BEGIN_OPTION = "fractal_sqlite_begin"


class StoreError(InputError):
    """The store's URL cannot be opened as a FRACTAL store (the message is one line, without any password)."""


def default_home() -> Path:
    """The local data directory: ``$FRACTAL_HOME``, else ``./.fractal``."""
    return Path(os.environ.get("FRACTAL_HOME") or ".fractal")


def default_url() -> str:
    """The SQLite file used when neither ``--db`` nor ``$FRACTAL_DB_URL`` is given."""
    return f"sqlite:///{(default_home() / 'fractal.db').resolve()}"


def resolve_url(url: str | None = None) -> str:
    """The database URL to use: ``url``, else ``$FRACTAL_DB_URL``, else the default SQLite file."""
    if url:
        return url
    return os.environ.get("FRACTAL_DB_URL") or default_url()


def shown_url(url: str | URL) -> str:
    """``url`` as it may be printed: the password replaced by ``***`` (unparseable text is not echoed)."""
    try:
        return (make_url(url) if isinstance(url, str) else url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def create_command(url: str) -> str:
    """The command that creates a store at ``url``."""
    return "fractal db upgrade" if url == resolve_url(None) else f"fractal db upgrade --db {shown_url(url)}"


def _one_line(err: BaseException, parsed: URL) -> str:
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    line = text[0].strip() if text else type(err).__name__
    if parsed.password:  # drivers do not echo it, but a message must never carry it
        line = line.replace(str(parsed.password), "***")
    return line


def _sqlite_file(database: str, url: str, *, create: bool) -> Path | None:
    """Refuse a SQLite path that is not a store file (or, without ``create``, that does not exist)."""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    path = Path(database).expanduser()
    shown = shown_url(url)
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise StoreError(f"cannot open the store {shown}: {err.strerror or err}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise StoreError(f"cannot open the store {shown}: it is a directory, not an SQLite file")
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(
                f"cannot open the store {shown}: it is a device or special file, not an SQLite file"
            )
        return path
    if not create and not path.parent.is_dir():
        raise StoreError(f"no store at {shown}: the folder {path.parent} does not exist")
    if not create:
        raise StoreError(f"no store at {shown}: create one with `{create_command(url)}` (or `fractal serve`)")
    if not path.parent.exists() and url == default_url():
        path.parent.mkdir(parents=True, exist_ok=True)  # the default home is ours to make
    if not path.parent.is_dir():
        raise StoreError(
            f"cannot create the store {shown}: the folder {path.parent} does not exist (create it first)"
        )
    return path


def connect(url: str, *, create: bool = False) -> Engine:
    """An engine on ``url`` whose first connection succeeded; :class:`StoreError` (one line) otherwise.

    ``create``: a SQLite file that does not exist yet may be created (its folder must exist); without it such a
    path is refused and nothing is written.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            "not a database URL: use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/NAME"
        ) from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed.database or "", url, create=create)
        # One shared connection for an in-memory database, or every connection would see its own empty one.
        pool = (
            {"poolclass": StaticPool}
            if path is None and not (parsed.database or "").startswith("file:")
            else {}
        )
        kwargs.update(pool, connect_args={"check_same_thread": False})
    else:
        kwargs.update(pool_pre_ping=True)
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError:
        raise StoreError(
            f"cannot open the store {shown_url(parsed)}: unknown database kind {parsed.drivername!r} "
            "(use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/NAME)"
        ) from None
    except ImportError as err:
        raise StoreError(
            f"cannot open the store {shown_url(parsed)}: its driver is not installed ({err.name or err})"
        ) from None
    except (ArgumentError, TypeError, ValueError) as err:
        raise StoreError(f"cannot open the store {shown_url(parsed)}: {_one_line(err, parsed)}") from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except DBAPIError as err:
        engine.dispose()
        why = _one_line(err, parsed)
        if "file is not a database" in why:
            why = "not an SQLite database file"
        raise StoreError(f"cannot open the store {shown_url(parsed)}: {why}") from None
    return engine


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


def writer(engine: Engine) -> Engine:
    """The same engine, but its transactions take the write lock up front on SQLite (``BEGIN IMMEDIATE``)."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
