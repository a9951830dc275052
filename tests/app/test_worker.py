"""The worker: training publishes a version atomically, cancel and crash leave the active model untouched."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from app import jobs
from app.settings import load_settings
from app.worker import Worker, fail_orphaned_jobs
from db import repository as repo
from fractal_core.mil.reviewer import FIRST_ERROR_RULES
from tests.app.conftest import REPO, app_env, make_store
from tests.app.data import FAST_TRAIN, tiny_records
from tests.engines import ENGINES

SLOW_TRAIN = {**FAST_TRAIN, "max_epochs": 400, "patience": 400, "min_batches_per_epoch": 20}
"""Long enough to be interrupted mid-training."""


@pytest.fixture(params=ENGINES)
def store(request, tmp_path, monkeypatch):
    """The worker runs on both engines: SQLite and PostgreSQL."""
    with make_store(request.param, tmp_path, monkeypatch) as made:
        yield made


def _train(store, dataset_id: int, config=FAST_TRAIN, method: str = "fractal"):
    return repo.create_job(
        store.engine, "train", {"dataset_id": dataset_id, "method": method, "config": config, "seed": 0}
    )


def _wait(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _scored_responses(store, dataset_id: int) -> dict[int, float | None]:
    page = repo.list_responses(store.engine, dataset_id, sort="id", page=0, page_size=500)
    return {r.id: r.score for r in page.rows}


@pytest.mark.slow
def test_training_job_publishes_an_active_version_with_gold_metrics(store) -> None:
    ds = store.ingest(tiny_records(16, with_labels=True), labels_as="gold")
    job = _train(store, ds.dataset_id)
    store.run_jobs()
    done = repo.get_job(store.engine, job.id)
    assert done.state == "succeeded", done.error
    assert done.progress == 1.0 and "[embed]" in done.log
    mv = repo.active_model_version(store.engine, ds.dataset_id)
    assert mv is not None and mv.status == "ready" and mv.version == 1
    assert mv.n_scores == ds.n_sentences
    assert mv.metrics["gold_sentences"] == ds.n_sentences and mv.metrics["gold_before"] == {}
    assert 0.0 <= mv.metrics["gold_after"]["instance_auc_roc"] <= 1.0
    # The F key's rule is stored with the version, with what it was chosen by.
    assert mv.metrics["first_error_rule"] in FIRST_ERROR_RULES
    assert {"top1_valid", "n_erroneous_valid", "calibration", "reason"} <= set(
        mv.metrics["first_error_rule_figures"]
    )
    # So is the step calibration the given-label view reads the stored scores through (when chosen for it).
    step = mv.metrics["step_calibration"]
    assert {"scale", "bias", "given_label", "fitted_on"} <= set(step) and isinstance(
        step["given_label"], bool
    )
    scores = _scored_responses(store, ds.dataset_id)
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores.values())

    # A second run compares itself with the first on the same gold set, then replaces it.
    job2 = _train(store, ds.dataset_id)
    store.run_jobs()
    assert repo.get_job(store.engine, job2.id).state == "succeeded"
    mv2 = repo.active_model_version(store.engine, ds.dataset_id)
    assert mv2.version == 2 and mv2.replaced_id == mv.id
    assert mv2.metrics["gold_before"]["instance_auc_roc"] == pytest.approx(
        mv.metrics["gold_after"]["instance_auc_roc"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["auto", "onnx-int8"])
def test_jobs_use_the_encoder_named_by_fractal_encoder(
    store, tiny_encoder_dir, monkeypatch, precision
) -> None:
    """FRACTAL_ENCODER (`fractal serve --encoder`) and FRACTAL_ENCODER_PRECISION (`--precision`) reach the embed
    and train jobs, and the model keeps both: onnx-int8 vectors go under their own encoder id."""
    from db import artifacts
    from fractal_core import FractalModel
    from fractal_core.embedding.encoder import EncoderConfig, encoder_id_for

    ds = store.ingest(tiny_records(12, with_labels=True), labels_as="gold")
    monkeypatch.setenv("FRACTAL_ENCODER", str(tiny_encoder_dir))
    if precision != "auto":
        monkeypatch.setenv("FRACTAL_ENCODER_PRECISION", precision)
    settings = load_settings(store.db_url)
    assert settings.encoder == str(tiny_encoder_dir) and settings.precision == precision
    expected = encoder_id_for(EncoderConfig(model_path=str(tiny_encoder_dir), precision=precision))
    assert expected != encoder_id_for(EncoderConfig())
    assert (expected == encoder_id_for(EncoderConfig(model_path=str(tiny_encoder_dir)))) == (
        precision == "auto"
    )
    embed = repo.create_job(store.engine, "embed", {"dataset_id": ds.dataset_id})
    job = _train(store, ds.dataset_id)
    store.run_jobs()
    embedded = repo.get_job(store.engine, embed.id)
    assert embedded.state == "succeeded", embedded.error
    assert embedded.result["encoder"] == expected
    assert repo.get_job(store.engine, job.id).state == "succeeded"
    mv = repo.active_model_version(store.engine, ds.dataset_id)
    model = FractalModel.load(artifacts.model_dir(store.engine, mv, settings.models_dir))
    assert model.encoder_id_ == expected and model.encoder.model_path == str(tiny_encoder_dir)
    assert model.encoder.precision == precision

    # Unset, new jobs go back to the bundled encoder; a score job keeps its model's own encoder either way.
    monkeypatch.delenv("FRACTAL_ENCODER")
    monkeypatch.delenv("FRACTAL_ENCODER_PRECISION", raising=False)
    assert load_settings(store.db_url).encoder is None and load_settings(store.db_url).precision == "auto"
    rescore = repo.create_job(store.engine, "score", {"dataset_id": ds.dataset_id})
    store.run_jobs()
    assert repo.get_job(store.engine, rescore.id).state == "succeeded"
    mv2 = repo.active_model_version(store.engine, ds.dataset_id)
    rescored = FractalModel.load(artifacts.model_dir(store.engine, mv2, settings.models_dir))
    assert rescored.encoder_id_ == expected


def test_worker_and_serve_refuse_an_unknown_encoder_before_starting(tmp_path) -> None:
    from typer.testing import CliRunner

    from app.cli import app

    for command in (["worker", "--once"], ["serve", "--no-auth"]):
        env = {"FRACTAL_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
        result = CliRunner().invoke(app, [*command, "--encoder", str(tmp_path / "nowhere")], env=env)
        assert result.exit_code == 2, (command, result.output)
        assert "--encoder" in result.output and "nowhere" in result.output
        result = CliRunner().invoke(app, [*command, "--precision", "int4"], env=env)
        assert result.exit_code == 2, (command, result.output)
        assert "--precision" in result.output and "int4" in result.output
        bad_env = {**env, "FRACTAL_ENCODER_PRECISION": "int4"}
        # The environment is checked too: a worker refusing it would otherwise be restarted by `serve` forever.
        result = CliRunner().invoke(app, command, env=bad_env)
        assert result.exit_code == 2 and "int4" in result.output, result.output


@pytest.mark.slow
def test_score_job_rescores_new_responses_as_a_new_version(store) -> None:
    ds = store.ingest(tiny_records(10))
    _train(store, ds.dataset_id)
    store.run_jobs()
    more = tiny_records(14)[10:]
    for r in more:
        r["id"] += "-new"
    store.ingest(more)
    queued = jobs.queue_after_import(store.engine, ds.dataset_id)
    assert [j.kind for j in queued] == ["embed", "score"]
    job = queued[1]
    store.run_jobs()
    assert repo.get_job(store.engine, queued[0].id).state == "succeeded"
    assert repo.get_job(store.engine, job.id).state == "succeeded"
    mv = repo.active_model_version(store.engine, ds.dataset_id)
    assert mv.version == 2 and mv.metrics["rescored_from_version"] == 1
    assert all(s is not None for s in _scored_responses(store, ds.dataset_id).values())


@pytest.mark.slow
def test_failed_training_keeps_previous_version_active(store) -> None:
    ds = store.ingest(tiny_records(10))
    _train(store, ds.dataset_id)
    store.run_jobs()
    before = repo.active_model_version(store.engine, ds.dataset_id)
    bad = _train(store, ds.dataset_id, config={"no_such_option": 1})
    store.run_jobs()
    failed = repo.get_job(store.engine, bad.id)
    assert failed.state == "failed" and "no_such_option" in failed.error
    assert repo.active_model_version(store.engine, ds.dataset_id).id == before.id


@pytest.mark.slow
def test_cancel_running_training(store) -> None:
    ds = store.ingest(tiny_records(12))
    _train(store, ds.dataset_id)
    store.run_jobs()
    active = repo.active_model_version(store.engine, ds.dataset_id)
    job = _train(store, ds.dataset_id, config=SLOW_TRAIN)
    worker = Worker(load_settings(store.db_url))
    thread = threading.Thread(target=worker.run, kwargs={"once": True}, daemon=True)
    thread.start()
    _wait(lambda: repo.get_job(store.engine, job.id).progress > 0.1, what="training to start")
    repo.request_cancel(store.engine, job.id)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert repo.get_job(store.engine, job.id).state == "cancelled"
    assert repo.active_model_version(store.engine, ds.dataset_id).id == active.id
    statuses = {mv.version: mv.status for mv in repo.list_model_versions(store.engine, ds.dataset_id)}
    assert statuses.get(2, "failed") == "failed"


@pytest.mark.slow
def test_worker_killed_mid_training(store) -> None:
    """SIGKILL during training: after a restart the job is failed, the old model active, no partial scores."""
    ds = store.ingest(tiny_records(12))
    _train(store, ds.dataset_id)
    store.run_jobs()
    active = repo.active_model_version(store.engine, ds.dataset_id)
    scores_before = _scored_responses(store, ds.dataset_id)
    job = _train(store, ds.dataset_id, config=SLOW_TRAIN)
    env = app_env(store.home, store.db_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--db", store.db_url],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        _wait(lambda: repo.get_job(store.engine, job.id).progress > 0.1, what="training to start")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert repo.get_job(store.engine, job.id).state == "running"  # nobody cleaned up: it was a crash
    # The killed job's embeddings file stayed behind in its worker's scratch directory ...
    scratch = store.home / "scratch" / f"{socket.gethostname()}:{proc.pid}"
    assert [p.name for p in scratch.glob("fractal-embeddings-*/*")], "the job wrote no embeddings file"
    # The restarted worker recognises the dead worker's job at once (its process is gone).
    failed = fail_orphaned_jobs(store.engine)
    assert job.id in failed
    crashed = repo.get_job(store.engine, job.id)
    assert crashed.state == "failed" and "died" in crashed.error
    assert repo.active_model_version(store.engine, ds.dataset_id).id == active.id
    assert _scored_responses(store, ds.dataset_id) == scores_before
    statuses = {mv.version: mv.status for mv in repo.list_model_versions(store.engine, ds.dataset_id)}
    assert statuses[1] == "ready" and statuses.get(2, "failed") == "failed"
    # ... until a worker starts on this host: it removes the dead worker's scratch, not its own.
    store.run_jobs()
    assert not scratch.exists()
    assert (store.home / "scratch" / f"{socket.gethostname()}:{os.getpid()}").is_dir()


def test_stale_heartbeat_fails_job_from_another_host(store) -> None:
    ds = store.ingest(tiny_records(4))
    job = _train(store, ds.dataset_id)
    claimed = repo.claim_next_job(store.engine, "other-host:123")
    assert claimed.id == job.id
    assert fail_orphaned_jobs(store.engine, stale_after_s=60) == []  # fresh heartbeat, unknown host: alive
    time.sleep(1.1)
    assert fail_orphaned_jobs(store.engine, stale_after_s=1) == [job.id]
    assert repo.get_job(store.engine, job.id).state == "failed"


@pytest.mark.slow
def test_import_and_export_jobs(store) -> None:
    from tests.app.data import write_jsonl

    path = write_jsonl(store.home / "big.jsonl", tiny_records(5))
    imp = repo.create_job(
        store.engine, "import", {"path": str(path), "dataset": "bulk", "segment_mode": "sentences"}
    )
    store.run_jobs()
    assert repo.get_job(store.engine, imp.id).state == "succeeded"
    ds = repo.require_dataset(store.engine, "bulk")
    assert ds.n_responses == 5
    [embed] = repo.list_jobs(store.engine, kind="embed")  # queued by the import, run by the same worker pass
    assert embed.state == "succeeded" and embed.result["sentences"] == ds.n_sentences
    for fmt in ("native", "kto", "stepwise-parquet"):
        exp = repo.create_job(store.engine, "export", {"dataset_id": ds.id, "format": fmt})
        store.run_jobs()
        done = repo.get_job(store.engine, exp.id)
        assert done.state == "succeeded", done.error
        assert os.path.getsize(done.result["path"]) > 0
        assert done.result["path"].endswith(jobs.EXPORT_SUFFIX[fmt])


def test_training_a_missing_dataset_fails_cleanly(store) -> None:
    bad = repo.create_job(store.engine, "train", {"dataset_id": 999})
    store.run_jobs()
    assert repo.get_job(store.engine, bad.id).state == "failed"


def test_reliability_table_is_vectorised_and_correct() -> None:
    from app.analysis import expected_calibration_error, reliability

    scores = np.array([0.05, 0.15, 0.95, 0.91, 0.5])
    positive = np.array([0, 0, 1, 0, 1], dtype=bool)
    table = reliability(scores, positive, n_bins=10)
    assert table["count"].sum() == 5 and table["count"][9] == 2
    assert table["positive_rate"][9] == pytest.approx(0.5)
    assert np.isnan(table["positive_rate"][3])
    ece = expected_calibration_error(table)
    expected = (abs(0 - 0.05) + abs(0 - 0.15) + 2 * abs(0.5 - 0.93) + abs(1 - 0.5)) / 5
    assert ece == pytest.approx(expected)


@pytest.mark.slow
def test_file_labels_are_reported_but_not_used_as_gold(store) -> None:
    ds = store.ingest(tiny_records(12, with_labels=True))  # labels stored as "imported"
    _train(store, ds.dataset_id)
    store.run_jobs()
    mv = repo.active_model_version(store.engine, ds.dataset_id)
    assert mv.metrics["gold_sentences"] == 0 and mv.metrics["gold_after"] == {}
    assert 0.0 <= mv.metrics["file_labels_after"]["instance_auc_roc"] <= 1.0


@pytest.mark.slow
def test_three_worker_processes_run_each_of_ten_jobs_once(store) -> None:
    """Several workers (any host) on one store: every queued job is claimed by exactly one of them."""
    import re

    datasets = [store.ingest(tiny_records(6), name=f"set{i}") for i in range(2)]
    queued = [
        repo.create_job(store.engine, "export", {"dataset_id": ds.dataset_id, "format": fmt})
        for ds in datasets
        for fmt in jobs.EXPORT_SUFFIX
    ]
    assert len(queued) == 10
    env = app_env(store.home, store.db_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--db", store.db_url, "--once", "--poll", "0.1"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        for _ in range(3)
    ]
    logs = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()[-2000:]
            logs.append(err.decode())
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    started = [int(n) for log in logs for n in re.findall(r"job (\d+) \(export\) started", log)]
    assert sorted(started) == sorted(j.id for j in queued)  # each job started once, by one worker
    done = [repo.get_job(store.engine, j.id) for j in queued]
    assert all(j.state == "succeeded" for j in done), [(j.id, j.state, j.error) for j in done]
    workers = {j.worker_id for j in done}
    assert len(workers) <= 3 and all(w and ":" in w for w in workers)
    for job in done:  # the job names the worker whose log shows it
        owner = next(i for i, log in enumerate(logs) if f"job {job.id} (export) started" in log)
        assert job.worker_id == f"{job.worker_id.rpartition(':')[0]}:{procs[owner].pid}"
