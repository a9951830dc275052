from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from db.cli import register
from db.engine import get_engine
from db.schema import head_revision, upgrade
from tests.db.conftest import make_rows, processbench_valid, write_jsonl


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def run(cli: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_ingest_export_and_db_commands(cli: typer.Typer, store_url: str, tmp_path: Path) -> None:
    code, out, _ = run(cli, "ingest", processbench_valid(), "--dataset", "pb", "--db", store_url)
    assert code == 0 and "ingested 352 responses, 2710 sentences" in out
    code, out, _ = run(
        cli, "export", tmp_path / "pb.jsonl", "--dataset", "pb", "--format", "kto", "--db", store_url
    )
    assert code == 0 and "wrote 352 rows" in out
    assert len((tmp_path / "pb.jsonl").read_text().splitlines()) == 352
    code, out, _ = run(cli, "db", "datasets", "--db", store_url)
    assert code == 0 and out.startswith("pb: 352 responses, 2710 sentences, binary labels (0: 118, 1: 234)")
    code, out, _ = run(cli, "db", "current", "--db", store_url)
    assert code == 0 and "up to date" in out


def test_store_url_from_the_environment(
    cli: typer.Typer, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRACTAL_DB_URL", store_url)
    code, _, _ = run(cli, "ingest", write_jsonl(tmp_path / "a.jsonl", make_rows(3)), "--dataset", "env")
    assert code == 0
    assert "env: 3 responses" in run(cli, "db", "datasets")[1]


def test_bad_input_exits_2_with_one_line(cli: typer.Typer, store_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(make_rows(1)[0]) + "\n{nope\n")
    code, out, err = run(cli, "ingest", bad, "--dataset", "x", "--db", store_url)
    assert code == 2 and out == ""
    assert (
        err.strip().splitlines()[-1]
        == f"error: {bad}:2: invalid JSON: Expecting property name enclosed in double quotes at column 2"
    )
    code, _, err = run(
        cli, "export", tmp_path / "o.jsonl", "--dataset", "missing", "--format", "native", "--db", store_url
    )
    assert code == 2 and "no dataset 'missing'" in err
    code, _, err = run(cli, "ingest", bad, "--dataset", "x", "--format", "xml", "--db", store_url)
    assert code == 2 and "unknown format 'xml'" in err


def test_outdated_database_is_refused_then_upgraded(cli: typer.Typer, db_url: str, tmp_path: Path) -> None:
    upgrade(get_engine(db_url, check_schema=False), "0001")
    code, _, err = run(cli, "db", "datasets", "--db", db_url)
    assert code == 1 and f"fractal db upgrade --db {db_url}" in err
    assert "outdated" in run(cli, "db", "current", "--db", db_url)[1]
    code, out, _ = run(cli, "db", "upgrade", "--db", db_url)
    assert code == 0 and f"0001 -> {head_revision()}" in out
    assert run(cli, "db", "datasets", "--db", db_url)[0] == 0
