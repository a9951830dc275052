"""No silent overwrites: a save from a stale view is refused with the other person's label, nothing stored."""

from __future__ import annotations

import pytest

from db import repository as repo
from db.ingest import ingest_file
from tests.db.conftest import make_rows, write_jsonl


@pytest.fixture
def response(engine, tmp_path):
    ingest_file(engine, write_jsonl(tmp_path / "d.jsonl", make_rows(4, labelled_every=100)), "d")
    dataset = repo.get_dataset(engine, "d")
    assert dataset is not None
    rid = repo.list_responses(engine, dataset.id, sort="id").rows[1].id  # label 1, 3 sentences
    return repo.get_response(engine, rid)


def test_stale_save_is_refused_and_shows_theirs(engine, response) -> None:
    s0 = response.sentences[0]
    seen = {s0.id: s0.label_version}  # both people opened the response: no label yet
    repo.record_labels(engine, response.id, {s0.id: 1}, "bob", expected=seen)
    with pytest.raises(repo.StaleLabelError) as err:
        repo.record_labels(engine, response.id, {s0.id: 0}, "ann", expected=seen)
    [conflict] = err.value.conflicts
    assert (conflict.sentence_id, conflict.position, conflict.label, conflict.annotator) == (
        s0.id,
        0,
        1,
        "bob",
    )
    assert "bob changed 1 of these labels" in str(err.value)
    # Nothing of ann's was stored.
    assert [(h.new_label, h.annotator) for h in repo.label_history(engine, sentence_id=s0.id)] == [(1, "bob")]
    # Replacing knowingly (with the version she was shown) goes through.
    repo.record_labels(engine, response.id, {s0.id: 0}, "ann", expected={s0.id: conflict.version})
    assert repo.get_response(engine, response.id).sentences[0].label == 0


def test_same_label_or_untouched_sentences_are_no_conflict(engine, response) -> None:
    s0, s1 = response.sentences[:2]
    seen = {s.id: s.label_version for s in response.sentences}
    repo.record_labels(engine, response.id, {s0.id: 1}, "bob", expected=seen)
    # ann sets the same label bob set, and labels another sentence: nothing would be lost.
    result = repo.record_labels(engine, response.id, {s0.id: 1, s1.id: 0}, "ann", expected=seen)
    assert [c.sentence_id for c in result.changes] == [s1.id]  # s0 already had that label
    # A clear from a stale view is a conflict too.
    with pytest.raises(repo.StaleLabelError):
        repo.record_labels(engine, response.id, {s1.id: None}, "bob", expected=seen)


def test_version_changes_on_every_write_even_back_to_the_same_label(engine, response) -> None:
    s0 = response.sentences[0]
    repo.record_labels(engine, response.id, {s0.id: 1}, "bob")
    v1 = repo.get_response(engine, response.id).sentences[0].label_version
    repo.record_labels(engine, response.id, {s0.id: 0}, "carl")
    repo.record_labels(engine, response.id, {s0.id: 1}, "bob")
    v3 = repo.get_response(engine, response.id).sentences[0].label_version
    assert v1 is not None and v3 is not None and v3 != v1
    with pytest.raises(repo.StaleLabelError):  # ann saw bob's first 1, carl and bob changed it since
        repo.record_labels(engine, response.id, {s0.id: 0}, "ann", expected={s0.id: v1})
