"""The store enforces its own rules, whoever writes: CHECK constraints and triggers refuse bad
rows from plain SQL, repository functions refuse unknown kinds and statuses, and the label history is
append-only (an undo is a new event). Runs on SQLite and PostgreSQL; also the migration of an existing store."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from db import repository as repo
from db.engine import get_engine
from db.ingest import ingest_file
from db.schema import current_revision, head_revision, upgrade
from fractal_core.errors import InputError
from tests.db.conftest import make_rows, write_jsonl


@pytest.fixture
def ds(engine: Engine, tmp_path: Path) -> int:
    return ingest_file(engine, write_jsonl(tmp_path / "train.jsonl", make_rows(6)), "demo").dataset_id


def _first_sentence(engine: Engine, ds: int) -> tuple[int, int]:
    rid = repo.response_id_by_external(engine, ds, "r1")
    assert rid is not None
    return rid, repo.get_response(engine, rid).sentences[0].id


BAD_SQL = {
    "label 99 in a binary dataset": "UPDATE current_labels SET label = 99",
    "label above every level": "UPDATE current_labels SET label = 1000",
    "unknown source": "UPDATE current_labels SET source = 'bogus'",
    "unknown aggregation": "UPDATE responses SET aggregation = 'median'",
    "negative response label": "UPDATE responses SET response_label = -5",
    "huge response label": "UPDATE responses SET response_label = 1e308",
    "unknown dataset kind": "UPDATE datasets SET label_kind = 'garbage'",
    "unknown response kind": "UPDATE responses SET label_kind = 'garbage'",
    "unknown model status": "UPDATE model_versions SET status = 'bogus'",
    "unknown job state": "UPDATE jobs SET state = 'bogus'",
    "span ends before it starts": 'UPDATE sentences SET "end" = start - 1',
    "history rewritten": "UPDATE label_events SET new_label = 0",
    "history deleted": "DELETE FROM label_events",
}


@pytest.mark.parametrize("case", sorted(BAD_SQL))
def test_plain_sql_cannot_break_the_rules(engine: Engine, ds: int, case: str) -> None:
    mv = repo.create_model_version(engine, ds, method="fractal")
    repo.create_job(engine, "train", {"dataset_id": ds})
    assert mv.status == "training"
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text(BAD_SQL[case]))


def test_inserted_label_events_are_checked_too(engine: Engine, ds: int) -> None:
    rid, sid = _first_sentence(engine, ds)
    insert = (
        "INSERT INTO label_events (action_id, sentence_id, response_id, annotator, source, new_label, created_at) "
        f"VALUES ('x', {sid}, {rid}, 'eve', :source, :label, CURRENT_TIMESTAMP)"
    )
    for source, label in [("human", 2), ("bogus", 1), ("human", -1)]:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(insert), {"source": source, "label": label})
    with engine.begin() as conn:  # a valid one goes in
        conn.execute(text(insert), {"source": "human", "label": 1})


def test_repository_functions_refuse_unknown_kinds_and_statuses(engine: Engine, ds: int) -> None:
    with pytest.raises(InputError, match="label kind"):
        repo.create_dataset(engine, "x", label_kind="garbage")
    with pytest.raises(InputError, match="levels"):
        repo.create_dataset(engine, "x", label_kind="ordinal:1000")
    with pytest.raises(InputError, match="status"):
        repo.create_model_version(engine, ds, method="fractal", status="bogus")
    mv = repo.create_model_version(engine, ds, method="fractal")
    with pytest.raises(InputError, match="status"):
        repo.finish_model_version(engine, mv.id, status="bogus")  # type: ignore[arg-type]
    assert repo.create_dataset(engine, "x", label_kind="ordinal:5").max_label == 4


def test_undo_appends_an_event_and_the_history_stays_whole(engine: Engine, ds: int) -> None:
    rid, sid = _first_sentence(engine, ds)
    repo.record_label(engine, sid, 1, "ann")
    repo.record_label(engine, sid, 0, "bob")
    assert repo.undo_last(engine, "ann") is not None  # left alone: bob changed it since
    repo.record_label(engine, sid, 1, "ann")
    undone = repo.undo_last(engine, "ann")
    assert undone is not None and [c.new_label for c in undone.reverted] == [0]
    history = repo.label_history(engine, sentence_id=sid)
    assert [(h.annotator, h.old_label, h.new_label) for h in history] == [
        ("ann", None, 1),
        ("bob", 1, 0),
        ("ann", 0, 0),  # the undo that left bob's label alone
        ("ann", 0, 1),
        ("ann", 1, 0),  # the undo
    ]
    assert repo.undo_last(engine, "ann") is None
    # A dataset can still be deleted as a whole: its history goes with its sentences.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM datasets WHERE id = :ds"), {"ds": ds})
        assert conn.execute(text("SELECT COUNT(*) FROM label_events")).scalar() == 0


def test_migration_moves_an_existing_store(db_url: str) -> None:
    """A store at revision 0003 (the one before these rules) with history (including an undo that left a label alone, then marked by
    ``undone_by_id`` pointing at itself) upgrades to the append-only history without losing an event."""
    raw = get_engine(db_url, check_schema=False)
    upgrade(raw, "0003")
    with raw.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (id, name, description, label_kind, max_label, gold_target, created_at) "
                "VALUES (1, 'old', '', 'binary', 1, 0.1, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO responses (id, dataset_id, external_id, context, text, response_label, aggregation,"
                " label_kind, meta, n_sentences, n_gold) VALUES (1, 1, 'a', '', 'One. Two.', 1, 'max', 'binary',"
                " '{}', 2, 1)"
            )
        )
        conn.execute(
            text(
                'INSERT INTO sentences (id, response_id, position, start, "end", text, segmenter_version) '
                "VALUES (1, 1, 0, 0, 4, 'One.', 'v'), (2, 1, 1, 5, 9, 'Two.', 'v')"
            )
        )
        events = [  # id, sentence, annotator, old, new, undoes, undone_by
            (1, 1, "ann", None, 1, None, 4),
            (2, 2, "ann", None, 1, None, 2),  # left alone by the undo (bob changed it): points at itself
            (3, 2, "bob", 1, 0, None, None),
            (4, 1, "ann", 1, None, 1, None),  # the undo of event 1
        ]
        for eid, sid, who, old, new, undoes, undone_by in events:
            conn.execute(
                text(
                    "INSERT INTO label_events (id, action_id, sentence_id, response_id, annotator, source,"
                    " old_label, new_label, created_at, undoes_id, undone_by_id) VALUES (:id, :action, :sid,"
                    " 1, :who, 'gold', :old, :new, CURRENT_TIMESTAMP, :undoes, :undone_by)"
                ),
                {"id": eid, "action": f"a{eid}", "sid": sid, "who": who, "old": old, "new": new}
                | {"undoes": undoes, "undone_by": eid if undone_by == eid else None},
            )
        conn.execute(text("UPDATE label_events SET undone_by_id = 4 WHERE id = 1"))
        conn.execute(
            text(
                "INSERT INTO current_labels (sentence_id, response_id, label, source, annotator, event_id,"
                " updated_at) VALUES (2, 1, 0, 'gold', 'bob', 3, CURRENT_TIMESTAMP)"
            )
        )
    if raw.dialect.name == "postgresql":
        with raw.begin() as conn:
            for table in ("datasets", "responses", "sentences", "label_events"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
                    )
                )
    upgrade(raw)
    raw.dispose()
    engine = get_engine(db_url)
    assert current_revision(engine) == head_revision()
    history = repo.label_history(engine, response_id=1)
    assert [(h.sentence_id, h.annotator, h.old_label, h.new_label) for h in history] == [
        (1, "ann", None, 1),
        (2, "ann", None, 1),
        (2, "bob", 1, 0),
        (1, "ann", 1, None),
        (2, "ann", 0, 0),  # the explicit "left alone" event
    ]
    # Every action of ann's is handled: nothing left to undo, and the history cannot be rewritten.
    assert repo.undo_last(engine, "ann") is None
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE label_events SET annotator = 'eve'"))
    assert repo.record_label(engine, 1, 0, "carl").changes
    engine.dispose()
