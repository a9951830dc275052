"""Activation by evidence: a new version replaces the active one only when it is not worse on the current gold
set beyond noise; otherwise it waits for a one-click activation. Store paths run on both engines."""

from __future__ import annotations

import numpy as np
import pytest

from app import actions
from db import accounts
from db import repository as repo
from db.accounts import PermissionDenied
from db.repository import model_versions
from tests.app.conftest import make_store
from tests.app.data import tiny_records
from tests.engines import ENGINES


@pytest.fixture(params=ENGINES)
def store(request, tmp_path, monkeypatch):
    with make_store(request.param, tmp_path, monkeypatch) as made:
        yield made


def _hand_made(store, dataset_id: int, scores_of) -> repo.ModelVersionRow:
    """A ready version whose score of each sentence is ``scores_of(gold labels (N,))``, without training."""
    data = repo.load_training_set(store.engine, dataset_id)
    gold = np.asarray(
        [
            lab if lab is not None else 0
            for r in data.records
            for lab in (r.sentence_labels or [None] * len(r.spans))
        ],
        dtype=np.float64,
    )
    mv = repo.create_model_version(store.engine, dataset_id, method="hand")
    repo.store_scores(store.engine, mv.id, data.sentence_ids, np.asarray(scores_of(gold), dtype=np.float64))
    return repo.finish_model_version(store.engine, mv.id, metrics={})


def test_gold_scores_line_up_versions_by_sentence(store) -> None:
    ds = store.ingest(tiny_records(10, with_labels=True), labels_as="gold")
    perfect = _hand_made(store, ds.dataset_id, lambda g: g)
    flat = _hand_made(store, ds.dataset_id, lambda g: np.full_like(g, 0.5))
    table = model_versions.current_gold_scores(store.engine, ds.dataset_id, [flat.id, perfect.id])
    assert table.scores.shape == (2, ds.n_sentences)
    assert np.array_equal(table.scores[1], table.labels.astype(float))  # the perfect version's row
    assert np.all(table.scores[0] == 0.5)
    assert len(np.unique(table.response_ids)) == 10
    comparison = model_versions.compare_on_current_gold(store.engine, ds.dataset_id, perfect.id, flat.id)
    assert comparison.auc[0].value == 1.0 and comparison.auc[1].value == 0.5
    assert comparison.auc[2].high < 0 and not comparison.not_worse


def test_worse_version_waits_and_equal_one_activates(store) -> None:
    ds = store.ingest(tiny_records(16, with_labels=True), labels_as="gold")
    first = _hand_made(store, ds.dataset_id, lambda g: 0.2 + 0.6 * g)
    decision = model_versions.activate_if_not_worse(store.engine, first.id)
    assert decision.activated and decision.comparison is None  # nothing to compare with
    worse = _hand_made(store, ds.dataset_id, lambda g: 0.8 - 0.6 * g)
    decision = model_versions.activate_if_not_worse(store.engine, worse.id)
    assert not decision.activated and decision.compared_with_version == first.version
    assert repo.active_model_version(store.engine, ds.dataset_id).id == first.id
    row = repo.get_model_version(store.engine, worse.id)
    reason = model_versions.waiting_reason(row)
    assert reason is not None and reason.startswith("waiting: compared with version 1")
    assert row.metrics["activation"]["comparison"]["auc"]["diff"][0] == pytest.approx(-1.0)
    equal = _hand_made(store, ds.dataset_id, lambda g: 0.2 + 0.6 * g)
    assert model_versions.activate_if_not_worse(store.engine, equal.id).activated
    assert repo.active_model_version(store.engine, ds.dataset_id).id == equal.id
    assert model_versions.waiting_reason(repo.get_model_version(store.engine, equal.id)) is None

    # One click activates the waiting version, for an admin only (checked on the server, not by the page).
    annotator = accounts.add_user(store.engine, "ann", "annotator", "a-long-password-1")
    with pytest.raises(PermissionDenied):
        actions.activate_model(store.engine, annotator, worse.id)
    admin = accounts.add_user(store.engine, "boss", "admin", "a-long-password-2")
    actions.activate_model(store.engine, admin, worse.id)
    now = repo.get_model_version(store.engine, worse.id)
    assert now.is_active and model_versions.waiting_reason(now) is None


def test_without_gold_labels_a_new_version_waits(store) -> None:
    ds = store.ingest(tiny_records(6))
    first = _hand_made(store, ds.dataset_id, lambda g: np.full_like(g, 0.3))
    assert model_versions.activate_if_not_worse(store.engine, first.id).activated
    second = _hand_made(store, ds.dataset_id, lambda g: np.full_like(g, 0.4))
    decision = model_versions.activate_if_not_worse(store.engine, second.id)
    assert not decision.activated and "undefined" in decision.reason


@pytest.mark.slow
def test_training_job_is_held_back_when_worse_on_gold(store) -> None:
    """The job path: a trained version (the naive baseline: every sentence inherits its response's label, AUC
    0.75 on this gold set) does not replace a version that ranks the gold sentences perfectly."""
    ds = store.ingest(tiny_records(16, with_labels=True), labels_as="gold")
    perfect = _hand_made(store, ds.dataset_id, lambda g: 0.1 + 0.8 * g)
    repo.activate_model_version(store.engine, perfect.id)
    job = repo.create_job(store.engine, "train", {"dataset_id": ds.dataset_id, "method": "naive", "seed": 0})
    store.run_jobs()
    done = repo.get_job(store.engine, job.id)
    assert done.state == "succeeded", done.error
    assert done.result["activated"] is False and "waiting" in done.result["activation_reason"]
    assert repo.active_model_version(store.engine, ds.dataset_id).id == perfect.id
    naive = repo.get_model_version(store.engine, done.result["model_version_id"])
    assert naive.status == "ready" and model_versions.waiting_reason(naive)
    assert naive.metrics["activation"]["comparison"]["auc"]["b"][0] == pytest.approx(0.75)

    # The same method again, once the naive version is active: equal on gold, so it activates.
    repo.activate_model_version(store.engine, naive.id)
    again = repo.create_job(
        store.engine, "train", {"dataset_id": ds.dataset_id, "method": "naive", "seed": 0}
    )
    store.run_jobs()
    result = repo.get_job(store.engine, again.id).result
    assert result["activated"] is True
    assert repo.active_model_version(store.engine, ds.dataset_id).id == result["model_version_id"]
