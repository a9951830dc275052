"""Train on a dataset of a group of criteria (AppTest): "every criterion" queues one training job per
criterion's dataset; only an admin may (checked on the server)."""

from __future__ import annotations

from typing import Any

import pytest

from app import actions
from db import accounts
from db import repository as repo
from db.accounts import PermissionDenied
from fractal_core.errors import InputError
from tests.app.conftest import app_test
from tests.app.data import tiny_records
from tests.app.test_auth import PASSWORD


def _criteria_records(n: int) -> list[dict[str, Any]]:
    out = []
    for i, rec in enumerate(tiny_records(n)):
        label = rec.pop("response_label")
        rec.pop("aggregation", None)
        rec.pop("sentence_labels", None)
        rec["criteria"] = {"wrong": {"response_label": label}, "helpful": {"response_label": (i // 2) % 2}}
        out.append(rec)
    return out


def test_every_criterion_queues_one_job_per_criterion_dataset(store) -> None:
    summary = store.ingest(_criteria_records(6), name="rated")
    at = app_test("views/train.py")
    assert not at.exception, at.exception
    at.checkbox(key="train_every_criterion").check().run()
    assert "train_start" not in [b.key for b in at.button]  # one start button: the group's
    at.button(key="train_start_every").click().run()
    assert not at.exception, at.exception
    jobs = repo.list_jobs(store.engine, kind="train")
    assert sorted(j.payload["dataset_id"] for j in jobs) == sorted(summary.dataset_ids())
    assert {j.payload["method"] for j in jobs} == {at.selectbox(key="train_method").value}
    # A second click returns the same live jobs (one per dataset).
    at.button(key="train_start_every").click().run()
    assert len(repo.list_jobs(store.engine, kind="train")) == 2


def test_an_ordinary_dataset_has_no_every_criterion_choice(store) -> None:
    store.ingest(tiny_records(4))
    at = app_test("views/train.py")
    assert not at.checkbox and not at.exception


def test_only_an_admin_trains_every_criterion_and_only_on_a_group(store) -> None:
    summary = store.ingest(_criteria_records(4), name="rated")
    plain = store.ingest(tiny_records(2), name="plain").dataset_id
    accounts.add_user(store.engine, "ann", "annotator", PASSWORD)
    accounts.add_user(store.engine, "boss", "admin", PASSWORD)
    ann = accounts.get_user(store.engine, "ann")
    boss = accounts.get_user(store.engine, "boss")
    assert ann is not None and boss is not None
    with pytest.raises(PermissionDenied):
        actions.start_training_every_criterion(store.engine, ann, summary.dataset_id, "fractal", {}, 0)
    assert repo.list_jobs(store.engine, kind="train") == []
    with pytest.raises(InputError, match="group of criteria"):
        actions.start_training_every_criterion(store.engine, boss, plain, "fractal", {}, 0)
    started = actions.start_training_every_criterion(store.engine, boss, summary.dataset_id, "fractal", {}, 0)
    assert [c for c, _ in started] == ["helpful", "wrong"]


@pytest.mark.slow  # the worker embeds both datasets and trains their first models
def test_a_criteria_file_imported_by_the_worker_fills_and_embeds_every_criterion(store) -> None:
    from tests.app.data import write_jsonl

    path = write_jsonl(store.home / "rated.jsonl", _criteria_records(4))
    imp = repo.create_job(store.engine, "import", {"path": str(path), "dataset": "rated"})
    store.run_jobs()
    done = repo.get_job(store.engine, imp.id)
    assert done.state == "succeeded", done.error
    assert "rated.wrong, rated.helpful" in done.log
    datasets = {d.id: d for d in repo.list_datasets(store.engine)}
    assert sorted(d.name for d in datasets.values()) == ["rated.helpful", "rated.wrong"]
    embeds = repo.list_jobs(store.engine, kind="embed")
    assert {j.payload["dataset_id"] for j in embeds} == set(datasets)
    assert all(j.state == "succeeded" for j in embeds)
