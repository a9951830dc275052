from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine

from db import export as export_mod
from db import repository as repo
from db.export import export_dataset
from db.ingest import ingest_file
from fractal_core.errors import InputError
from tests.db.conftest import make_rows, processbench_valid, write_jsonl


def snapshot(engine: Engine, dataset: str, *, provenance: bool = True) -> list[tuple[Any, ...]]:
    """Responses, sentences with offsets and current labels (with their source, annotator and time unless
    ``provenance=False``: a file's labels never keep those, see db.ingest)."""
    ds = repo.require_dataset(engine, dataset)
    out = []
    for page in range(1000):
        rows = repo.list_responses(engine, ds.id, sort="id", page=page, page_size=500).rows
        if not rows:
            break
        for row in rows:
            d = repo.get_response(engine, row.id)
            out.append(
                (
                    d.external_id,
                    d.context,
                    d.text,
                    d.response_label,
                    d.aggregation,
                    d.task,
                    d.split,
                    d.meta,
                    [
                        (
                            s.position,
                            s.start,
                            s.end,
                            s.text,
                            s.label,
                            *((s.label_source, s.annotator, s.labelled_at) if provenance else ()),
                        )
                        for s in d.sentences
                    ],
                )
            )
    return out


@pytest.fixture
def src(engine: Engine, tmp_path: Path) -> int:
    """9 responses with imported labels, gold corrections (one contradicting its bag) and an active model."""
    ds = ingest_file(engine, write_jsonl(tmp_path / "train.jsonl", make_rows(9)), "src").dataset_id
    r1 = repo.get_response(engine, repo.response_id_by_external(engine, ds, "r1") or -1)
    repo.record_labels(engine, r1.id, {s.id: 0 for s in r1.sentences}, "ann")  # contradicts label 1
    r0 = repo.get_response(engine, repo.response_id_by_external(engine, ds, "r0") or -1)
    repo.record_label(engine, r0.sentences[0].id, 0, "bob", source="adjudicated")
    ids = repo.load_training_set(engine, ds).sentence_ids
    mv = repo.create_model_version(engine, ds, method="fractal")
    repo.store_scores(engine, mv.id, ids, np.linspace(0.05, 0.95, len(ids)))
    repo.activate_model_version(engine, repo.finish_model_version(engine, mv.id).id)
    return ds


def test_native_round_trip_keeps_responses_sentences_and_labels(
    engine: Engine, src: int, tmp_path: Path
) -> None:
    (tmp_path / "export").mkdir()
    out = tmp_path / "export" / "src.jsonl"
    summary = export_dataset(engine, "src", out, format="native")
    assert (summary.n_rows, summary.model_version) == (9, 1)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    r1 = next(line for line in lines if line["id"] == "r1")
    assert r1["sentence_labels"] is None  # contradicts its bag: kept in meta.fractal only
    assert [lab["annotator"] for lab in r1["meta"]["fractal"]["labels"]] == ["ann"] * 3
    r0 = next(line for line in lines if line["id"] == "r0")
    assert r0["sentence_labels"] == [0, 0]
    assert r0["meta"]["fractal"]["labels"][0]["source"] == "adjudicated"
    assert r0["meta"]["fractal"]["scores"][0] == pytest.approx(0.05)
    assert r0["meta"]["fractal"]["model_version"]["version"] == 1
    assert r0["meta"]["fractal"]["provenance"]["file"] == "train.jsonl"

    ingest_file(engine, out, "copy", labels_as="gold", imported_by="carol")
    # Responses, sentences, offsets and label values come back; r1's labels contradict its bag, so the file
    # holds them only in meta.fractal, which is provenance from another store and never restored.
    expected = [
        (*row[:-1], [(*s[:-1], None) for s in row[-1]]) if row[0] == "r1" else row
        for row in snapshot(engine, "src", provenance=False)
    ]
    assert snapshot(engine, "copy", provenance=False) == expected
    copy = repo.require_dataset(engine, "copy")
    sources = {
        (s.label_source, s.annotator)
        for r in expected
        for s in repo.get_response(
            engine, repo.response_id_by_external(engine, copy.id, r[0]) or -1
        ).sentences
        if s.label is not None
    }
    assert sources == {("imported_gold", "carol")}
    assert copy.label_balance == repo.require_dataset(engine, "src").label_balance


def test_native_round_trip_of_real_data(engine: Engine, tmp_path: Path) -> None:
    ingest_file(engine, processbench_valid(), "pb")
    out = tmp_path / "pb.jsonl"
    export_dataset(engine, "pb", out, format="native")
    ingest_file(engine, out, "pb2")
    assert snapshot(engine, "pb2", provenance=False) == snapshot(engine, "pb", provenance=False)


def test_stepwise_jsonl_and_parquet(engine: Engine, src: int, tmp_path: Path) -> None:
    js = export_dataset(engine, "src", tmp_path / "s.jsonl", format="stepwise-jsonl", scores_as_labels=True)
    pa_summary = export_dataset(
        engine, "src", tmp_path / "s.parquet", format="stepwise-parquet", scores_as_labels=True
    )
    # r1's labels contradict its response label: left out of the step formats, as native leaves them out of
    # its sentence_labels.
    assert js.n_rows == pa_summary.n_rows == 8 and js.n_skipped == 1
    assert js.left_out == {export_mod.LEFT_OUT_CONTRADICTS: 1}
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert pq.read_table(tmp_path / "s.parquet").to_pylist() == rows
    r3 = next(r for r in rows if r["id"] == "r3")
    # imported labels [0, 1] under max: the positive step is the bad one
    assert (r3["prompt"], r3["labels"]) == ("Question 3?", [True, False])
    assert (r3["sources"], r3["annotators"]) == (["imported", "imported"], ["import:train.jsonl"] * 2)
    assert r3["completions"] == ["Step 0 of answer 3 is here.", "Step 1 of answer 3 is here."]
    r2 = next(r for r in rows if r["id"] == "r2")
    assert set(r2["sources"]) == {"score"} and r2["annotators"] == [None] * 4
    good = export_dataset(
        engine,
        "src",
        tmp_path / "g.jsonl",
        format="stepwise-jsonl",
        positive_is="good",
        scores_as_labels=True,
    )
    flipped = {
        json.loads(line)["id"]: json.loads(line)["labels"]
        for line in (tmp_path / "g.jsonl").read_text().splitlines()
    }
    assert good.n_rows == 8 and flipped["r3"] == [False, True]


def test_stepwise_never_turns_a_score_into_a_label_unless_asked(
    engine: Engine, src: int, tmp_path: Path
) -> None:
    summary = export_dataset(engine, "src", tmp_path / "s.jsonl", format="stepwise-jsonl")
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "s.jsonl").read_text().splitlines())}
    assert "r2" not in rows and "score" not in {x for r in rows.values() for x in r["sources"]}
    assert summary.left_out[export_mod.LEFT_OUT_UNLABELLED] == summary.n_skipped - 1


def test_stepwise_leaves_out_responses_without_labels_or_scores(engine: Engine, tmp_path: Path) -> None:
    ingest_file(engine, write_jsonl(tmp_path / "t.jsonl", make_rows(6)), "plain")
    summary = export_dataset(engine, "plain", tmp_path / "p.jsonl", format="stepwise-jsonl")
    assert (summary.n_rows, summary.n_skipped, summary.model_version) == (2, 4, None)  # r0, r3 are labelled


def test_prm800k_ratings_and_kto(engine: Engine, src: int, tmp_path: Path) -> None:
    export_dataset(engine, "src", tmp_path / "prm.jsonl", format="prm800k", scores_as_labels=True)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "prm.jsonl").read_text().splitlines())}
    r3 = rows["r3"]
    assert r3["question"]["problem"] == "Question 3?"
    assert [s["completions"][0]["rating"] for s in r3["label"]["steps"]] == [1, -1]
    assert r3["label"]["finish_reason"] == "found_error"
    r2_steps = rows["r2"]["label"]["steps"]  # unlabelled: model scores decide, sources say so
    assert {s["completions"][0]["source"] for s in r2_steps} == {"score"}
    export_dataset(engine, "src", tmp_path / "kto.jsonl", format="kto")
    kto = {r["id"]: r for r in map(json.loads, (tmp_path / "kto.jsonl").read_text().splitlines())}
    assert (kto["r0"]["label"], kto["r1"]["label"]) == (True, False)  # max bags: label 1 = has a defect
    assert (
        kto["r1"]["completion"]
        == repo.get_response(engine, repo.response_id_by_external(engine, src, "r1") or -1).text
    )
    assert kto["r0"]["sources"] == ["adjudicated", "imported"] and kto["r0"]["annotators"][0] == "bob"


def test_failed_export_leaves_the_old_file(
    engine: Engine, src: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "keep.jsonl"
    out.write_text("old\n")
    with pytest.raises(InputError, match="no model version 7"):
        export_dataset(engine, "src", out, format="native", model_version=7)
    with pytest.raises(InputError, match="unknown export format"):
        export_dataset(engine, "src", out, format="csv")  # type: ignore[arg-type]
    calls = {"n": 0}
    real = export_mod._stepwise_row

    def flaky(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk on fire")
        return real(*args)

    monkeypatch.setattr(export_mod, "_stepwise_row", flaky)
    with pytest.raises(RuntimeError):
        export_dataset(engine, "src", out, format="stepwise-jsonl", scores_as_labels=True)
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
