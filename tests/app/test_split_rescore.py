"""After a split fix the next score job embeds the new sentences and scores them, which ends the staleness."""

from __future__ import annotations

import pytest

from db import repository as repo
from tests.app.data import FAST_TRAIN, tiny_records


@pytest.mark.slow
def test_a_score_job_embeds_and_scores_the_new_sentences(store) -> None:
    ds = store.ingest(tiny_records(8, with_labels=True), labels_as="gold").dataset_id
    repo.create_job(
        store.engine, "train", {"dataset_id": ds, "method": "fractal", "config": FAST_TRAIN, "seed": 0}
    )
    store.run_jobs()
    rid = repo.response_id_by_external(store.engine, ds, "r001") or -1
    first = repo.get_response(store.engine, rid).sentences[0]
    # Split where no text of the dataset was cut before: the encoder's cache has neither part yet.
    result = repo.split_sentence(store.engine, rid, 0, first.text.index(" ", 5), "ann")
    stale = repo.get_response(store.engine, rid)
    assert stale.scores_stale and [stale.sentences[i].score for i in (0, 1)] == [None, None]
    job = repo.create_job(store.engine, "score", {"dataset_id": ds})
    store.run_jobs()
    assert repo.get_job(store.engine, job.id).state == "succeeded", repo.get_job(store.engine, job.id).error
    fresh = repo.get_response(store.engine, rid)
    assert not fresh.scores_stale
    assert [s.id for s in fresh.sentences[:2]] == result.sentence_ids
    assert all(s.score is not None for s in fresh.sentences)
