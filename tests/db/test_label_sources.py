"""Label sources: the vocabulary (human, adjudicated, model, imported, imported_gold) written by each path, and
the migration that renames an older store's sources by following each label to the event that set it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from db import repository as repo
from db import team
from db.engine import get_engine
from db.ingest import ingest_file
from db.schema import upgrade
from db.sources import GOLD_SOURCES, HUMAN_SOURCES, LABEL_SOURCES
from tests.db.conftest import make_rows, write_jsonl


def test_gold_never_includes_model_and_imports_stay_distinguishable() -> None:
    assert "model" in LABEL_SOURCES and "model" not in GOLD_SOURCES
    assert set(HUMAN_SOURCES) == {"human", "adjudicated"} and set(HUMAN_SOURCES) < set(GOLD_SOURCES)
    assert "imported_gold" in GOLD_SOURCES and "imported" not in GOLD_SOURCES


def test_each_path_writes_its_source(engine: Engine, tmp_path: Path) -> None:
    ds = ingest_file(
        engine, write_jsonl(tmp_path / "a.jsonl", make_rows(6)), "a", labels_as="gold"
    ).dataset_id
    plain = ingest_file(engine, write_jsonl(tmp_path / "b.jsonl", make_rows(3, prefix="b")), "b").dataset_id
    r0 = repo.get_response(engine, repo.response_id_by_external(engine, ds, "r0") or -1)
    b0 = repo.get_response(engine, repo.response_id_by_external(engine, plain, "b0") or -1)
    assert {s.label_source for s in r0.sentences} == {"imported_gold"}
    assert {s.label_source for s in b0.sentences} == {"imported"}
    r1 = repo.get_response(engine, repo.response_id_by_external(engine, ds, "r1") or -1)
    repo.record_labels(engine, r1.id, {r1.sentences[0].id: 0}, "ann")
    repo.record_labels(engine, r1.id, {r1.sentences[1].id: 1}, "ann", source="model")
    team.adjudicate(engine, r1.id, {r1.sentences[2].id: 0}, "rita")
    after = repo.get_response(engine, r1.id).sentences
    assert [(s.label_source, s.annotator) for s in after[:3]] == [
        ("human", "ann"),
        ("model", "ann"),
        ("adjudicated", "rita"),
    ]
    # A model label is not gold: the response counts one human and one adjudicated label towards the budget.
    assert repo.load_training_set(engine, ds).records[1].sentence_labels == [0, None, 0]
    # Undo gives the label back to whoever set it, with its source.
    repo.undo_last(engine, "ann")
    back = repo.get_response(engine, r1.id).sentences[1]
    assert (back.label, back.label_source) == (None, None)


def test_migration_renames_sources_by_the_event_that_set_each_label(db_url: str) -> None:
    raw = get_engine(db_url, check_schema=False)
    upgrade(raw, "0008")
    with raw.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (id, name, description, label_kind, max_label, gold_target, created_at,"
                " overlap_k, overlap_fraction, guidelines) VALUES (1, 'old', '', 'binary', 1, 0.1,"
                " CURRENT_TIMESTAMP, 1, 0, '')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO responses (id, dataset_id, external_id, context, text, response_label, aggregation,"
                " label_kind, meta, n_sentences, n_gold) VALUES (1, 1, 'a', '', 'A. B. C. D. E.', 1, 'max',"
                " 'binary', '{}', 5, 4)"
            )
        )
        for i in range(5):
            conn.execute(
                text(
                    'INSERT INTO sentences (id, response_id, position, start, "end", text, segmenter_version)'
                    " VALUES (:id, 1, :i, :s, :e, 'X.', 'v')"
                ),
                {"id": i + 1, "i": i, "s": 3 * i, "e": 3 * i + 2},
            )
        events = [  # id, action, sentence, annotator, source, old, old source, old annotator, new, undoes
            (1, "ingest-1", 1, "import:a", "gold", None, None, None, 1, None),
            (2, "x2", 2, "ann", "gold", None, None, None, 0, None),
            (3, "x3", 3, "rita", "reviewed", None, None, None, 1, None),  # adjudicated below
            (4, "x4", 4, "rita", "reviewed", None, None, None, 0, None),  # accepted from the model
            (5, "x5", 4, "bob", "gold", 0, "reviewed", "rita", 1, None),
            (6, "x6", 4, "bob", "reviewed", 1, "gold", "bob", 0, 5),  # bob's undo gives rita's label back
            (7, "x7", 5, "ann", "gold", None, None, None, 1, None),
            (8, "x8", 1, "ann", "gold", 1, "gold", "import:a", 0, None),
            (9, "x9", 1, "ann", "gold", 0, "gold", "ann", 1, 8),  # undo: the ingested gold label is back
        ]
        for eid, action, sid, who, src, old, old_src, old_who, new, undoes in events:
            conn.execute(
                text(
                    "INSERT INTO label_events (id, action_id, sentence_id, response_id, annotator, source,"
                    " old_label, old_source, old_annotator, new_label, created_at, undoes_id) VALUES (:id,"
                    " :action, :sid, 1, :who, :src, :old, :old_src, :old_who, :new, CURRENT_TIMESTAMP, :undoes)"
                ),
                {"id": eid, "action": action, "sid": sid, "who": who, "src": src, "old": old}
                | {"old_src": old_src, "old_who": old_who, "new": new, "undoes": undoes},
            )
        for sid, label, src, who, eid in [
            (1, 1, "gold", "import:a", 9),
            (2, 0, "gold", "ann", 2),
            (3, 1, "reviewed", "rita", 3),
            (4, 0, "reviewed", "rita", 6),
            (5, 1, "gold", "ann", 7),
        ]:
            conn.execute(
                text(
                    "INSERT INTO current_labels (sentence_id, response_id, label, source, annotator, event_id,"
                    " updated_at) VALUES (:sid, 1, :label, :src, :who, :eid, CURRENT_TIMESTAMP)"
                ),
                {"sid": sid, "label": label, "src": src, "who": who, "eid": eid},
            )
        conn.execute(
            text(
                "INSERT INTO adjudications (response_id, sentence_id, label, reviewer, created_at)"
                " VALUES (1, 3, 1, 'rita', CURRENT_TIMESTAMP)"
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
    detail = repo.get_response(engine, 1)
    assert [(s.label, s.label_source, s.annotator) for s in detail.sentences] == [
        (1, "imported_gold", "import:a"),
        (0, "human", "ann"),
        (1, "adjudicated", "rita"),
        (0, "model", "rita"),
        (1, "human", "ann"),
    ]
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, source, old_source, new_annotator FROM label_events WHERE id <= 9 ORDER BY id")
        ).all()
    assert [tuple(r) for r in rows] == [
        (1, "imported_gold", None, "import:a"),
        (2, "human", None, "ann"),
        (3, "adjudicated", None, "rita"),
        (4, "model", None, "rita"),
        (5, "human", "model", "bob"),
        (6, "model", "human", "rita"),
        (7, "human", None, "ann"),
        (8, "human", "imported_gold", "ann"),
        (9, "imported_gold", "human", "import:a"),
    ]
    # The model's label is not gold: training and the gold counter see the other four.
    assert repo.list_responses(engine, 1).rows[0].n_gold == 4
    assert repo.load_training_set(engine, 1).records[0].sentence_labels == [1, 0, 1, None, 1]
    engine.dispose()


def test_migration_moves_own_labels_into_the_one_history(db_url: str) -> None:
    """A store at 0010 with each annotator's own labels in ``annotation_events`` (an undone action among them)
    keeps them after the upgrade, as events of the one history that the one undo rule walks."""
    raw = get_engine(db_url, check_schema=False)
    upgrade(raw, "0010")
    with raw.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (id, name, description, label_kind, max_label, gold_target, created_at,"
                " overlap_k, overlap_fraction, guidelines) VALUES (1, 'old', '', 'binary', 1, 0.1,"
                " CURRENT_TIMESTAMP, 2, 1, '')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO responses (id, dataset_id, external_id, context, text, response_label, aggregation,"
                " label_kind, meta, n_sentences, n_gold) VALUES (1, 1, 'a', '', 'A. B.', 1, 'max', 'binary',"
                " '{}', 2, 0)"
            )
        )
        conn.execute(
            text(
                'INSERT INTO sentences (id, response_id, position, start, "end", text, segmenter_version)'
                " VALUES (1, 1, 0, 0, 2, 'A.', 'v'), (2, 1, 1, 3, 5, 'B.', 'v')"
            )
        )
        events = [  # id, action, sentence, annotator, old, new, undoes action
            (1, "a1", 1, "ann", None, 1, None),
            (2, "a1", 2, "ann", None, 0, None),
            (3, "b1", 1, "bob", None, 0, None),
            (4, "a2", 1, "ann", 1, 0, None),
            (5, "u1", 1, "ann", 0, 1, "a2"),  # ann undid a2
        ]
        for eid, action, sid, who, old, new, undoes in events:
            conn.execute(
                text(
                    "INSERT INTO annotation_events (id, action_id, sentence_id, response_id, annotator, old_label,"
                    " new_label, undoes_action, created_at) VALUES (:id, :action, :sid, 1, :who, :old, :new,"
                    " :undoes, CURRENT_TIMESTAMP)"
                ),
                {
                    "id": eid,
                    "action": action,
                    "sid": sid,
                    "who": who,
                    "old": old,
                    "new": new,
                    "undoes": undoes,
                },
            )
        for sid, who, label in [(1, "ann", 1), (2, "ann", 0), (1, "bob", 0)]:
            conn.execute(
                text(
                    "INSERT INTO annotations (sentence_id, annotator, response_id, dataset_id, label, updated_at)"
                    " VALUES (:sid, :who, 1, 1, :label, CURRENT_TIMESTAMP)"
                ),
                {"sid": sid, "who": who, "label": label},
            )
    upgrade(raw)
    raw.dispose()
    engine = get_engine(db_url)
    history = team.annotation_history(engine, 1)
    assert [(h.sentence_id, h.annotator, h.old_label, h.new_label) for h in history] == [
        (1, "ann", None, 1),
        (2, "ann", None, 0),
        (1, "bob", None, 0),
        (1, "ann", 1, 0),
        (1, "ann", 0, 1),
    ]
    assert repo.label_history(engine, response_id=1) == []  # the shared view has no history
    # a2 is undone, so ann's next undo reverts a1; then nothing is left, and bob's label never moved.
    undone = team.undo_annotation(engine, "ann", 1)
    assert undone is not None and sorted(c.sentence_id for c in undone.reverted) == [1, 2]
    assert team.own_labels(engine, 1, "ann") == {} and team.undo_annotation(engine, "ann", 1) is None
    assert team.own_labels(engine, 1, "bob") == {1: 0}
    team.record_annotations(engine, 1, {2: 1}, "bob")  # new events get fresh ids after the moved ones
    assert team.annotation_history(engine, 1)[-1].event_id > max(h.event_id for h in history)
    engine.dispose()
