"""AppTest of the Models and Train pages around activation by evidence: a waiting version says why and activates
in one click, any two versions compare on the current gold set, the versions chart shows every version, and a
finished job reports what its version is now."""

from __future__ import annotations

import numpy as np

from app import render
from db import jobs as db_jobs
from db import repository as repo
from db.repository import model_versions
from fractal_core.fitting.auto_choice import GoldScores, Selection, choose, rule_text, weak_evidence
from tests.app.conftest import app_test
from tests.app.data import tiny_records
from tests.app.test_activation import _hand_made


def _perfect_then_worse(store):
    ds = store.ingest(tiny_records(16, with_labels=True), labels_as="gold")
    good = _hand_made(store, ds.dataset_id, lambda g: 0.1 + 0.8 * g)
    model_versions.activate_if_not_worse(store.engine, good.id)
    bad = _hand_made(
        store, ds.dataset_id, lambda g: np.where(g > 0, 0.4, 0.5 + 0.1 * (np.arange(len(g)) % 3))
    )
    assert not model_versions.activate_if_not_worse(store.engine, bad.id).activated
    return ds, good, bad


def _finished_train_job(store, dataset_id: int, mv: repo.ModelVersionRow) -> None:
    job = repo.create_job(store.engine, "train", {"dataset_id": dataset_id, "method": "hand"})
    assert db_jobs.claim_next_job(store.engine, "test-worker").id == job.id
    db_jobs.finish_job(store.engine, job.id, result={"model_version_id": mv.id, "version": mv.version})


def test_models_page_shows_the_waiting_version_compares_and_activates(store) -> None:
    ds, good, bad = _perfect_then_worse(store)
    at = app_test("views/models.py")
    assert not at.exception, at.exception
    waiting = [m.value for m in at.markdown if "is waiting" in m.value]
    assert waiting and "Version 2 is waiting" in waiting[0] and "compared with version 1" in waiting[0]
    [versions_table] = [d for d in at.dataframe if "state" in d.value.columns]
    assert list(versions_table.value["state"]) == ["waiting", "● active"]

    # Comparison of A = active v1 with B = v2 on the same gold sentences: B is clearly worse.
    [cmp] = [d for d in at.dataframe if "difference B - A [95% CI]" in d.value.columns]
    auc_row = cmp.value.iloc[0]
    assert auc_row["v1 (active)"].startswith("1.000") and auc_row["difference B - A [95% CI]"].startswith("-")
    assert any("v2 is not shown to be as good as v1" in c.value for c in at.caption)
    # Swapping A and B: the perfect version is not worse than the bad one.
    at.selectbox(key="models_cmp_a").set_value(bad.id).run()
    at.selectbox(key="models_cmp_b").set_value(good.id).run()
    assert any("is not worse than v2 beyond noise" in c.value for c in at.caption)

    # The versions chart shows every version, measured on the current gold set.
    figures = [c.proto.spec for c in at.get("plotly_chart")]
    assert any('"v1"' in f and '"v2"' in f and "current gold set" in f for f in figures)

    at.button(key=f"models_activate_waiting_{bad.id}").click().run()
    assert not at.exception
    assert repo.active_model_version(store.engine, ds.dataset_id).id == bad.id
    assert not [m for m in at.markdown if "is waiting" in m.value]


def test_train_page_reports_what_the_version_is_now(store) -> None:
    ds, good, bad = _perfect_then_worse(store)
    _finished_train_job(store, ds.dataset_id, bad)
    at = app_test("views/train.py")
    assert not at.exception, at.exception
    assert not [s for s in at.success if "is active" in s.value]
    [warning] = [w for w in at.warning if "waiting" in w.value]
    assert "model version 2 is waiting" in warning.value and "Version 1 is active" in warning.value
    at.button(key=f"train_activate_{bad.id}").click().run()
    assert repo.active_model_version(store.engine, ds.dataset_id).id == bad.id

    # v1 activated again by hand after the job: the page must not claim that v2 is active.
    repo.activate_model_version(store.engine, good.id)
    at = app_test("views/train.py")
    assert not [s for s in at.success if "version 2 is active" in s.value]
    assert any("model version 2 was trained. Version 1 is active." in i.value for i in at.info)


def _chosen_version(store, dataset_id: int, gaps: list[float], n_responses: int) -> repo.ModelVersionRow:
    """A ready version whose stored method choice is what ``auto`` records for candidates scoring ``0.8 + gaps``
    on ``n_responses`` gold responses (hand-made bootstrap replicates, paired SE ~0.01), without training."""
    names = ["bagloss", "priors(cosine=0.1)", "hybrid"]
    rows = [
        {"name": n, "method": n.split("(")[0], "score": 0.8 + g} | ({"cosine": 0.1} if "(" in n else {})
        for n, g in zip(names, gaps, strict=True)
    ]
    noise = np.random.default_rng(0).normal(0, 0.007, (3, 400))
    picked = rows[choose(rows, replicates=np.array([r["score"] for r in rows])[:, None] + noise)]
    positive = np.arange(4 * n_responses) % 4 == 0
    gold = GoldScores(positive, positive * 1.0, positive * 1.0, np.arange(4 * n_responses) // 4)
    weak, why = weak_evidence(rows, gold)
    selection = Selection(
        picked["name"], picked["method"], "gold_auc_given_y", rows, 3.0, rule_text(True), weak, why
    )
    mv = repo.create_model_version(store.engine, dataset_id, method="fractal")
    return repo.finish_model_version(store.engine, mv.id, metrics={"method_choice": selection.to_dict()})


def test_method_choice_shows_weak_evidence_and_points_to_the_gold_queue(store) -> None:
    ds = store.ingest(tiny_records(6, with_labels=True), labels_as="gold")
    clear = _chosen_version(store, ds.dataset_id, [-0.1, -0.08, 0.0], n_responses=120)
    thin = _chosen_version(store, ds.dataset_id, [-0.1, -0.003, 0.0], n_responses=12)
    assert not clear.metrics["method_choice"]["weak_evidence"]
    stored = thin.metrics["method_choice"]
    assert stored["weak_evidence"] and "only 12 gold responses" in stored["weak_reason"]
    assert "closest: priors(cosine=0.1)" in stored["weak_reason"]

    at = app_test("views/models.py")
    at.selectbox(key="models_choice_version").set_value(thin.id).run()
    assert not at.exception, at.exception
    [note] = [w.value for w in at.warning if "Weak evidence" in w.value]
    assert render.md_escape(stored["weak_reason"]) in note and "label a few more gold responses" in note
    links = [e.proto for e in at.get("page_link")]
    assert any(link.page == "gold" and "Gold queue" in link.label for link in links), links
    assert any("bootstrap draws of the gold responses" in c.value for c in at.caption)

    # A clear choice on plenty of gold: no note, no link.
    at.selectbox(key="models_choice_version").set_value(clear.id).run()
    assert not [w for w in at.warning if "Weak evidence" in w.value]
    assert not [e for e in at.get("page_link") if e.proto.page == "gold"]
