"""Model artifacts live in the store, keyed by its identity and the version id, and a
worker starting up removes what failed or killed runs left behind (case 10). SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import socket
import subprocess

import numpy as np
import pytest
from sqlalchemy import func, select, update

from app import jobs
from db import artifacts
from db import repository as repo
from db.engine import run_read, run_write
from db.models import ModelFile, ModelVersion, ResponseScore, SentenceScore
from tests.app.conftest import make_store
from tests.app.data import FAST_TRAIN, tiny_records
from tests.engines import ENGINES


@pytest.fixture(params=ENGINES)
def store(request, tmp_path, monkeypatch):
    with make_store(request.param, tmp_path, monkeypatch) as made:
        yield made


def _train(store, dataset_id: int):
    job = repo.create_job(
        store.engine,
        "train",
        {"dataset_id": dataset_id, "method": "fractal", "config": FAST_TRAIN, "seed": 0},
    )
    store.run_jobs()
    done = repo.get_job(store.engine, job.id)
    assert done.state == "succeeded", done.error
    return repo.active_model_version(store.engine, dataset_id)


def _count(store, model, version_id: int) -> int:
    return run_read(
        store.engine,
        lambda s: s.scalar(
            select(func.count()).select_from(model).where(model.model_version_id == version_id)
        ),
    )


@pytest.mark.slow
def test_models_are_kept_in_the_store_and_keyed_by_it(store) -> None:
    ds = store.ingest(tiny_records(10))
    mv = _train(store, ds.dataset_id)
    sid = artifacts.store_id(store.engine)
    assert mv.artifact_path == f"store:{sid}/model-version/{mv.id}"
    assert _count(store, ModelFile, mv.id) == 2  # model.json and weights.pt
    # Another worker (no local copy at all) re-scores from the store.
    shutil.rmtree(store.home / "models", ignore_errors=True)
    score = repo.create_job(store.engine, "score", {"dataset_id": ds.dataset_id})
    store.run_jobs()
    assert repo.get_job(store.engine, score.id).state == "succeeded"
    assert (store.home / "models" / sid / str(mv.id) / "weights.pt").is_file()
    # A version that names another store's model is refused, not silently scored with the wrong model.
    other = f"store:{'0' * 8}-0000-0000-0000-{'0' * 12}/model-version/{mv.id}"
    active = repo.active_model_version(store.engine, ds.dataset_id)
    run_write(
        store.engine,
        lambda s: s.execute(
            update(ModelVersion).where(ModelVersion.id == active.id).values(artifact_path=other)
        ),
    )
    bad = repo.create_job(store.engine, "score", {"dataset_id": ds.dataset_id})
    store.run_jobs()
    failed = repo.get_job(store.engine, bad.id)
    assert failed.state == "failed" and "belongs to another store" in failed.error


@pytest.mark.slow
def test_two_stores_sharing_a_home_keep_their_own_models(store) -> None:
    """Same FRACTAL_HOME, same dataset id and version number in two stores: each keeps and loads its own model
    (they used to overwrite each other's ``dataset1-v1`` directory)."""
    from app.settings import load_settings
    from app.worker import Worker
    from db.engine import get_engine
    from db.ingest import ingest_file
    from tests.app.data import write_jsonl

    ds = store.ingest(tiny_records(10))
    first = _train(store, ds.dataset_id)
    other_url = f"sqlite:///{store.home / 'other.db'}"
    other = get_engine(other_url)
    path = write_jsonl(store.home / "other.jsonl", tiny_records(12))
    other_ds = ingest_file(other, path, "tiny").dataset_id
    repo.create_job(other, "train", {"dataset_id": other_ds, "method": "bagloss", "config": FAST_TRAIN})
    Worker(load_settings(other_url)).run(once=True)
    second = repo.active_model_version(other, other_ds)
    assert second is not None and (second.dataset_id, second.version) == (first.dataset_id, first.version)
    models = store.home / "models"
    mine = artifacts.model_dir(store.engine, first, models)
    theirs = artifacts.model_dir(other, second, models)
    assert mine != theirs and mine.parent.name == artifacts.store_id(store.engine)
    assert '"method": "fractal"' in (mine / "model.json").read_text()
    assert '"method": "bagloss"' in (theirs / "model.json").read_text()
    other.dispose()


@pytest.mark.slow
def test_worker_start_removes_leftovers_of_failed_versions(store) -> None:
    ds = store.ingest(tiny_records(10))
    good = _train(store, ds.dataset_id)
    # A killed run: a version left in training with scores, stored files and a local copy.
    ids = repo.load_training_set(store.engine, ds.dataset_id).sentence_ids
    killed = repo.create_model_version(store.engine, ds.dataset_id, method="fractal")
    repo.store_scores(store.engine, killed.id, ids, np.full(len(ids), 0.5))
    cache = artifacts.model_dir(store.engine, good, store.home / "models")
    leftover = cache.parent / str(killed.id)
    shutil.copytree(cache, leftover)
    artifacts.save_model_files(store.engine, killed.id, cache)
    repo.create_job(store.engine, "train", {"dataset_id": ds.dataset_id})
    gone = subprocess.Popen(["true"])  # a worker process on this host that no longer exists
    gone.wait()
    repo.claim_next_job(store.engine, f"{socket.gethostname()}:{gone.pid}")
    assert _count(store, SentenceScore, killed.id) == len(ids)
    store.run_jobs()  # the worker starts: fails the orphaned version, then removes what it left
    assert repo.get_model_version(store.engine, killed.id).status == "failed"
    assert _count(store, SentenceScore, killed.id) == _count(store, ResponseScore, killed.id) == 0
    assert _count(store, ModelFile, killed.id) == 0 and not leftover.exists()
    # The active version is untouched.
    assert _count(store, ModelFile, good.id) == 2 and cache.is_dir()
    assert repo.active_model_version(store.engine, ds.dataset_id).id == good.id
    jobs.queue_after_import(store.engine, ds.dataset_id)  # and it still scores
    store.run_jobs()
    assert repo.active_model_version(store.engine, ds.dataset_id).version == good.version + 2
