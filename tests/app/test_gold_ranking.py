"""The Gold queue shows the library's selection ranking (fractal_core.evaluation.selection), computed by the worker."""

from __future__ import annotations

import pytest

from db import repository as repo
from fractal_core.fitting import registry
from tests.app.conftest import app_test
from tests.app.data import tiny_records

pytestmark = pytest.mark.slow  # the worker trains a model


def test_gold_queue_uses_the_library_ranking_stored_with_the_version(store) -> None:
    from tests.app.data import FAST_TRAIN

    ds = store.ingest(tiny_records(12))
    repo.create_job(
        store.engine, "train", {"dataset_id": ds.dataset_id, "method": "fractal", "config": FAST_TRAIN}
    )
    store.run_jobs()
    metrics = repo.active_model_version(store.engine, ds.dataset_id).metrics
    queue, reasons = metrics["gold_queue"], metrics["gold_queue_reasons"]
    assert set(queue) == set(registry.QUEUE_STRATEGIES)  # every strategy the registry puts in the queue
    assert len(queue["posterior"]) == 12 and len(set(queue["posterior"])) == 12
    assert all(len(reasons[s]) == len(queue[s]) and all(reasons[s]) for s in queue)
    at = app_test("views/gold.py")
    assert not at.exception
    shown = [int(b.key.rsplit("_", 1)[1]) for b in at.button if b.key and b.key.startswith("gold_open_")]
    default = registry.QUEUE_STRATEGIES[0]  # the measured best strategy is the page's default
    assert shown == queue[default][: len(shown)] and shown
    # Each proposal says why, in the library's words.
    why = [t.value for t in at.text if str(t.value).startswith("Why: ")]
    assert why[: len(shown)] == [f"Why: {r}" for r in reasons[default][: len(shown)]]
    # A response that gets gold labels leaves the queue.
    first = repo.get_response(store.engine, shown[0])
    repo.record_label(store.engine, first.sentences[0].id, 0 if first.response_label == 0 else 1, "tester")
    at.run()
    assert shown[0] not in [
        int(b.key.rsplit("_", 1)[1]) for b in at.button if b.key and b.key.startswith("gold_open_")
    ]
