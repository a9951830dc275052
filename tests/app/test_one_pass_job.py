"""The token-level (one-pass) scorer in the worker: a training job stores it as a model version (top layers and
head only), a score job re-scores with it, a cancel stops it without a half-published version, and its cost is
estimated from the dataset's windows. A tiny random BERT stands in for the encoder (``FRACTAL_ENCODER``)."""

from __future__ import annotations

import threading
import time

import pytest

from app import job_one_pass, jobs
from app.job_payloads import ONE_PASS_METHODS, TrainPayload
from app.settings import load_settings
from app.worker import HEARTBEAT_S, Worker
from db import artifacts
from db import repository as repo
from fractal_core.errors import InputError
from tests.app.conftest import app_test, make_store
from tests.app.data import FAST_TRAIN, tiny_records
from tests.engines import ENGINES


@pytest.fixture(params=ENGINES)
def store(request, tmp_path, monkeypatch, tiny_encoder_dir):
    """A store on both engines whose jobs use the tiny encoder."""
    monkeypatch.setenv("FRACTAL_ENCODER", str(tiny_encoder_dir))
    with make_store(request.param, tmp_path, monkeypatch) as made:
        yield made


def _train_one_pass(store, dataset_id: int, *, train_layers: int = 0, method: str = "hybrid"):
    payload = TrainPayload.parse(
        {"dataset_id": dataset_id, "method": method, "config": {}, "seed": 0, "scorer": "one_pass",
         "train_layers": train_layers}
    )  # fmt: skip
    return repo.create_job(store.engine, "train", payload.to_dict())


def test_payload_checks_the_scorer_and_its_settings() -> None:
    frozen = TrainPayload.parse({"dataset_id": 1, "method": "fractal", "config": {}, "seed": 0})
    assert frozen.scorer == "frozen" and "scorer" not in frozen.to_dict()  # a frozen payload is unchanged
    parsed = TrainPayload.parse(
        {"dataset_id": 1, "method": "bagloss", "scorer": "one_pass", "train_layers": 1}
    )
    assert parsed.to_dict()["scorer"] == "one_pass" and parsed.train_layers == 1
    # every trained method of the suite but auto trains the one-pass scorer, with its own objective
    assert ONE_PASS_METHODS == ("bagloss", "priors", "pslab", "hybrid", "hazard", "supervised")
    for method in ONE_PASS_METHODS:
        one = TrainPayload.parse({"dataset_id": 1, "method": method, "scorer": "one_pass"})
        config = job_one_pass.one_pass_config(None, one.method, one.train_layers, one.config)
        assert config.method == method and config.gold_weight == 0.0 and config.route == "one_pass"
    for bad, field in (
        ({"scorer": "gpt"}, "scorer"),
        ({"scorer": "one_pass", "method": "auto"}, "method"),
        ({"scorer": "one_pass", "method": "fractal"}, "method"),
        ({"scorer": "one_pass", "method": "prior_only"}, "method"),
        ({"scorer": "one_pass", "method": "hybrid", "train_layers": -1}, "train_layers"),
        ({"scorer": "one_pass", "method": "hybrid", "train_layers": True}, "train_layers"),
    ):
        with pytest.raises(InputError) as err:
            TrainPayload.parse({"dataset_id": 1, "method": "fractal", **bad})
        assert err.value.field == field


@pytest.mark.slow
def test_one_pass_job_publishes_a_version_that_a_score_job_uses(store) -> None:
    ds = store.ingest(tiny_records(16, with_labels=True), labels_as="gold")
    job = _train_one_pass(store, ds.dataset_id)
    store.run_jobs()
    done = repo.get_job(store.engine, job.id)
    assert done.state == "succeeded", done.error
    assert (
        done.progress == 1.0 and "[cache, top 1 layer]" in done.log and "[finetune, top 2 layers]" in done.log
    )
    mv = repo.active_model_version(store.engine, ds.dataset_id)
    assert mv is not None and mv.method == "one_pass:hybrid" and mv.n_scores == ds.n_sentences
    run = mv.metrics[job_one_pass.RUN_KEY]
    # train_layers was not given: 1 and 2 were both trained and the better on the held-out responses kept.
    assert set(run["layer_choice"]["valid_score"]) == {"1", "2"}
    assert run["train_layers"] == run["layer_choice"]["chosen"] in (1, 2)
    assert run["windows"] >= 16 and run["epochs_run"] >= 2 and run["train_seconds"] > run["cache_seconds"] > 0
    assert 0.0 <= mv.metrics["gold_after"]["instance_auc_roc"] <= 1.0
    settings = load_settings(store.db_url)
    directory = artifacts.model_dir(store.engine, mv, settings.models_dir)
    assert sorted(p.name for p in directory.iterdir() if p.name != "store.json") == [
        "finetune.json", "head.pt", "top_layers.pt"
    ]  # fmt: skip
    model = job_one_pass.load_version_model(store.engine, settings, mv)
    assert model.config.route == "one_pass" and model.config.train_layers == run["train_layers"]
    for page in ("views/models.py", "views/review.py", "views/gold.py", "views/train.py"):
        at = app_test(page)  # the pages read a one-pass version's metrics like any other's
        assert not at.exception and not at.error, (page, at.exception, [e.value for e in at.error])

    # New responses: the score job after the upload re-scores every response with the one-pass model.
    more = tiny_records(20, with_labels=True)[16:]
    for r in more:
        r["id"] += "-new"
    store.ingest(more)
    queued = jobs.queue_after_import(store.engine, ds.dataset_id)
    assert [j.kind for j in queued] == ["embed", "score"]
    store.run_jobs()
    assert repo.get_job(store.engine, queued[1].id).state == "succeeded"
    mv2 = repo.active_model_version(store.engine, ds.dataset_id)
    assert mv2.version == 2 and mv2.method == "one_pass:hybrid" and mv2.metrics["rescored_from_version"] == 1
    assert mv2.n_scores == ds.n_sentences + sum(len(r["sentences"]) for r in more)

    # The cost of the next one-pass job is estimated at the rate this job measured.
    records = repo.load_training_set(store.engine, ds.dataset_id).records
    config = job_one_pass.one_pass_config(settings.encoder, "hybrid", 0)
    cost = job_one_pass.estimate(store.engine, records, config, [ds.dataset_id])
    assert cost.responses == len(records) and cost.windows >= len(records) and cost.candidates == 2
    assert "measured by model version 1" in cost.rate.source and cost.seconds > 0

    # A frozen training after it: no gold comparison with a model that reads tokens (activation decides).
    frozen = repo.create_job(
        store.engine,
        "train",
        {"dataset_id": ds.dataset_id, "method": "hybrid", "config": FAST_TRAIN, "seed": 0},
    )
    store.run_jobs()
    assert repo.get_job(store.engine, frozen.id).state == "succeeded"
    mv3 = max(repo.list_model_versions(store.engine, ds.dataset_id), key=lambda v: v.version)
    assert mv3.version == 3 and mv3.method == "hybrid" and mv3.metrics["gold_before"] == {}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["priors", "hazard"])
def test_one_pass_jobs_train_the_suite_methods(store, method: str) -> None:
    """A method with a frozen-vector target (priors: the cosine prior) and the first-error hazard, on step data
    whose gold stops at each first error: the worker trains, publishes and scores like any one-pass job."""
    records = tiny_records(16, with_labels=True)
    for r in records:  # nothing judged after the first error
        labels = r["sentence_labels"]
        first = labels.index(1) if 1 in labels else len(labels)
        r["sentence_labels"] = labels[: first + 1] + [None] * (len(labels) - first - 1)
    ds = store.ingest(records, labels_as="gold")
    job = _train_one_pass(store, ds.dataset_id, train_layers=1, method=method)
    store.run_jobs()
    done = repo.get_job(store.engine, job.id)
    assert done.state == "succeeded", done.error
    mv = (
        repo.active_model_version(store.engine, ds.dataset_id)
        or repo.list_model_versions(store.engine, ds.dataset_id)[0]
    )
    assert mv.method == f"one_pass:{method}" and mv.n_scores == ds.n_sentences
    model = job_one_pass.load_version_model(store.engine, load_settings(store.db_url), mv)
    assert model.config.method == method and model.config.gold_weight == 0.0


@pytest.mark.slow
def test_cancel_stops_a_one_pass_job_and_publishes_nothing(store, monkeypatch) -> None:
    """A cancel requested during a training step: the job stops at the next step (the heartbeat has seen the
    request before it), no version is published and nothing is scored."""
    ds = store.ingest(tiny_records(24, with_labels=True), labels_as="gold")
    job = _train_one_pass(store, ds.dataset_id, train_layers=1)
    original = job_one_pass.stage_progress
    stages: list[str] = []

    def cancelling(ctx, lo, hi):
        inner = original(ctx, lo, hi)

        def callback(stage: str, fraction: float, message: str) -> None:
            stages.append(stage)
            if stage == "finetune" and stages.count("finetune") == 1:
                repo.request_cancel(store.engine, job.id)
                time.sleep(2 * HEARTBEAT_S)  # the heartbeat thread sees the request meanwhile
            inner(stage, fraction, message)

        return callback

    monkeypatch.setattr(job_one_pass, "stage_progress", cancelling)
    worker = Worker(load_settings(store.db_url))
    thread = threading.Thread(target=worker.run, kwargs={"once": True}, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert repo.get_job(store.engine, job.id).state == "cancelled"
    assert stages.count("finetune") == 1 and "score" not in stages  # stopped within the step
    assert repo.active_model_version(store.engine, ds.dataset_id) is None
    assert repo.list_model_versions(store.engine, ds.dataset_id) == []


def test_train_page_offers_the_one_pass_scorer_with_its_cost_before_the_job(store) -> None:
    ds = store.ingest(tiny_records(8, with_labels=True), labels_as="gold")
    at = app_test("views/train.py")
    assert at.radio(key="train_scorer").value == "frozen"  # the default stays the frozen scorer
    assert not any("Estimated cost" in i.value for i in at.info)
    at.radio(key="train_scorer").set_value("one_pass").run()
    assert not at.exception, at.exception
    offered = [o.split(":")[0] for o in at.selectbox(key="train_method").options]
    assert offered == ["bagloss", "priors", "pslab", "hybrid", "hazard", "supervised"]
    [line] = [i.value for i in at.info if "Estimated cost" in i.value]
    # 8 short responses are 8 windows; two trainings (top 1 and 2 layers) at the benchmark's reference rate:
    # 2 x 8 x (25.5 / 44 + 3 x 78.9 / 44) s = 95 s.
    assert "about 1.6 min" in line and "8 responses make 8 windows" in line and "2 trainings" in line
    assert "An estimate" in line
    assert "44 windows" in line  # the reference rate names what it was measured on
    at.selectbox(key="train_layers").set_value(1).run()
    [line] = [i.value for i in at.info if "Estimated cost" in i.value]
    assert "trainings" not in line
    at.selectbox(key="train_method").set_value("hybrid").run()
    at.button(key="train_start").click().run()
    [job] = repo.list_jobs(store.engine, kind="train")
    assert job.payload == {
        "dataset_id": ds.dataset_id, "method": "hybrid", "config": {}, "seed": 0, "scorer": "one_pass",
        "train_layers": 1,
    }  # fmt: skip
