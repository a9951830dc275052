"""The joint training job of a group of criteria: one model fitted for every criterion, one version published in
each criterion's dataset (each scoring its own criterion), all or nothing; only an admin starts it (checked on
the server); the Train page offers it and says what it does not offer."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app import actions, job_train_joint, state
from app.job_payloads import TrainPayload
from app.settings import load_settings
from app.worker import HEARTBEAT_S, Worker
from db import accounts, artifacts
from db import repository as repo
from db.accounts import PermissionDenied
from fractal_core.errors import InputError
from fractal_core.fitting import registry
from tests.app.conftest import app_test, make_store
from tests.app.data import BAD, FAST_TRAIN, tiny_records
from tests.app.test_auth import PASSWORD
from tests.engines import ENGINES


def _criteria_records(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    """``wrong`` (max: a wrong step, with its gold steps) and ``helpful`` (another label of the same responses)."""
    out = []
    for i, rec in enumerate(tiny_records(start + n)[start:], start=start):
        steps = rec["sentences"]
        wrong = {
            "response_label": rec.pop("response_label"),
            "sentence_labels": [int(s in BAD) for s in steps],
        }
        rec.pop("aggregation", None)
        rec["criteria"] = {"wrong": wrong, "helpful": {"response_label": (i // 2) % 2}}
        out.append(rec)
    return out


def _admin(store, name: str = "boss", role: str = "admin"):
    if accounts.get_user(store.engine, name) is None:
        accounts.add_user(store.engine, name, role, PASSWORD)
    user = accounts.get_user(store.engine, name)
    assert user is not None
    return user


def _joint_job(store, dataset_id: int, method: str = "priors", config=FAST_TRAIN):
    return actions.start_joint_training(store.engine, _admin(store), dataset_id, method, config, 0)


def _group(store, summary) -> dict[str, Any]:
    return {str(d.criterion): d for d in repo.criteria_siblings(store.engine, summary.dataset_id)}


def test_the_joint_payload_names_what_it_refuses() -> None:
    base = {"dataset_id": 1, "method": "priors", "config": {}, "seed": 0, "joint": True}
    assert TrainPayload.parse(base).to_dict()["joint"] is True
    assert (
        "joint" not in TrainPayload.parse({**base, "joint": False}).to_dict()
    )  # ordinary payloads unchanged
    for change, field in (
        ({"method": "fractal"}, "method"),
        ({"method": "hybrid"}, "method"),
        ({"scorer": "one_pass", "method": "bagloss"}, "scorer"),
        ({"joint": "yes"}, "joint"),
    ):
        with pytest.raises(InputError) as err:
            TrainPayload.parse({**base, **change})
        assert err.value.field == field, change


def test_only_an_admin_starts_a_joint_job_and_only_on_a_group(store) -> None:
    summary = store.ingest(_criteria_records(4), name="rated")
    plain = store.ingest(tiny_records(2), name="plain").dataset_id
    ann = _admin(store, "ann", "annotator")
    reviewer = _admin(store, "rev", "reviewer")
    for user in (ann, reviewer):
        with pytest.raises(PermissionDenied):
            actions.start_joint_training(store.engine, user, summary.dataset_id, "priors", {}, 0)
    assert repo.list_jobs(store.engine, kind="train") == []
    boss = _admin(store)
    with pytest.raises(InputError) as err:
        actions.start_joint_training(store.engine, boss, plain, "priors", {}, 0)
    assert err.value.field == "dataset"
    with pytest.raises(InputError) as err:
        actions.start_joint_training(store.engine, boss, summary.dataset_id, "fractal", {}, 0)
    assert err.value.field == "method" and "bagloss, priors, pslab" in err.value.reason
    assert repo.list_jobs(store.engine, kind="train") == []
    job = actions.start_joint_training(store.engine, boss, summary.dataset_id, "pslab", {}, 0)
    assert job.payload == {
        "dataset_id": summary.dataset_id,
        "method": "pslab",
        "config": {},
        "seed": 0,
        "joint": True,
    }
    # One live joint job per group, whichever criterion's page starts it.
    other = next(d for d in summary.dataset_ids() if d != summary.dataset_id)
    assert actions.start_joint_training(store.engine, boss, other, "pslab", {}, 0).id == job.id


def test_the_train_page_offers_the_joint_fit_and_says_what_it_does_not_offer(store) -> None:
    summary = store.ingest(_criteria_records(4), name="rated")
    at = app_test("views/train.py")
    at.checkbox(key="train_every_criterion").check().run()
    assert at.radio(key="train_criteria_mode").value == "each"  # today's behaviour stays the default
    at.radio(key="train_criteria_mode").set_value("joint").run()
    assert not at.exception, at.exception
    assert [o.split(":")[0] for o in at.selectbox(key="train_method").options] == list(
        registry.CRITERIA_METHODS
    )
    assert "train_scorer" not in [r.key for r in at.radio]  # the frozen scorer only
    [limits] = [i.value for i in at.info if "does not offer" in i.value]
    assert "calibration" in limits and "first-error" in limits and "token-level" in limits
    assert [b.key for b in at.button if b.key and b.key.startswith("train_start")] == ["train_start_joint"]
    at.button(key="train_start_joint").click().run()
    assert not at.exception, at.exception
    [job] = repo.list_jobs(store.engine, kind="train")
    assert job.payload["joint"] is True and job.payload["dataset_id"] in summary.dataset_ids()
    assert job.payload["method"] == at.selectbox(key="train_method").value


@pytest.fixture(params=ENGINES)
def any_store(request, tmp_path, monkeypatch):
    """The joint job on both engines: SQLite and PostgreSQL."""
    with make_store(request.param, tmp_path, monkeypatch) as made:
        yield made


@pytest.mark.slow  # embeds and trains with the bundled encoder
def test_a_joint_job_publishes_a_version_per_criterion_that_scores_rescores_and_exports(any_store) -> None:
    from fractal_core import FractalModel

    store = any_store

    summary = store.ingest(_criteria_records(16), name="rated", labels_as="gold")
    group = _group(store, summary)
    job = _joint_job(store, group["wrong"].id)
    store.run_jobs()
    done = repo.get_job(store.engine, job.id)
    assert done.state == "succeeded", done.error
    assert done.progress == 1.0 and "[embed]" in done.log and "[bag]" in done.log
    assert set(done.result["versions"]) == {"helpful", "wrong"}
    assert done.result["model_version_id"] == done.result["versions"]["wrong"]["model_version_id"]
    # The Train page of the other criterion (the first one shown) follows the joint job and its own version.
    at = app_test("views/train.py")
    assert not at.exception, at.exception
    assert at.session_state[state.DATASET_KEY] == group["helpful"].id
    assert f"Job {job.id}: train" in at.subheader[0].value
    assert any("model version 1 is active" in s.value for s in at.success)
    settings = load_settings(store.db_url)
    stored: dict[str, np.ndarray] = {}
    for name, ds in group.items():
        mv = repo.active_model_version(store.engine, ds.id)
        assert mv is not None and mv.version == 1 and mv.method == "joint:priors"
        assert mv.n_scores == ds.n_sentences
        assert mv.config["joint"]["job_id"] == job.id and mv.config["joint"]["criteria"] == [
            "helpful",
            "wrong",
        ]
        fit = mv.metrics["joint_fit"]
        assert fit["job_id"] == job.id and set(fit["valid_metrics"]) == {"helpful", "wrong"}
        assert "joint" in mv.metrics["step_calibration"]["reason"]
        # The version's own model is its criterion's part: it scores what the version stored.
        model = FractalModel.load(artifacts.model_dir(store.engine, mv, settings.models_dir))
        data = repo.load_training_set(store.engine, ds.id)
        assert model.aggregation_ == data.records[0].aggregation
        stored[name] = np.array(
            [
                s.score
                for rid in data.response_ids.tolist()
                for s in repo.get_response(store.engine, rid, mv.id).sentences
            ],
            dtype=float,
        )
        np.testing.assert_allclose(np.concatenate(model.predict(data.records)), stored[name], atol=2e-3)
    assert not np.allclose(stored["wrong"], stored["helpful"])  # one head per criterion
    wrong = repo.active_model_version(store.engine, group["wrong"].id)
    assert wrong is not None and 0.0 <= wrong.metrics["gold_after"]["instance_auc_roc"] <= 1.0

    # New responses: the worker embeds and re-scores each criterion with its joint version.
    more = store.ingest(_criteria_records(4, start=16), name="rated")
    for dataset_id in more.dataset_ids():
        from app.jobs import queue_after_import

        assert [j.kind for j in queue_after_import(store.engine, dataset_id)] == ["embed", "score"]
    store.run_jobs()
    for ds in group.values():
        mv = repo.active_model_version(store.engine, ds.id)
        assert mv is not None and mv.version == 2 and mv.metrics["rescored_from_version"] == 1
        assert mv.n_scores == repo.require_dataset(store.engine, ds.id).n_sentences

    # An export of a criterion reads its joint version's scores.
    export = repo.create_job(store.engine, "export", {"dataset_id": group["wrong"].id, "format": "native"})
    store.run_jobs()
    exported = repo.get_job(store.engine, export.id)
    assert exported.state == "succeeded", exported.error
    lines = Path(exported.result["path"]).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 20
    meta = rows[0]["meta"]["fractal"]
    assert meta["model_version"]["method"] == "joint:priors" and all(s is not None for s in meta["scores"])

    # A second joint fit is compared per criterion with that criterion's active version.
    again = _joint_job(store, group["wrong"].id)
    store.run_jobs()
    assert repo.get_job(store.engine, again.id).state == "succeeded"
    for ds in group.values():
        newest = max(repo.list_model_versions(store.engine, ds.id), key=lambda v: v.version)
        assert newest.version == 3 and newest.metrics["activation"]["compared_with_version"] == 2


def test_a_running_joint_jobs_staged_versions_survive_the_sweep_of_dead_jobs(store) -> None:
    """The worker's sweep fails the versions dead jobs left in status training, but not those a live joint job
    is staging in the other criteria's datasets of its group."""
    from app.worker import fail_orphaned_jobs

    summary = store.ingest(_criteria_records(4), name="rated")
    plain = store.ingest(tiny_records(2), name="plain").dataset_id
    dead = repo.create_job(store.engine, "train", {"dataset_id": plain, "method": "priors"})
    assert repo.claim_next_job(store.engine, "other-host:1").id == dead.id
    orphan = repo.create_model_version(store.engine, plain, method="priors")
    time.sleep(1.1)
    live = _joint_job(store, summary.dataset_id)
    assert repo.claim_next_job(store.engine, "other-host:2").id == live.id  # a fresh heartbeat
    sibling = next(d for d in summary.dataset_ids() if d != summary.dataset_id)
    staged = repo.create_model_version(store.engine, sibling, method="joint:priors")
    assert fail_orphaned_jobs(store.engine, stale_after_s=1) == [dead.id]
    assert repo.get_model_version(store.engine, orphan.id).status == "failed"  # type: ignore[union-attr]
    assert repo.get_model_version(store.engine, staged.id).status == "training"  # type: ignore[union-attr]


def _run_in_thread(store) -> None:
    thread = threading.Thread(
        target=Worker(load_settings(store.db_url)).run, kwargs={"once": True}, daemon=True
    )
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive()


@pytest.mark.slow
def test_cancel_during_the_fit_leaves_no_version(store, monkeypatch) -> None:
    from app.job_context import JobContext

    summary = store.ingest(_criteria_records(12), name="rated")
    job = _joint_job(store, summary.dataset_id)
    original = JobContext.training_callback
    seen: list[str] = []

    def cancelling(self, stages, lo, hi):
        inner = original(self, stages, lo, hi)

        def callback(stage: str, fraction: float, message: str) -> None:
            seen.append(stage)
            if stage == registry.STAGE_BAG and seen.count(stage) == 1:
                repo.request_cancel(store.engine, job.id)
                time.sleep(2 * HEARTBEAT_S)  # the heartbeat thread sees the request meanwhile
            inner(stage, fraction, message)

        return callback

    monkeypatch.setattr(JobContext, "training_callback", cancelling)
    _run_in_thread(store)
    assert repo.get_job(store.engine, job.id).state == "cancelled"
    assert seen.count(registry.STAGE_BAG) == 1  # stopped within the fit, before any version was made
    for dataset_id in summary.dataset_ids():
        assert repo.list_model_versions(store.engine, dataset_id) == []


@pytest.mark.slow
def test_cancel_while_versions_are_stored_fails_every_one(store, monkeypatch) -> None:
    """All or nothing: a cancel after the first criterion's version was stored fails it too; nothing is active."""
    summary = store.ingest(_criteria_records(12), name="rated")
    job = _joint_job(store, summary.dataset_id)
    original = job_train_joint.stage_version
    calls: list[int] = []

    def stage_then_cancel(*args, **kwargs):
        staged = original(*args, **kwargs)
        calls.append(staged[0].id)
        repo.request_cancel(store.engine, job.id)
        return staged

    monkeypatch.setattr(job_train_joint, "stage_version", stage_then_cancel)
    _run_in_thread(store)
    assert repo.get_job(store.engine, job.id).state == "cancelled"
    assert len(calls) == 1
    for dataset_id in summary.dataset_ids():
        assert repo.active_model_version(store.engine, dataset_id) is None
        assert {mv.status for mv in repo.list_model_versions(store.engine, dataset_id)} <= {"failed"}
