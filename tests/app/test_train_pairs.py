"""The worker's train job on a dataset of preference pairs (both engines): PrefBagLoss on the stored pairs (beside
the responses' own labels unless the job says alone), every response scored, and the version's metrics say what
it was trained from."""

from __future__ import annotations

import json

import pytest

from db import repository as repo
from db.pairs_ingest import ingest_pairs
from tests.app.conftest import make_store
from tests.app.data import FAST_TRAIN
from tests.engines import ENGINES


@pytest.fixture(params=ENGINES)
def store(request, tmp_path, monkeypatch):
    with make_store(request.param, tmp_path, monkeypatch) as made:
        yield made


def _pairs(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        good = f"Add {i} and 2. The sum is {i + 2}. So the answer is {i + 2}."
        bad = f"Add {i} and 2. The sum is {i + 5}. So the answer is {i + 5}."
        rows.append(
            {"id": f"p{i}", "context": f"What is {i} + 2?", "a_text": bad, "b_text": good, "preferred": "b"}
        )
    return rows


@pytest.mark.slow
def test_training_job_on_pairs_publishes_a_version_trained_from_them(store, tmp_path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _pairs(12)))
    engine = store.engine
    summary = ingest_pairs(engine, path, "prefs", imported_by="tester")
    job = repo.create_job(
        engine,
        "train",
        {"dataset_id": summary.dataset_id, "method": "fractal", "config": FAST_TRAIN, "seed": 0},
    )
    store.run_jobs()
    done = repo.get_job(engine, job.id)
    assert done.state == "succeeded", done.error
    assert "[preference]" in done.log and "12 preference pairs" in done.log
    mv = repo.active_model_version(engine, summary.dataset_id)
    assert mv is not None and mv.method == "preference" and mv.n_scores == summary.n_sentences
    assert mv.metrics["trained_from"] == "preference_pairs" and mv.metrics["pairs"] == 12
    assert mv.metrics["response_labels"] == 0  # none of these responses carries a label of its own
    assert mv.metrics["pair_sources"] == {"imported": 12}
    page = repo.list_responses(engine, summary.dataset_id, sort="id", page=0, page_size=100)
    assert len(page.rows) == 24 and all(r.score is not None for r in page.rows)


@pytest.mark.slow
def test_pairs_export_after_training_keeps_sources_scores_and_colours(store, tmp_path) -> None:
    import pandas as pd

    from db.pairs_export import export_pairs
    from db.repository import response_id_by_external

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _pairs(10)))
    engine = store.engine
    summary = ingest_pairs(engine, path, "prefs", imported_by="tester")
    rejected = response_id_by_external(engine, summary.dataset_id, "p0:a")
    chosen_id = response_id_by_external(engine, summary.dataset_id, "p0:b")
    assert rejected is not None and chosen_id is not None
    wrong_step = repo.get_response(engine, rejected).sentences[1].id
    repo.record_label(engine, wrong_step, 1, "alice")  # a person marks the wrong step
    repo.create_job(
        engine,
        "train",
        {"dataset_id": summary.dataset_id, "method": "fractal", "config": FAST_TRAIN, "seed": 0},
    )
    store.run_jobs()
    out = tmp_path / "out.jsonl"
    result = export_pairs(engine, "prefs", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.n_pairs == 10 and result.model_version == 1 and len(rows) == 10
    first = rows[0]
    assert (
        first["prompt"] == "What is 0 + 2?"
        and first["chosen_id"] == "p0:b"
        and first["rejected_id"] == "p0:a"
    )
    assert first["preference_source"] == "imported" and first["preference_annotator"] == "tester"
    assert len(first["chosen_steps"]) == len(first["chosen_scores"]) == len(first["chosen_colours"]) == 3
    assert first["rejected_labels"] == [None, 1, None] and first["model_version"] == 1
    assert first["rejected_label_sources"] == ["none", "human", "none"]
    assert first["rejected_label_annotators"] == [None, "alice", None]
    assert first["chosen_label_sources"] == ["none"] * 3
    assert all(0.0 <= c <= 1.0 for c in first["chosen_colours"] + first["rejected_colours"])
    # The export's colours are the Pairs page's: conditioned on the label alice set (its colour is her label).
    from app.pair_colours import pair_colours

    page = pair_colours(repo.get_response(engine, chosen_id), repo.get_response(engine, rejected), 1.0)
    assert first["rejected_colours"][1] == 1.0
    assert first["chosen_colours"] == pytest.approx(page[0], abs=1e-12)
    assert first["rejected_colours"] == pytest.approx(page[1], abs=1e-12)
    parquet = tmp_path / "out.parquet"
    export_pairs(engine, "prefs", parquet)
    assert pd.read_parquet(parquet)["id"].tolist() == [r["id"] for r in rows]


@pytest.mark.slow
def test_training_job_on_partly_labelled_pairs_trains_beside_the_labels_unless_told_alone(
    store, tmp_path
) -> None:
    rows = _pairs(12)
    for row in rows[:6]:  # half the pairs' responses carry a label of their own
        row.update(a_response_label=1, b_response_label=0)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = store.engine
    summary = ingest_pairs(engine, path, "prefs", imported_by="tester")
    payload = {"dataset_id": summary.dataset_id, "method": "fractal", "config": FAST_TRAIN, "seed": 0}
    beside = repo.create_job(engine, "train", payload)
    store.run_jobs()
    done = repo.get_job(engine, beside.id)
    assert done.state == "succeeded", done.error
    assert "12 preference pairs over 24 responses, beside 12 response labels" in done.log
    first = repo.active_model_version(engine, summary.dataset_id)
    assert first is not None and first.method == "preference"
    assert first.metrics["trained_from"] == "preference_pairs+response_labels"
    assert first.metrics["pairs"] == 12 and first.metrics["response_labels"] == 12
    assert first.metrics["response_labels_mode"] == "beside"
    assert first.metrics["resolved_method"] == "preference+labels"
    alone = repo.create_job(engine, "train", {**payload, "response_labels": "alone"}, idempotency_key="alone")
    store.run_jobs()
    assert repo.get_job(engine, alone.id).state == "succeeded"
    versions = repo.list_model_versions(engine, summary.dataset_id)
    second = max(versions, key=lambda v: v.version)
    assert second.metrics["trained_from"] == "preference_pairs" and second.metrics["response_labels"] == 0
    assert second.metrics["response_labels_mode"] == "alone"
    assert second.metrics["resolved_method"] == "preference"


@pytest.mark.slow
def test_pairs_export_colours_as_the_pairs_page_when_the_view_is_step_calibrated(store, tmp_path) -> None:
    """A model trained beside response labels may bring a step calibration chosen for the given-label view; the
    export's colours and the Pairs page's then read the same calibrated scores."""
    from sqlalchemy import update

    from app.pair_colours import pair_colours
    from db.engine import session_scope
    from db.models import ModelVersion
    from db.pairs_export import export_pairs
    from db.repository import response_id_by_external

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _pairs(10)))
    engine = store.engine
    summary = ingest_pairs(engine, path, "prefs", imported_by="tester")
    repo.create_job(
        engine,
        "train",
        {"dataset_id": summary.dataset_id, "method": "fractal", "config": FAST_TRAIN, "seed": 0},
    )
    store.run_jobs()
    mv = repo.active_model_version(engine, summary.dataset_id)
    assert mv is not None
    calibration = {"scale": 2.0, "bias": -1.0, "given_label": True}
    with session_scope(engine) as session:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == mv.id)
            .values(metrics={**mv.metrics, "step_calibration": calibration})
        )
    export_pairs(engine, "prefs", tmp_path / "out.jsonl")
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    ids = [response_id_by_external(engine, summary.dataset_id, side) for side in ("p0:b", "p0:a")]
    assert ids[0] is not None and ids[1] is not None
    chosen, rejected = repo.get_response(engine, ids[0]), repo.get_response(engine, ids[1])
    # The map moves the scores, so raw scores would colour differently from the page.
    assert [s.view_score for s in chosen.sentences] != [s.score for s in chosen.sentences]
    page_chosen, page_rejected = pair_colours(chosen, rejected, 1.0)
    assert first["chosen_colours"] == pytest.approx(page_chosen, abs=1e-9)
    assert first["rejected_colours"] == pytest.approx(page_rejected, abs=1e-9)
