"""``fractal segments merge|split|undo``: exit 0 and one line on success; bad input one line, exit 2, nothing
written (both engines)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from sqlalchemy import Engine
from typer.testing import CliRunner

from db import repository as repo
from db.ingest import ingest_file
from db.integrity import check_store
from db.segments_cli import register
from tests.db.conftest import store_digest, write_jsonl

ROW = {
    "id": "x1",
    "sentences": ["One two.", "Three four five.", "Six."],
    "response_label": 0,
    "aggregation": "max",
}


def _invoke(engine: Engine, *args: str) -> tuple[int, str]:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a group needs a sibling for typer to keep the name
    url = engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(app, ["segments", *args, "--store", url])
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture
def rid(engine: Engine, tmp_path: Path) -> int:
    ds = ingest_file(engine, write_jsonl(tmp_path / "d.jsonl", [ROW]), "d", imported_by="me").dataset_id
    return repo.response_id_by_external(engine, ds, "x1") or -1


def _texts(engine: Engine, rid: int) -> list[str]:
    return [s.text for s in repo.get_response(engine, rid).sentences]


def test_split_merge_undo_from_the_command_line(engine: Engine, rid: int) -> None:
    code, out = _invoke(
        engine, "split", "--dataset", "d", "--response", "x1", "--sentence", "2", "--at", "6", "--user", "ann"
    )
    assert code == 0, out
    assert "split sentence 2 of x1 at 6 (now 4 sentences)" in out
    assert _texts(engine, rid) == ["One two.", "Three", "four five.", "Six."]
    code, out = _invoke(
        engine, "merge", "--dataset", "d", "--response", "x1", "--sentence", "1", "--user", "bob"
    )
    assert code == 0, out
    assert _texts(engine, rid) == ["One two. Three", "four five.", "Six."]
    for _ in range(2):
        code, out = _invoke(engine, "undo", "--dataset", "d", "--response", "x1", "--user", "bob")
        assert code == 0 and "undid the last split fix" in out, out
    assert _texts(engine, rid) == ROW["sentences"]
    code, out = _invoke(engine, "undo", "--dataset", "d", "--response", "x1")
    assert code == 0 and "nothing to undo" in out
    assert check_store(engine).clean


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["split", "--dataset", "d", "--response", "x1", "--sentence", "2", "--at", "0"], "--at"),
        (["split", "--dataset", "d", "--response", "x1", "--sentence", "2", "--at", "16"], "strictly inside"),
        (
            ["split", "--dataset", "d", "--response", "x1", "--sentence", "9", "--at", "2"],
            "sentence 9 does not exist",
        ),
        (["merge", "--dataset", "d", "--response", "x1", "--sentence", "3"], "no next sentence"),
        (["merge", "--dataset", "d", "--response", "x1", "--sentence", "0"], "numbered from 1"),
        (["merge", "--dataset", "d", "--response", "nope", "--sentence", "1"], "no response 'nope'"),
        (["merge", "--dataset", "nope", "--response", "x1", "--sentence", "1"], "nope"),
        (["merge", "--dataset", "d", "--response", "x1", "--sentence", "1", "--user", " "], "non-empty name"),
        (
            ["merge", "--dataset", "d", "--response", "x1", "--sentence", "1", "--user", "u" * 129],
            "at most 128",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    engine: Engine, rid: int, args: list[str], message: str
) -> None:
    digest = store_digest(engine, logical=True)
    code, out = _invoke(engine, *args)
    assert code == 2, out
    assert message in out and len(out.strip().splitlines()) == 1, out
    assert store_digest(engine, logical=True) == digest


def test_a_store_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    url = f"sqlite:///{tmp_path / 'none.db'}"
    result = CliRunner().invoke(app, ["segments", "undo", "--dataset", "d", "--response", "x1", "--db", url])
    assert result.exit_code == 2 and not (tmp_path / "none.db").exists()
