"""The current views cannot drift from the label history: the database refuses a current label (or an own
label) without a matching event and a response label that does not fit its dataset's kind, and
``fractal db check`` finds drift that got in around the triggers (exit 1 with ids) or reports a clean store."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from db import repository as repo
from db import team
from db.cli import register
from db.ingest import ingest_file
from db.integrity import check_store
from tests.db.conftest import make_rows, write_jsonl


@pytest.fixture
def labelled(engine: Engine, tmp_path: Path) -> tuple[int, int, list[int]]:
    """A dataset with imported labels, a human label, an undone action and an overlap annotator's labels."""
    ds = ingest_file(engine, write_jsonl(tmp_path / "a.jsonl", make_rows(6)), "a").dataset_id
    rid = repo.response_id_by_external(engine, ds, "r1") or -1
    sids = [s.id for s in repo.get_response(engine, rid).sentences]
    repo.record_labels(engine, rid, {sids[0]: 1}, "ann")
    repo.record_labels(engine, rid, {sids[1]: 0}, "ann")
    repo.record_labels(engine, rid, {sids[1]: 1}, "bob")
    repo.undo_last(engine, "ann")  # left alone: bob changed it since
    repo.record_labels(engine, rid, {sids[2]: 0}, "ann", source="model")
    repo.record_labels(engine, rid, {sids[2]: None}, "ann")
    team.record_annotations(engine, rid, {sids[0]: 0, sids[1]: 1}, "carl")
    team.undo_annotation(engine, "carl", rid)
    team.record_annotations(engine, rid, {sids[0]: 1}, "carl")
    return ds, rid, sids


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _check(engine: Engine) -> tuple[int, str]:
    result = CliRunner().invoke(
        _cli(), ["db", "check", "--db", engine.url.render_as_string(hide_password=False)]
    )
    return result.exit_code, result.stdout + result.stderr


TAMPER = {
    "relabel": "UPDATE current_labels SET label = 0, source = 'human', annotator = 'mallory'",
    "re-attribute": "UPDATE current_labels SET annotator = 'mallory'",
    "promote a model label": "UPDATE current_labels SET source = 'human' WHERE source = 'imported'",
    "delete a label": "DELETE FROM current_labels",
    "insert a label": "INSERT INTO current_labels (sentence_id, response_id, label, source, annotator, event_id,"
    " updated_at) SELECT s.id, s.response_id, 1, 'human', 'mallory', (SELECT MIN(id) FROM label_events),"
    " CURRENT_TIMESTAMP FROM sentences s WHERE s.id NOT IN (SELECT sentence_id FROM current_labels) LIMIT 1",
    "own label": "UPDATE annotations SET label = 0",
    "delete own label": "DELETE FROM annotations",
    "response label 7 in a binary dataset": "UPDATE responses SET response_label = 7",
    "response label 0.5 in a binary dataset": "UPDATE responses SET response_label = 0.5",
    "mean bag in a binary dataset": "UPDATE responses SET aggregation = 'mean'",
    "dataset kind its responses do not fit": "UPDATE datasets SET label_kind = 'proportion'",
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_the_database_refuses_views_without_history(engine: Engine, labelled: object, case: str) -> None:
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text(TAMPER[case]))
    assert check_store(engine).clean


def test_every_write_path_keeps_the_views_equal_to_the_history(
    engine: Engine, labelled: tuple[int, int, list[int]]
) -> None:
    ds, rid, sids = labelled
    team.adjudicate(engine, rid, {sids[0]: 1, sids[1]: 1}, "rita")
    repo.undo_last(engine, "rita")
    code, out = _check(engine)
    assert code == 0 and "store is consistent" in out, out
    with engine.begin() as conn:  # a dataset can still be deleted as a whole
        conn.execute(text("DELETE FROM datasets WHERE id = :ds"), {"ds": ds})
    assert _check(engine)[0] == 0


def _without_triggers(engine: Engine, statement: str) -> None:
    """Write around the triggers, as a store written before them (or by hand) may hold."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            names = conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%from_history%'")
            ).scalars()
            sql = {
                n: conn.execute(text(f"SELECT sql FROM sqlite_master WHERE name = '{n}'")).scalar()
                for n in names
            }
            for n in sql:
                conn.execute(text(f"DROP TRIGGER {n}"))
            conn.execute(text(statement))
            for body in sql.values():
                conn.execute(text(str(body)))
        else:
            for table in ("current_labels", "annotations"):
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            conn.execute(text(statement))
            for table in ("current_labels", "annotations"):
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


def test_check_reports_drift_with_ids_and_exit_1(
    engine: Engine, labelled: tuple[int, int, list[int]]
) -> None:
    _, rid, sids = labelled
    _without_triggers(
        engine, f"UPDATE current_labels SET label = 0, annotator = 'mallory' WHERE sentence_id = {sids[0]}"
    )
    _without_triggers(engine, f"DELETE FROM current_labels WHERE sentence_id = {sids[1]}")
    _without_triggers(engine, f"UPDATE annotations SET label = 0 WHERE sentence_id = {sids[0]}")
    report = check_store(engine)
    assert {(d.table, d.key) for d in report.drift} == {
        ("current_labels", f"sentence {sids[0]}"),
        ("current_labels", f"sentence {sids[1]}"),
        ("annotations", f"sentence {sids[0]} of carl"),
        ("responses", f"response {rid}"),  # its gold counter still counts the deleted label
    }
    code, out = _check(engine)
    assert code == 1
    assert f"current_labels sentence {sids[0]}: stored 0 (human, mallory), history says 1 (human, ann)" in out
    assert f"current_labels sentence {sids[1]}: stored none, history says 1 (human, bob)" in out
    assert f"annotations sentence {sids[0]} of carl" in out and "4 drift(s)" in out
