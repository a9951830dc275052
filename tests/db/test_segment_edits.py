"""Fixing a split in the store (both engines): offsets stay slices of the text, labels on untouched sentences
stay, the replaced sentences' labels end and come back on undo with their source and author, the history
records each edit, `fractal db check` stays clean, scores are stale until the next scoring, exports follow,
and a stale edit is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, select

from db import repository as repo
from db import team
from db.engine import run_read
from db.export import export_dataset
from db.ingest import ingest_file
from db.integrity import check_store
from db.models import Response, SegmentEdit
from db.rows import ResponseDetail
from fractal_core.errors import InputError
from tests.db.conftest import store_digest, write_jsonl

SENTENCES = ["First step is fine.", "Second step, then a third one.", "Fourth step.", "Fifth."]


def _ingest(engine: Engine, tmp_path: Path, *, labels: list[int | None] | None = None) -> tuple[int, int]:
    row: dict[str, Any] = {"id": "x1", "sentences": SENTENCES, "response_label": 1, "aggregation": "max"}
    if labels is not None:
        row["sentence_labels"] = labels
    other = {"id": "x2", "sentences": ["Alone."], "response_label": 0, "aggregation": "max"}
    ds = ingest_file(
        engine, write_jsonl(tmp_path / "d.jsonl", [row, other]), "d", labels_as="gold", imported_by="importer"
    ).dataset_id
    return ds, repo.response_id_by_external(engine, ds, "x1") or -1


def _consistent(engine: Engine, detail: ResponseDetail) -> None:
    assert [s.position for s in detail.sentences] == list(range(len(detail.sentences)))
    for s in detail.sentences:
        assert detail.text[s.start : s.end] == s.text
    n = run_read(engine, lambda session: _row(session, detail.id).n_sentences)
    assert n == len(detail.sentences)
    assert check_store(engine).clean, check_store(engine).drift


def _row(session: Any, rid: int) -> Response:
    row = session.get(Response, rid)
    assert row is not None
    return row


def _n_gold(session: Any, rid: int) -> int:
    return _row(session, rid).n_gold


def _labels(detail: ResponseDetail) -> list[tuple[int | None, str | None, str | None]]:
    return [(s.label, s.label_source, s.annotator) for s in detail.sentences]


def _edits(engine: Engine, rid: int) -> list[SegmentEdit]:
    return run_read(
        engine,
        lambda s: list(
            s.scalars(select(SegmentEdit).where(SegmentEdit.response_id == rid).order_by(SegmentEdit.id))
        ),
    )


def test_merge_keeps_untouched_labels_ends_the_merged_ones_and_undo_gives_them_back(
    engine: Engine, tmp_path: Path
) -> None:
    _, rid = _ingest(engine, tmp_path, labels=[0, 1, None, 0])
    before = repo.get_response(engine, rid)
    ids = [s.id for s in before.sentences]
    repo.record_labels(engine, rid, {ids[2]: 0}, "ann")  # human, on the sentence merged into the second
    team.record_annotations(engine, rid, {ids[1]: 1, ids[3]: 0}, "carl")  # own labels
    team.adjudicate(engine, rid, {ids[1]: 1}, "rita")
    gold_before = run_read(engine, lambda s: _n_gold(s, rid))
    assert gold_before == 4
    labels_before = _labels(repo.get_response(engine, rid))

    result = repo.merge_sentences(
        engine, rid, 1, "ann", expected=[(s.start, s.end) for s in before.sentences]
    )
    after = repo.get_response(engine, rid)
    _consistent(engine, after)
    assert [s.text for s in after.sentences] == [SENTENCES[0], f"{SENTENCES[1]} {SENTENCES[2]}", SENTENCES[3]]
    # Untouched sentences keep their rows and labels; the merged one is new and unlabelled.
    assert [after.sentences[0].id, after.sentences[2].id] == [ids[0], ids[3]]
    assert _labels(after)[0] == (0, "imported_gold", "importer") and _labels(after)[2][0] == 0
    assert after.sentences[1].id not in ids and after.sentences[1].label is None
    assert (
        result.kind == "merge" and result.n_sentences == 3 and result.sentence_ids == [after.sentences[1].id]
    )
    # Ended: sentence 2's shared label (adjudicated by rita) + carl's own + rita's adjudication; sentence 3's human.
    assert result.ended_labels == 4
    assert team.annotations_by_annotator(engine, rid) == {"carl": {ids[3]: 0}}
    assert run_read(engine, lambda s: _n_gold(s, rid)) == 2
    [edit] = _edits(engine, rid)
    assert edit.kind == "merge" and edit.editor == "ann" and edit.position == 1
    assert edit.spans_before == [[s.start, s.end] for s in before.sentences]
    assert edit.spans_after == [[s.start, s.end] for s in after.sentences]
    assert edit.ended[0]["shared"] == {"label": 1, "source": "adjudicated", "annotator": "rita"}
    assert edit.ended[0]["own"] == {"carl": 1} and edit.ended[0]["adjudications"][0]["reviewer"] == "rita"
    assert edit.ended[1]["shared"] == {"label": 0, "source": "human", "annotator": "ann"}
    # The replaced sentences keep their label history (who set what, and that the merge ended it).
    history = [(h.sentence_id, h.new_label, h.annotator) for h in repo.label_history(engine, response_id=rid)]
    assert (ids[2], 0, "ann") in history and (ids[2], None, "ann") in history
    with pytest.raises(InputError, match="split fix replaced them"):
        repo.record_labels(engine, rid, {ids[2]: 1}, "ann")
    assert (
        repo.undo_last(engine, "ann", response_id=rid) is None
    )  # no label goes back onto a replaced sentence

    undo = repo.undo_segment_edit(engine, rid, "bob", expected=[(s.start, s.end) for s in after.sentences])
    assert undo is not None and undo.kind == "undo" and undo.undone_edit_id == edit.id
    assert undo.restored_labels == 4 and undo.ended_labels == 0
    back = repo.get_response(engine, rid)
    _consistent(engine, back)
    assert [(s.start, s.end, s.text) for s in back.sentences] == [
        (s.start, s.end, s.text) for s in before.sentences
    ]
    assert [s.id for s in back.sentences] == ids  # the same rows come back, with their history
    assert _labels(back) == labels_before  # each with its original source and author
    assert run_read(engine, lambda s: _n_gold(s, rid)) == gold_before
    assert team.annotations_by_annotator(engine, rid) == {"carl": {back.sentences[1].id: 1, ids[3]: 0}}
    assert team.adjudicated_labels(engine, [rid])[rid]["reviewer"] == "rita"
    assert repo.undo_segment_edit(engine, rid, "bob") is None  # nothing left to undo


def test_split_shifts_later_sentences_and_undo_walks_back(engine: Engine, tmp_path: Path) -> None:
    _, rid = _ingest(engine, tmp_path)
    before = repo.get_response(engine, rid)
    ids = [s.id for s in before.sentences]
    repo.record_labels(engine, rid, {ids[3]: 1, ids[0]: 0}, "ann")
    at = SENTENCES[1].index("then")
    split = repo.split_sentence(engine, rid, 1, at, "ann")
    after = repo.get_response(engine, rid)
    _consistent(engine, after)
    assert [s.text for s in after.sentences] == [
        SENTENCES[0], "Second step,", "then a third one.", SENTENCES[2], SENTENCES[3],
    ]  # fmt: skip
    assert [after.sentences[i].id for i in (0, 3, 4)] == [ids[0], ids[2], ids[3]]
    assert _labels(after)[4] == (1, "human", "ann") and split.ended_labels == 0
    # A second edit on top, then two undos walk back to the original split.
    repo.merge_sentences(engine, rid, 3, "bob")
    _consistent(engine, repo.get_response(engine, rid))
    assert repo.get_response(engine, rid).sentences[3].label is None  # bob's merge ended ann's label
    repo.undo_segment_edit(engine, rid, "bob")
    middle = repo.get_response(engine, rid)
    assert [s.text for s in middle.sentences] == [s.text for s in after.sentences]
    assert _labels(middle)[4] == (1, "human", "ann")
    repo.undo_segment_edit(engine, rid, "ann")
    back = repo.get_response(engine, rid)
    _consistent(engine, back)
    assert [s.text for s in back.sentences] == SENTENCES
    assert [k.kind for k in _edits(engine, rid)] == ["split", "merge", "undo", "undo"]
    history = repo.segment_history(engine, rid)
    assert [(h.kind, h.editor, h.undone, h.ended_labels) for h in history] == [
        ("split", "ann", True, 0),
        ("merge", "bob", True, 1),  # bob's merge ended ann's label on sentence 5
        ("undo", "bob", False, 0),
        ("undo", "ann", False, 0),
    ]
    assert [h.undoes_id for h in history[2:]] == [history[1].id, history[0].id]


def test_labels_set_on_new_sentences_end_with_the_undo_and_are_kept_in_its_row(
    engine: Engine, tmp_path: Path
) -> None:
    _, rid = _ingest(engine, tmp_path)
    result = repo.split_sentence(engine, rid, 0, 6, "ann")
    repo.record_labels(engine, rid, {result.sentence_ids[1]: 1}, "ann")
    undo = repo.undo_segment_edit(engine, rid, "ann")
    assert undo is not None and undo.ended_labels == 1
    assert _edits(engine, rid)[-1].ended[1]["shared"] == {"label": 1, "source": "human", "annotator": "ann"}
    _consistent(engine, repo.get_response(engine, rid))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda e, rid: repo.split_sentence(e, rid, 0, 0, "ann"), "strictly inside"),
        (lambda e, rid: repo.split_sentence(e, rid, 0, len(SENTENCES[0]), "ann"), "strictly inside"),
        (lambda e, rid: repo.split_sentence(e, rid, 9, 2, "ann"), "does not exist"),
        (lambda e, rid: repo.merge_sentences(e, rid, 3, "ann"), "no next sentence"),
        (lambda e, rid: repo.merge_sentences(e, rid, 0, " "), "non-empty name"),
        (lambda e, rid: repo.merge_sentences(e, -5, 0, "ann"), "no response"),
        (
            lambda e, rid: repo.merge_sentences(e, rid, 0, "ann", expected=[(0, 3)]),
            "changed the split of this response",
        ),
    ],
)
def test_bad_and_stale_edits_write_nothing(engine: Engine, tmp_path: Path, edit: Any, match: str) -> None:
    _, rid = _ingest(engine, tmp_path)
    digest = store_digest(engine, logical=True)
    with pytest.raises(InputError, match=match):
        edit(engine, rid)
    assert store_digest(engine, logical=True) == digest


def test_a_stale_view_is_refused_after_someone_else_changed_the_split(engine: Engine, tmp_path: Path) -> None:
    _, rid = _ingest(engine, tmp_path)
    seen = [(s.start, s.end) for s in repo.get_response(engine, rid).sentences]
    repo.split_sentence(engine, rid, 0, 6, "bob")
    with pytest.raises(repo.StaleSplitError, match="now has 5 sentences"):
        repo.merge_sentences(engine, rid, 0, "ann", expected=seen)
    with pytest.raises(repo.StaleSplitError):
        repo.undo_segment_edit(engine, rid, "ann", expected=seen)
    assert len(repo.get_response(engine, rid).sentences) == 5


def _score_all(engine: Engine, ds: int) -> int:
    ids = repo.load_training_set(engine, ds).sentence_ids
    mv = repo.create_model_version(engine, ds, method="fractal")
    repo.store_scores(engine, mv.id, ids, np.full(len(ids), 0.25))
    return repo.activate_model_version(engine, repo.finish_model_version(engine, mv.id).id).id


def test_scores_are_stale_after_an_edit_until_the_next_scoring(engine: Engine, tmp_path: Path) -> None:
    ds, rid = _ingest(engine, tmp_path)
    _score_all(engine, ds)
    assert not repo.get_response(engine, rid).scores_stale
    stale_ids = repo.load_training_set(engine, ds).sentence_ids  # what a job that started now would score
    repo.merge_sentences(engine, rid, 0, "ann")
    detail = repo.get_response(engine, rid)
    assert detail.scores_stale and detail.sentences[0].score is None and detail.sentences[1].score == 0.25
    other = repo.response_id_by_external(engine, ds, "x2") or -1
    assert not repo.get_response(engine, other).scores_stale
    # A job that loaded the sentences before the edit scores the rows the edit replaced (they are kept, retired),
    # not the new one: the response stays stale; the next scoring (every current sentence) clears it.
    mv = repo.create_model_version(engine, ds, method="fractal")
    assert repo.store_scores(engine, mv.id, stale_ids, np.full(len(stale_ids), 0.5)) == len(stale_ids)
    repo.activate_model_version(engine, repo.finish_model_version(engine, mv.id).id)
    assert repo.get_response(engine, rid).scores_stale
    _score_all(engine, ds)
    assert not repo.get_response(engine, rid).scores_stale


def test_exports_carry_the_new_sentences(engine: Engine, tmp_path: Path) -> None:
    ds, rid = _ingest(engine, tmp_path, labels=[0, 1, 0, 0])
    repo.split_sentence(engine, rid, 1, SENTENCES[1].index("then"), "ann")
    out = export_dataset(engine, ds, tmp_path / "out.jsonl", format="native").path
    [row] = [r for r in map(json.loads, Path(out).read_text().splitlines()) if r["id"] == "x1"]
    assert row["sentences"] == [SENTENCES[0], "Second step,", "then a third one.", *SENTENCES[2:]]
    assert row["sentence_labels"] == [0, None, None, 0, 0]
    steps = export_dataset(engine, ds, tmp_path / "steps.jsonl", format="stepwise-jsonl", soft_labels=True)
    written = Path(steps.path).read_text()
    assert "then a third one." in written and "Second step, then" not in written, steps
    # Re-importable: the new offsets locate their sentences in the text.
    again = ingest_file(engine, Path(out), "again", labels_as="gold", imported_by="me")
    assert again.n_sentences == 6


def test_migration_0013_upgrades_a_store_with_data_and_refuses_to_downgrade_past_a_fix(
    engine: Engine, tmp_path: Path
) -> None:
    from alembic import command

    from db.schema import alembic_config, current_revision, head_revision, migrating, upgrade

    _, rid = _ingest(engine, tmp_path, labels=[0, 1, 0, 0])
    with migrating(engine) as conn:
        command.downgrade(alembic_config(conn), "0012")
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    repo.merge_sentences(engine, rid, 0, "ann")
    _consistent(engine, repo.get_response(engine, rid))
    with pytest.raises(RuntimeError, match="cannot be downgraded"), migrating(engine) as conn:
        command.downgrade(alembic_config(conn), "0012")
    assert current_revision(engine) == head_revision()


def test_concurrent_edits_and_saves_of_one_response_stay_consistent(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """Threads (own engines) race the same edit from the same view and label saves: exactly one edit wins, the
    others are refused as stale, and the store stays consistent."""
    import threading

    from db.engine import get_engine

    _, rid = _ingest(engine, tmp_path)
    seen = [(s.start, s.end) for s in repo.get_response(engine, rid).sentences]
    outcomes: list[str] = []
    lock = threading.Lock()

    def edit() -> None:
        own = get_engine(db_url)
        try:
            repo.merge_sentences(own, rid, 0, "ann", expected=seen)
            result = "merged"
        except repo.StaleSplitError:
            result = "stale"
        finally:
            own.dispose()
        with lock:
            outcomes.append(result)

    def save() -> None:
        own = get_engine(db_url)
        try:
            live = repo.get_response(own, rid).sentences[-1].id  # the last sentence is never replaced
            repo.record_labels(own, rid, {live: 1}, "bob")
        finally:
            own.dispose()

    threads = [threading.Thread(target=edit) for _ in range(4)] + [
        threading.Thread(target=save) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["merged", "stale", "stale", "stale"]
    after = repo.get_response(engine, rid)
    _consistent(engine, after)
    assert len(after.sentences) == len(SENTENCES) - 1 and after.sentences[-1].label == 1
