"""Extra columns through the staged ingest and ``fractal ingest --extra-columns`` (both engines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from sqlalchemy import Engine
from typer.testing import CliRunner

from db import repository as repo
from db.cli import register
from db.export import export_dataset
from db.ingest import ingest_file
from fractal_core.errors import InputError
from tests.db.conftest import store_digest

CSV = (
    "id,text,response_label,model,notes\na,Hi. There.,1,gpt-x,ok\nb,Yo.,0,gpt-y,\nc,So. Fine.,0,gpt-x,late\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def stored_meta(engine: Engine, dataset_id: int) -> dict[str, dict]:
    return {r.id: r.meta for r in repo.load_records(engine, dataset_id, include_imported=True)}


def test_ingest_keeps_extras_in_meta_and_names_them(engine: Engine, tmp_path: Path) -> None:
    summary = ingest_file(engine, write(tmp_path / "in.csv", CSV), "kept", extra_columns="meta", chunk_size=2)
    assert (summary.n_responses, summary.extra_columns, summary.extras_mode) == (
        3,
        ("model", "notes"),
        "meta",
    )
    assert summary.extras_note() == "kept in meta: model, notes"
    assert stored_meta(engine, summary.dataset_id) == {
        "a": {"model": "gpt-x", "notes": "ok"},
        "b": {"model": "gpt-y"},
        "c": {"model": "gpt-x", "notes": "late"},
    }
    # Kept values travel with the native export, under their own names next to the provenance block.
    out = tmp_path / "out.jsonl"
    export_dataset(engine, summary.dataset_id, out, format="native")
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first["meta"]["model"] == "gpt-x" and "fractal" in first["meta"]


def test_ingest_drops_extras_and_names_them(engine: Engine, tmp_path: Path) -> None:
    summary = ingest_file(engine, write(tmp_path / "in.csv", CSV), "dropped", extra_columns="drop")
    assert summary.extras_note() == "left out: model, notes"
    assert stored_meta(engine, summary.dataset_id) == {"a": {}, "b": {}, "c": {}}


def test_ingest_refuses_extras_by_default_and_stores_nothing(engine: Engine, tmp_path: Path) -> None:
    before = store_digest(engine, logical=True)
    with pytest.raises(InputError) as info:
        ingest_file(engine, write(tmp_path / "in.csv", CSV), "refused")
    assert (info.value.line, info.value.field) == (2, "model")
    assert store_digest(engine, logical=True) == before


def test_a_reserved_column_cannot_set_the_split_and_stores_nothing(engine: Engine, tmp_path: Path) -> None:
    # meta.fractal.split of a native export is read on ingest: a column must not be able to forge it.
    rows = [
        {"id": "a", "text": "Hi.", "response_label": 0},
        {"id": "b", "text": "Yo.", "response_label": 1, "fractal": {"split": "test"}},
    ]
    path = write(tmp_path / "in.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    before = store_digest(engine, logical=True)
    with pytest.raises(InputError) as info:
        ingest_file(engine, path, "forged", extra_columns="meta", chunk_size=1)
    assert (info.value.line, info.value.field) == (2, "fractal") and "reserved" in info.value.reason
    assert store_digest(engine, logical=True) == before
    summary = ingest_file(engine, path, "forged", extra_columns="drop")
    assert repo.list_responses(engine, summary.dataset_id, split="test").total == 0


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def run(cli: typer.Typer, *args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_extra_columns(cli: typer.Typer, store_url: str, tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", CSV)
    code, out, err = run(cli, "ingest", path, "--dataset", "x", "--db", store_url)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith(f"error: {path}:2:model: unknown field")
    code, out, err = run(cli, "ingest", path, "--dataset", "x", "--extra-columns", "keep", "--db", store_url)
    assert code == 2 and "--extra-columns: unknown extra-columns mode 'keep'" in err
    code, out, _ = run(cli, "ingest", path, "--dataset", "x", "--extra-columns", "meta", "--db", store_url)
    assert code == 0 and "ingested 3 responses" in out and "extra columns kept in meta: model, notes" in out
    # A JSONL typo still fails under the default, with file, line and field.
    typo = tmp_path / "typo.jsonl"
    typo.write_text(
        json.dumps({"id": "t", "sentences": ["x."], "response_label": 1, "sentencelabels": [1]}) + "\n"
    )
    code, _, err = run(cli, "ingest", typo, "--dataset", "y", "--db", store_url)
    assert (
        code == 2 and f"error: {typo}:1:sentencelabels: unknown field (did you mean `sentence_labels`?" in err
    )
    code, out, _ = run(cli, "ingest", typo, "--dataset", "y", "--extra-columns", "drop", "--db", store_url)
    assert code == 0 and "extra columns left out: sentencelabels" in out
