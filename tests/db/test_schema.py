from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from db.engine import StoreError, get_engine, resolve_url
from db.models import Base
from db.schema import SchemaOutdatedError, current_revision, head_revision, upgrade


def test_fresh_database_is_created_at_head_and_matches_the_models(db_url: str) -> None:
    engine = get_engine(db_url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
        if engine.dialect.name != "sqlite":
            return
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_older_revision_is_refused_with_the_upgrade_command(db_url: str) -> None:
    raw = get_engine(db_url, check_schema=False)
    upgrade(raw, "0001")
    assert "ix_response_scores_mv_uncertainty" not in {
        i["name"] for i in inspect(raw).get_indexes("response_scores")
    }
    with pytest.raises(SchemaOutdatedError) as err:
        get_engine(db_url)
    assert "fractal db upgrade --db " + db_url in str(err.value)
    assert "0001" in str(err.value)
    upgrade(raw)
    engine = get_engine(db_url)
    assert current_revision(engine) == head_revision()
    assert "ix_response_scores_mv_uncertainty" in {
        i["name"] for i in inspect(engine).get_indexes("response_scores")
    }


def test_default_database_message_has_the_bare_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRACTAL_DB_URL", raising=False)
    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path / "home"))
    upgrade(get_engine(None, check_schema=False), "0001")
    with pytest.raises(SchemaOutdatedError, match=r"upgrade it with: fractal db upgrade$"):
        get_engine()


def test_unknown_revision_and_foreign_tables_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    get_engine(url)
    raw = get_engine(url, check_schema=False)
    with raw.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaOutdatedError, match="newer version"):
        get_engine(url)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with get_engine(other, check_schema=False).begin() as conn:
        conn.execute(text("CREATE TABLE notes (id INTEGER)"))
    with pytest.raises(StoreError, match="is not a FRACTAL store: it has tables"):
        get_engine(other)


def test_url_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRACTAL_DB_URL", raising=False)
    monkeypatch.delenv("FRACTAL_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_url(None) == f"sqlite:///{tmp_path / '.fractal' / 'fractal.db'}"
    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path / "h"))
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'h' / 'fractal.db'}"
    monkeypatch.setenv("FRACTAL_DB_URL", "sqlite:///x.db")
    assert resolve_url(None) == "sqlite:///x.db"
    assert resolve_url("sqlite:///y.db") == "sqlite:///y.db"
    get_engine(None)
    assert not (tmp_path / "h" / "fractal.db").exists() and (tmp_path / "x.db").exists()
