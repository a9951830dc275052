"""Schema versions: Alembic revisions shipped inside the package (``db/migrations``).

:func:`ensure_schema` creates a fresh database at head and refuses an outdated one with the exact upgrade
command; :func:`upgrade` is what ``fractal db upgrade`` runs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

from db.connect import StoreError, create_command, resolve_url, shown_url, writer

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SchemaOutdatedError(RuntimeError):
    """The database's schema revision is not the one this code expects."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest revision id this code ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The database's revision, or None when it has never been migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_command(engine: Engine) -> str:
    """The exact command a user runs to upgrade this database."""
    url = engine.url.render_as_string(hide_password=True)
    default = resolve_url(None)
    return "fractal db upgrade" if url == default else f"fractal db upgrade --db {url}"


@contextmanager
def migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in one write transaction for migrations (SQLite: holding the write lock).

    SQLite alters a table by copying it and dropping the original; with ``foreign_keys=ON`` that drop would
    cascade into every child table. So foreign keys are off for the migration (the pragma only works outside a
    transaction) and checked in full before it commits.
    """
    with writer(engine).connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                yield conn
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        raise RuntimeError(f"migration left a broken foreign key: {tuple(broken)}")
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` in one transaction (SQLite: holding the write lock)."""
    with migrating(engine) as conn:
        command.upgrade(alembic_config(conn), revision)


def require_store(engine: Engine) -> None:
    """Raise :class:`~db.connect.StoreError` (naming the command that creates one) for an empty database."""
    if current_revision(engine) is None and not inspect(engine).get_table_names():
        url = engine.url.render_as_string(hide_password=False)
        raise StoreError(
            f"no store at {shown_url(engine.url)} (an empty database): create one with `{create_command(url)}`"
        )


def ensure_schema(engine: Engine, *, create: bool = True) -> None:
    """Create an empty database at head (only with ``create``: else :class:`~db.connect.StoreError` naming the
    command that does); raise :class:`SchemaOutdatedError` unless it is at head."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if current is None and not create:
        require_store(engine)
    if current is None:
        with migrating(engine) as conn:
            # Re-check under the write lock: another process may have created it meanwhile.
            if MigrationContext.configure(conn).get_current_revision() is None:
                tables = set(inspect(conn).get_table_names())
                if tables:
                    raise StoreError(
                        f"{shown_url(engine.url)} is not a FRACTAL store: it has tables "
                        f"({', '.join(sorted(tables)[:5])}) but no FRACTAL schema version; "
                        "point --db at a FRACTAL store or an empty database"
                    )
                command.upgrade(alembic_config(conn), "head")
        return
    if current in _known_revisions():
        raise SchemaOutdatedError(
            f"database schema is at revision {current}, this version of FRACTAL Studio needs {head}; "
            f"upgrade it with: {upgrade_command(engine)}"
        )
    raise SchemaOutdatedError(
        f"database schema revision {current} is unknown to this version of FRACTAL Studio (head {head}); "
        "it was written by a newer version: upgrade FRACTAL Studio"
    )
