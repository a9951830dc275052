"""The app's view of the scores: the library's reviewer view through the store's rows (no rule of its own)."""

from __future__ import annotations

import numpy as np
import pytest

from app import scores_view
from db import repository as repo
from fractal_core.mil.reviewer import label_conditioned
from tests.app.conftest import app_test
from tests.app.data import FAST_TRAIN, tiny_records


def test_review_colours_are_the_library_view() -> None:
    scores = [0.2, 0.7, 0.4]
    got = np.array(
        scores_view.review_colours(scores, [None, None, None], 1.0, aggregation="max"), dtype=float
    )
    want = label_conditioned(np.array(scores), np.full(3, np.nan), 1.0, aggregation="max")
    np.testing.assert_allclose(got, want)
    assert got[1] > 0.7  # the label says something is wrong: the likeliest sentence rises above its marginal
    assert scores_view.review_colours(scores, [None, None, None], 0.0, aggregation="max") == [0.0, 0.0, 0.0]
    # labels entered: a positive sentence explains the label, the others fall back to their marginals
    entered = scores_view.review_colours(scores, [None, 1, None], 1.0, aggregation="max")
    assert entered == pytest.approx([0.2, 1.0, 0.4])
    # an unscored unlabelled sentence: nothing to condition on, the stored scores as they are
    assert scores_view.review_colours([0.2, None], [None, None], 1.0, aggregation="max") == [0.2, None]
    # ordinal levels are accepted with their count
    ordinal = scores_view.review_colours([0.2, 0.6], [2, None], 2.0, aggregation="max", n_levels=3)
    assert ordinal == pytest.approx([1.0, 0.6])
    assert scores_view.problem_probability(0.3, "min") == pytest.approx(0.7)
    with pytest.raises(ValueError):
        scores_view.review_colours([0.2], [None, None], 1.0, aggregation="max")


@pytest.mark.slow
def test_gold_queue_previews_point_at_the_likely_problem_given_the_label(store) -> None:
    ds = store.ingest(tiny_records(12))
    repo.create_job(
        store.engine,
        "train",
        {"dataset_id": ds.dataset_id, "method": "bagloss", "config": FAST_TRAIN, "seed": 0},
    )
    store.run_jobs()
    at = app_test("views/gold.py")
    assert not at.exception
    hints = [t.value for t in at.text if t.value.startswith(("Most likely problem", "No sentence can be"))]
    assert hints, [t.value for t in at.text]
    # a response labelled 0 (max) has no possible problem; one labelled 1 names a sentence
    rows = {r.id: r for r in repo.list_responses(store.engine, ds.dataset_id, sort="id", page_size=50).rows}
    dataset = repo.list_datasets(store.engine)[0]
    for rid, row in rows.items():
        found = scores_view.likely_problem(repo.get_response(store.engine, rid), dataset.max_label)
        assert found is not None
        assert (found[1] == 0.0) == (row.response_label == 0)
