"""Team work in the store: assignment with overlap, labels kept apart per annotator, agreement, adjudication,
progress, notes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from db import repository as repo
from db import team
from db.ingest import ingest_file
from fractal_core.errors import InputError
from tests.db.conftest import make_rows, write_jsonl


@pytest.fixture
def dataset_id(engine, tmp_path) -> int:
    ingest_file(engine, write_jsonl(tmp_path / "d.jsonl", make_rows(40, labelled_every=1000)), "d")
    d = repo.get_dataset(engine, "d")
    assert d is not None
    return d.id


def test_assign_gives_the_overlap_sample_to_k_annotators_and_the_rest_to_one(engine, dataset_id) -> None:
    team.set_overlap(engine, dataset_id, 2, 0.25)
    summary = team.assign(engine, dataset_id, ["ann", "bob", "cy"], seed=3)
    assert (summary.n_responses, summary.n_overlap) == (40, 10)
    assert sum(summary.per_annotator.values()) == 30 + 2 * 10
    assert max(summary.per_annotator.values()) - min(summary.per_annotator.values()) <= 1  # even load
    ids = [r.id for r in repo.list_responses(engine, dataset_id, sort="id", page_size=100).rows]
    per_response = [team.assignees(engine, rid) for rid in ids]
    assert sorted(len(a) for a in per_response) == [1] * 30 + [2] * 10
    assert all(len(set(a)) == len(a) for a in per_response)
    # Re-running assigns only new responses; queues hold what is not done.
    assert team.assign(engine, dataset_id, ["ann"]).n_responses == 0
    queue = team.queue(engine, dataset_id, "ann")
    assert len(queue) == summary.per_annotator["ann"]
    team.mark_done(engine, queue[0], "ann")
    assert team.queue(engine, dataset_id, "ann") == queue[1:]
    with pytest.raises(InputError):
        team.assign(engine, dataset_id, [])
    with pytest.raises(InputError):
        team.set_overlap(engine, dataset_id, 0, 0.5)


def _overlap_response(engine, dataset_id) -> int:
    team.set_overlap(engine, dataset_id, 2, 1.0)
    team.assign(engine, dataset_id, ["ann", "bob"])
    return repo.list_responses(engine, dataset_id, sort="id").rows[1].id


def test_each_annotator_labels_are_kept_apart_and_undo_is_per_annotator(engine, dataset_id) -> None:
    rid = _overlap_response(engine, dataset_id)
    s = [x.id for x in repo.get_response(engine, rid).sentences]
    team.record_annotations(engine, rid, {s[0]: 1, s[1]: 0}, "ann")
    team.record_annotations(engine, rid, {s[0]: 0, s[1]: 0}, "bob")
    assert team.annotations_by_annotator(engine, rid) == {
        "ann": {s[0]: 1, s[1]: 0},
        "bob": {s[0]: 0, s[1]: 0},
    }
    # The gold view is untouched until adjudication.
    assert all(x.label is None for x in repo.get_response(engine, rid).sentences)
    undone = team.undo_annotation(engine, "ann", rid)
    assert undone is not None and len(undone.reverted) == 2
    assert team.own_labels(engine, rid, "ann") == {}
    assert team.own_labels(engine, rid, "bob") == {s[0]: 0, s[1]: 0}
    assert team.undo_annotation(engine, "ann", rid) is None
    assert [(h.annotator, h.new_label) for h in team.annotation_history(engine, rid)][:2] == [
        ("ann", 1),
        ("ann", 0),
    ]


def test_agreement_disagreements_and_adjudication(engine, dataset_id) -> None:
    team.set_overlap(engine, dataset_id, 2, 1.0)
    team.assign(engine, dataset_id, ["ann", "bob"])
    rows = repo.list_responses(engine, dataset_id, sort="id", page_size=100).rows
    rng = np.random.default_rng(0)
    for r in rows:
        sids = [x.id for x in repo.get_response(engine, r.id).sentences]
        a = rng.integers(0, 2, len(sids))
        b = np.where(rng.random(len(sids)) < 0.8, a, 1 - a)
        team.record_annotations(engine, r.id, dict(zip(sids, a.tolist(), strict=True)), "ann")
        team.record_annotations(engine, r.id, dict(zip(sids, b.tolist(), strict=True)), "bob")
    report = team.agreement(engine, dataset_id)
    assert report.n_responses == 40 and report.n_sentences == report.n_labels // 2
    [pair] = report.pairs
    assert (pair.annotator_a, pair.annotator_b) == ("ann", "bob")
    assert 0.6 < pair.percent < 0.95 and 0.2 < pair.kappa < 0.9
    assert -1 <= report.alpha <= 1 and set(report.per_label) == {0, 1}
    found = team.disagreements(engine, dataset_id)
    assert found and found[0].n_disagreeing >= 1 and found[0].annotators == ["ann", "bob"]
    target = found[0].response_id
    sids = [x.id for x in repo.get_response(engine, target).sentences]
    gold = {sid: 0 for sid in sids}
    team.adjudicate(engine, target, gold, "rita")
    detail = repo.get_response(engine, target)
    assert [(x.label, x.label_source, x.annotator) for x in detail.sentences] == [
        (0, "adjudicated", "rita")
    ] * len(sids)
    adj = team.adjudicated_labels(engine, [target])[target]
    assert adj["reviewer"] == "rita" and adj["labels"] == gold
    assert target not in {d.response_id for d in team.disagreements(engine, dataset_id)}


def test_agreement_without_annotations_is_empty(engine, dataset_id) -> None:
    report = team.agreement(engine, dataset_id)
    assert report.n_labels == 0 and report.pairs == [] and math.isnan(report.alpha)


def test_progress_counts_assigned_done_and_labels(engine, dataset_id) -> None:
    rid = _overlap_response(engine, dataset_id)
    s = [x.id for x in repo.get_response(engine, rid).sentences]
    team.record_annotations(engine, rid, {s[0]: 1}, "ann")
    team.record_annotations(engine, rid, {s[1]: 0}, "ann")
    team.mark_done(engine, rid, "ann")
    rows = {p.annotator: p for p in team.progress(engine, dataset_id)}
    assert rows["ann"].assigned == 40 and rows["ann"].done == 1
    assert rows["ann"].labels_total == 2 and rows["ann"].labels_last_hour == 2
    assert rows["bob"].labels_total == 0


def test_notes_and_guidelines(engine, dataset_id) -> None:
    rid = repo.list_responses(engine, dataset_id, sort="id").rows[0].id
    team.add_note(engine, rid, "ann", "<script>alert(1)</script> step 2 is odd", "unsure")
    team.add_note(engine, rid, "bob", "", "bad split")
    assert [(n.author, n.flag) for n in team.notes(engine, rid)] == [("ann", "unsure"), ("bob", "bad split")]
    with pytest.raises(InputError):
        team.add_note(engine, rid, "ann", "x", "nonsense")
    with pytest.raises(InputError):
        team.add_note(engine, rid, "ann", "   ")
    team.set_guidelines(engine, dataset_id, "# Rules\n\nMark the *first* wrong step.")
    assert team.team_settings(engine, dataset_id).guidelines.startswith("# Rules")


def test_native_export_carries_every_annotators_labels_and_the_adjudicated_gold(
    engine, dataset_id, tmp_path
) -> None:
    import json

    from db.export import export_dataset

    rid = _overlap_response(engine, dataset_id)
    s = [x.id for x in repo.get_response(engine, rid).sentences]
    team.record_annotations(engine, rid, {s[0]: 1}, "ann")
    team.record_annotations(engine, rid, {s[0]: 0, s[1]: 0}, "bob")
    team.adjudicate(engine, rid, {s[0]: 1, s[1]: 0}, "rita")
    out = tmp_path / "native.jsonl"
    export_dataset(engine, dataset_id, out, format="native")
    rows = {
        r["meta"]["fractal"]["provenance"]["response_db_id"]: r
        for r in map(json.loads, out.read_text().splitlines())
    }
    block = rows[rid]["meta"]["fractal"]
    blanks = [None] * (len(s) - 2)
    assert block["annotations"] == {"ann": [1, None, *blanks], "bob": [0, 0, *blanks]}
    assert block["adjudicated"]["reviewer"] == "rita"
    assert [(lab or {}).get("label") for lab in block["labels"][:2]] == [1, 0]
    assert {(lab or {}).get("source") for lab in block["labels"][:2]} == {"adjudicated"}
    other = next(r for k, r in rows.items() if k != rid)["meta"]["fractal"]
    assert other["annotations"] == {} and other["adjudicated"] is None
