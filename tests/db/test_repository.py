from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from db import repository as repo
from db.ingest import ingest_file
from fractal_core.errors import InputError
from tests.db.conftest import make_rows, write_jsonl


@pytest.fixture
def ds(engine: Engine, tmp_path: Path) -> int:
    """12 responses r0..r11 (labels alternate 0/1; every third has imported sentence labels)."""
    summary = ingest_file(engine, write_jsonl(tmp_path / "train.jsonl", make_rows(12)), "demo")
    return summary.dataset_id


def sentence_ids(engine: Engine, response_id: int) -> list[int]:
    return [s.id for s in repo.get_response(engine, response_id).sentences]


def rid(engine: Engine, ds: int, external: str) -> int:
    found = repo.response_id_by_external(engine, ds, external)
    assert found is not None
    return found


def test_datasets_counts_and_balance(engine: Engine, ds: int) -> None:
    (row,) = repo.list_datasets(engine)
    assert (row.name, row.n_responses, row.label_kind, row.label_balance) == (
        "demo",
        12,
        "binary",
        {"0": 6, "1": 6},
    )
    assert row.n_sentences == sum(2 + i % 3 for i in range(12))
    assert row.n_gold_responses == 0  # imported labels are not gold
    with pytest.raises(InputError, match="already exists"):
        repo.create_dataset(engine, "demo")
    with pytest.raises(InputError, match="invalid dataset name"):
        repo.create_dataset(engine, "bad name!")
    with pytest.raises(InputError, match="datasets: demo"):
        repo.require_dataset(engine, "nope")
    empty = repo.create_dataset(engine, "empty", label_kind="ordinal:5")
    assert empty.n_responses == 0 and empty.label_balance == {}


def test_get_response_has_offsets_and_imported_labels(engine: Engine, ds: int) -> None:
    detail = repo.get_response(engine, rid(engine, ds, "r3"))
    assert detail.context == "Question 3?" and detail.response_label == 1.0
    for s in detail.sentences:
        assert detail.text[s.start : s.end] == s.text
    assert [s.label for s in detail.sentences] == [0, 1]
    assert {s.label_source for s in detail.sentences} == {"imported"}
    assert detail.sentences[0].annotator == "import:train.jsonl"
    assert detail.consistency_warning is None
    with pytest.raises(InputError, match="no response"):
        repo.get_response(engine, 10_000)


def test_corrections_history_undo_and_budget(engine: Engine, ds: int) -> None:
    r1 = rid(engine, ds, "r1")  # label 1, no sentence labels
    s0, s1, _ = sentence_ids(engine, r1)
    first = repo.record_label(engine, s0, 0, "ann")
    assert [(c.old_label, c.new_label) for c in first.changes] == [(None, 0)]
    assert first.warning is None  # s1, s2 may still be positive
    assert repo.record_label(engine, s0, 0, "ann").changes == []  # no-op is not history
    both = repo.record_labels(engine, r1, {s1: 0, sentence_ids(engine, r1)[2]: 0}, "ann")
    assert len(both.changes) == 2
    assert both.warning == "response label is 1 (max) but no sentence is labelled positive"
    assert repo.gold_budget(engine, ds).gold_responses == 1
    assert repo.list_responses(engine, ds, label_status="complete").total == 1

    undone = repo.undo_last(engine, "ann")
    assert undone is not None and len(undone.reverted) == 2  # the whole response action
    labels = [s.label for s in repo.get_response(engine, r1).sentences]
    assert labels == [0, None, None]
    undone = repo.undo_last(engine, "ann")
    assert undone is not None and [c.new_label for c in undone.reverted] == [None]
    assert repo.undo_last(engine, "ann") is None
    assert repo.gold_budget(engine, ds).gold_responses == 0
    history = repo.label_history(engine, sentence_id=s0)
    assert [(h.old_label, h.new_label) for h in history] == [(None, 0), (0, None)]


def test_gold_correction_over_imported_label_and_undo_restores_it(engine: Engine, ds: int) -> None:
    r0 = rid(engine, ds, "r0")  # imported labels [0, 0]
    s0 = sentence_ids(engine, r0)[0]
    repo.record_label(engine, s0, 0, "ann")  # same value, now gold: a change of source
    sent = repo.get_response(engine, r0).sentences[0]
    assert (sent.label, sent.label_source, sent.annotator) == (0, "human", "ann")
    assert repo.gold_budget(engine, ds).gold_responses == 1
    repo.undo_last(engine, "ann")
    sent = repo.get_response(engine, r0).sentences[0]
    assert (sent.label, sent.label_source, sent.annotator) == (0, "imported", "import:train.jsonl")
    assert repo.gold_budget(engine, ds).gold_responses == 0


def test_undo_leaves_someone_elses_later_edit(engine: Engine, ds: int) -> None:
    r1 = rid(engine, ds, "r1")
    s0 = sentence_ids(engine, r1)[0]
    repo.record_label(engine, s0, 1, "ann")
    repo.record_label(engine, s0, 0, "bob")
    result = repo.undo_last(engine, "ann")
    assert result is not None and result.reverted == [] and result.skipped == [s0]
    assert repo.get_response(engine, r1).sentences[0].label == 0
    assert repo.undo_last(engine, "ann") is None


def test_label_validation(engine: Engine, ds: int) -> None:
    s0 = sentence_ids(engine, rid(engine, ds, "r1"))[0]
    with pytest.raises(InputError, match="outside 0..1"):
        repo.record_label(engine, s0, 2, "ann")
    with pytest.raises(InputError, match="annotator"):
        repo.record_label(engine, s0, 1, " ")
    with pytest.raises(InputError, match="source"):
        repo.record_label(engine, s0, 1, "ann", source="guess")
    with pytest.raises(InputError, match="do not belong"):
        repo.record_labels(engine, rid(engine, ds, "r2"), {s0: 1}, "ann")
    assert repo.label_history(engine, sentence_id=s0) == []


def _train(engine: Engine, ds: int, seed: int) -> int:
    ids = repo.load_training_set(engine, ds).sentence_ids
    scores = np.random.default_rng(seed).random(len(ids))
    mv = repo.create_model_version(engine, ds, method="fractal", config={"seed": seed})
    assert repo.store_scores(engine, mv.id, ids, scores, chunk_size=7) == len(ids)
    return repo.finish_model_version(engine, mv.id, metrics={"auc": 0.5 + seed / 100}).id


def test_model_versions_scores_sorting_and_rollback(engine: Engine, ds: int) -> None:
    v1 = _train(engine, ds, 1)
    assert repo.active_model_version(engine, ds) is None
    page = repo.list_responses(engine, ds)  # no active version: id order, no scores
    assert page.model_version_id is None and [r.external_id for r in page.rows][:2] == ["r0", "r1"]
    repo.activate_model_version(engine, v1)
    page = repo.list_responses(engine, ds, sort="uncertainty", page_size=5)
    assert page.total == 12 and page.model_version_id == v1
    unc = [r.uncertainty for r in page.rows]
    assert unc == sorted(unc, reverse=True)

    # Each response's summary is its aggregation of sentence scores.
    detail = repo.get_response(engine, page.rows[0].id)
    assert detail.score == pytest.approx(max(s.score for s in detail.sentences))
    assert detail.uncertainty == pytest.approx(np.mean([1 - abs(2 * s.score - 1) for s in detail.sentences]))
    assert detail.disagreement == pytest.approx(abs(detail.score - detail.response_label))

    pages = [repo.list_responses(engine, ds, sort="score", page=p, page_size=5) for p in range(3)]
    seen = [r.external_id for p in pages for r in p.rows]
    assert len(seen) == len(set(seen)) == 12
    flipped = repo.list_responses(engine, ds, disagreement_only=True)
    assert all(r.disagreement is not None and r.disagreement > 0.5 for r in flipped.rows)
    assert flipped.total == sum(1 for p in pages for r in p.rows if r.disagreement and r.disagreement > 0.5)
    bounded = repo.list_responses(engine, ds, sort="score", min_score=0.5, max_score=0.9)
    assert all(0.5 <= (r.score or 0) <= 0.9 for r in bounded.rows)

    v2 = _train(engine, ds, 2)
    repo.activate_model_version(engine, v2)
    versions = repo.list_model_versions(engine, ds)
    assert [(v.version, v.is_active, v.status) for v in versions] == [(2, True, "ready"), (1, False, "ready")]
    assert versions[0].metrics == {"auc": 0.52} and versions[0].n_scores == versions[1].n_scores > 0
    back = repo.rollback_model_version(engine, ds)
    assert back is not None and back.id == v1 and back.is_active
    with pytest.raises(InputError, match="replaced no earlier"):
        repo.rollback_model_version(engine, ds)


def test_unscored_responses_come_after_scored_ones(engine: Engine, ds: int, tmp_path: Path) -> None:
    repo.activate_model_version(engine, _train(engine, ds, 3))
    ingest_file(engine, write_jsonl(tmp_path / "more.jsonl", make_rows(3, prefix="late")), "demo")
    rows = repo.list_responses(engine, ds, sort="uncertainty", page=2, page_size=5).rows
    assert [r.score is None for r in rows] == [False, False, True, True, True]
    assert [r.external_id for r in rows[2:]] == ["late0", "late1", "late2"]
    assert repo.list_responses(engine, ds).total == 15
    assert repo.list_responses(engine, ds, min_score=0.0).total == 12


def test_filters_by_annotator_and_status(engine: Engine, ds: int) -> None:
    r1, r5 = rid(engine, ds, "r1"), rid(engine, ds, "r5")
    repo.record_label(engine, sentence_ids(engine, r1)[0], 1, "ann")
    repo.record_label(engine, sentence_ids(engine, r5)[0], 0, "bob")
    assert [r.id for r in repo.list_responses(engine, ds, sort="id", annotator="ann").rows] == [r1]
    assert repo.list_responses(engine, ds, label_status="partial").total == 2
    assert repo.list_responses(engine, ds, label_status="unlabelled").total == 10
    assert repo.list_responses(engine, ds, split="train").total == 12  # from the file name
    with pytest.raises(ValueError):
        repo.list_responses(engine, ds, page_size=0)


def test_store_scores_rejects_bad_input(engine: Engine, ds: int) -> None:
    mv = repo.create_model_version(engine, ds, method="fractal")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        repo.store_scores(engine, mv.id, [1], [1.5])
    with pytest.raises(ValueError, match=r"\(n,\)"):
        repo.store_scores(engine, mv.id, [1, 2], [0.5])
    failed = repo.finish_model_version(engine, mv.id, status="failed", error="boom")
    assert failed.status == "failed" and failed.error == "boom"
    with pytest.raises(ValueError, match="training version"):
        repo.store_scores(engine, mv.id, [1], [0.5])
    with pytest.raises(InputError, match="only a ready version"):
        repo.activate_model_version(engine, mv.id)


def test_load_records_gold_only_unless_asked(engine: Engine, ds: int) -> None:
    r1 = rid(engine, ds, "r1")
    repo.record_label(engine, sentence_ids(engine, r1)[1], 1, "ann")
    data = repo.load_training_set(engine, ds)
    records = data.records
    by_id = {r.id: r for r in records}
    assert len(records) == 12
    assert by_id["r0"].sentence_labels is None  # imported only
    assert by_id["r1"].sentence_labels == [None, 1, None]
    k = [r.id for r in records].index("r1")
    assert data.response_ids[k] == r1
    assert data.sentence_ids_of(k) == sentence_ids(engine, r1)
    assert by_id["r1"].meta == {"n": 1}  # the file's meta only: no database ids smuggled in
    # Every current label, imported ones included, in the same flat order as the sentence ids.
    assert data.file_labels[data.offsets[k] : data.offsets[k + 1]].tolist() == [-1, 1, -1]
    k0 = [r.id for r in records].index("r0")
    assert data.file_labels[data.offsets[k0] : data.offsets[k0 + 1]].tolist() == [0, 0]
    with_imported = {r.id: r for r in repo.load_records(engine, ds, include_imported=True)}
    assert with_imported["r0"].sentence_labels == [0, 0]
    assert all(r.sentence_labels is None for r in repo.load_records(engine, ds, with_gold=False))


def _load_all_rows(
    engine: Engine, dataset_id: int, *, with_gold: bool, include_imported: bool, split: str | None
):
    """The loader as it was before it streamed: every row of both queries in lists, grouped in a dict."""
    from collections import defaultdict

    from sqlalchemy import select

    from db.models import GOLD_SOURCES, CurrentLabel, Response, Sentence
    from fractal_core.data.records import ResponseRecord, Span

    sources = (*GOLD_SOURCES, "imported") if include_imported else GOLD_SOURCES
    conds = [Response.dataset_id == dataset_id] + ([Response.split == split] if split is not None else [])
    with engine.connect() as conn:
        responses = conn.execute(
            select(Response.id, Response.external_id, Response.context, Response.text, Response.response_label,
                   Response.aggregation, Response.task, Response.meta).where(*conds).order_by(Response.id)
        ).all()  # fmt: skip
        rows = conn.execute(
            select(Sentence.response_id, Sentence.id, Sentence.start, Sentence.end, Sentence.text,
                   CurrentLabel.label, CurrentLabel.source)
            .join(Response, Response.id == Sentence.response_id)
            .outerjoin(CurrentLabel, CurrentLabel.sentence_id == Sentence.id)
            .where(*conds)
            .order_by(Sentence.response_id, Sentence.position)
        ).all()  # fmt: skip
    by_response = defaultdict(list)
    for row in rows:
        by_response[row[0]].append(row)
    records = []
    for rid_, external_id, context, text, label, aggregation, task, meta in responses:
        sents = by_response.get(rid_, [])
        labels = [lab if (with_gold and src in sources) else None for *_, lab, src in sents]
        records.append(
            ResponseRecord(
                id=external_id, context=context, text=text, spans=[Span(r[2], r[3], r[4]) for r in sents],
                response_label=label, aggregation=aggregation,
                sentence_labels=labels if any(v is not None for v in labels) else None, task=task,
                meta=dict(meta or {}),
            )
        )  # fmt: skip
    sizes = [len(r.spans) for r in records]
    return (
        records,
        np.array([r[0] for r in responses], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        np.array([-1 if r[5] is None else r[5] for r in rows], dtype=np.int64),
    )


def test_streamed_load_equals_loading_every_row_at_once(
    engine: Engine, ds: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from db.repository import records as loader

    # Another dataset's responses interleaved by id, a second split, gold, reviewed and imported labels.
    other = ingest_file(
        engine, write_jsonl(tmp_path / "o.jsonl", make_rows(5, prefix="o")), "other"
    ).dataset_id
    ingest_file(engine, write_jsonl(tmp_path / "v.jsonl", make_rows(7, prefix="v")), "demo", split="valid")
    ingest_file(engine, write_jsonl(tmp_path / "o2.jsonl", make_rows(3, prefix="p")), "other")
    repo.record_label(engine, sentence_ids(engine, rid(engine, ds, "r1"))[1], 1, "ann")
    repo.record_label(engine, sentence_ids(engine, rid(engine, ds, "v2"))[0], 0, "ann", source="adjudicated")
    over_imported = sentence_ids(engine, rid(engine, ds, "r3"))[0]
    repo.record_label(engine, over_imported, 1, "ann")
    monkeypatch.setattr(loader, "STREAM_ROWS", 4)  # many round trips, batches ending mid-response
    for dataset_id in (ds, other):
        for with_gold, include_imported, split in (
            (True, False, None), (True, True, None), (False, False, None), (True, True, "valid"),
            (True, False, "train"), (True, False, "none"),
        ):  # fmt: skip
            data = repo.load_training_set(
                engine, dataset_id, with_gold=with_gold, include_imported=include_imported, split=split
            )
            records, response_ids, sids, offsets, file_labels = _load_all_rows(
                engine, dataset_id, with_gold=with_gold, include_imported=include_imported, split=split
            )
            assert data.records == records
            for got, want in zip(
                (data.response_ids, data.sentence_ids, data.offsets, data.file_labels),
                (response_ids, sids, offsets, file_labels),
                strict=True,
            ):
                assert got.dtype == np.int64 and np.array_equal(got, want)
    assert len(repo.load_training_set(engine, ds).records) == 19
    assert repo.load_training_set(engine, ds, split="none").offsets.tolist() == [0]


def test_every_filter_and_sort_matches_a_brute_force_listing(engine: Engine, ds: int, tmp_path: Path) -> None:
    repo.activate_model_version(engine, _train(engine, ds, 4))
    ingest_file(engine, write_jsonl(tmp_path / "test.jsonl", make_rows(4, prefix="late")), "demo")
    for name, who in (("r1", "ann"), ("r2", "bob"), ("late1", "ann"), ("r4", "ann")):
        sids = sentence_ids(engine, rid(engine, ds, name))
        repo.record_labels(engine, rid(engine, ds, name), {s: 0 for s in sids[: 1 + (name == "r4") * 5]}, who)
    everything = [
        repo.get_response(engine, r.id)
        for r in repo.list_responses(engine, ds, sort="id", page_size=100).rows
    ]
    annotators = {d.id: {s.annotator for s in d.sentences if s.label_source == "human"} for d in everything}

    def brute(sort: str, **f: object) -> list[int]:
        keep = []
        for d in everything:
            n_gold = sum(s.label_source == "human" for s in d.sentences)
            status = {
                "unlabelled": n_gold == 0,
                "partial": 0 < n_gold < len(d.sentences),
                "complete": n_gold == len(d.sentences),
            }
            if f.get("label_status") and not status[str(f["label_status"])]:
                continue
            if f.get("annotator") and f["annotator"] not in annotators[d.id]:
                continue
            if f.get("split") and d.split != f["split"]:
                continue
            scored_only = f.get("disagreement_only") or f.get("min_score") is not None
            if scored_only and d.score is None:
                continue
            if f.get("disagreement_only") and not (d.disagreement or 0) > 0.5:
                continue
            if f.get("min_score") is not None and (d.score or 0) < float(f["min_score"]):  # type: ignore[arg-type]
                continue
            keep.append(d)
        if sort == "id":
            return [d.id for d in keep]
        scored = sorted(
            (d for d in keep if d.score is not None), key=lambda d: (getattr(d, sort), d.id), reverse=True
        )
        return [d.id for d in scored] + [d.id for d in keep if d.score is None]

    filters: list[dict[str, object]] = [
        {},
        {"label_status": "unlabelled"},
        {"label_status": "partial"},
        {"label_status": "complete"},
        {"annotator": "ann"},
        {"annotator": "ann", "label_status": "partial"},
        {"split": "test"},
        {"disagreement_only": True},
        {"min_score": 0.6, "annotator": "ann"},
    ]
    for sort in ("uncertainty", "disagreement", "score", "id"):
        for f in filters:
            pages = [repo.list_responses(engine, ds, sort=sort, page=p, page_size=3, **f) for p in range(8)]  # type: ignore[arg-type]
            listed = [r.id for p in pages for r in p.rows]
            expected = brute(sort, **f)
            assert listed == expected, (sort, f)
            assert pages[0].total == len(expected), (sort, f)


def test_a_model_version_of_another_dataset_is_refused(engine: Engine, ds: int, tmp_path: Path) -> None:
    other = ingest_file(
        engine, write_jsonl(tmp_path / "o.jsonl", make_rows(3, prefix="o")), "other"
    ).dataset_id
    mv = repo.create_model_version(engine, other, method="fractal")
    with pytest.raises(InputError, match="does not belong"):
        repo.list_responses(engine, ds, model_version_id=mv.id)
    with pytest.raises(InputError, match="does not belong"):
        repo.get_response(engine, rid(engine, ds, "r0"), model_version_id=mv.id)


def test_ordinal_response_whose_sentences_all_score_zero_shows_as_disagreeing(
    engine: Engine, tmp_path: Path
) -> None:
    rows = [
        {"id": f"o{label}", "context": "Q?", "sentences": ["A.", "B."], "response_label": label}
        for label in (0, 1, 2)
    ]
    ds = ingest_file(engine, write_jsonl(tmp_path / "ordinal.jsonl", rows), "ordinal").dataset_id
    assert repo.require_dataset(engine, ds).label_kind == "ordinal"
    data = repo.load_training_set(engine, ds)
    mv = repo.create_model_version(engine, ds, method="fractal")
    repo.store_scores(engine, mv.id, data.sentence_ids, np.zeros(len(data.sentence_ids)))
    repo.activate_model_version(engine, repo.finish_model_version(engine, mv.id).id)
    flagged = repo.list_responses(engine, ds, disagreement_only=True, sort="id")
    assert [r.external_id for r in flagged.rows] == [
        "o1",
        "o2",
    ]  # labelled 1 of 0..2 with no positive sentence
    assert all(r.disagreement == pytest.approx(1.0) for r in flagged.rows)
