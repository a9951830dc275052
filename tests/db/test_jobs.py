from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import Engine, update

from db import jobs
from db.engine import get_engine, run_write
from db.models import Job, utcnow


def test_same_idempotency_key_gives_one_live_job(engine: Engine) -> None:
    a = jobs.create_job(engine, "train", {"dataset": 1}, idempotency_key="train:1")
    b = jobs.create_job(engine, "train", {"dataset": 1}, idempotency_key="train:1")
    assert a.id == b.id and len(jobs.list_jobs(engine)) == 1
    other = jobs.create_job(engine, "train", {"dataset": 2}, idempotency_key="train:2")
    assert other.id != a.id
    claimed = jobs.claim_next_job(engine, "w1")
    assert claimed is not None and claimed.id == a.id
    assert jobs.create_job(engine, "train", idempotency_key="train:1").id == a.id  # running still counts
    jobs.finish_job(engine, a.id, "succeeded", result={"model_version": 3})
    again = jobs.create_job(engine, "train", idempotency_key="train:1")
    assert again.id not in (a.id, other.id)  # a finished job does not block a new one


def test_racing_creates_with_one_key_make_one_job(db_url: str, engine: Engine) -> None:
    ids: list[int] = []
    barrier = threading.Barrier(6)

    def click() -> None:
        own = get_engine(db_url)
        barrier.wait()
        ids.append(jobs.create_job(own, "train", idempotency_key="train:race").id)
        own.dispose()

    threads = [threading.Thread(target=click) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 6 and len(set(ids)) == 1


def test_workers_claim_each_job_once(db_url: str, engine: Engine) -> None:
    created = {jobs.create_job(engine, "embed", {"i": i}).id for i in range(30)}
    claimed: list[int] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        own = get_engine(db_url)
        while (job := jobs.claim_next_job(own, name)) is not None:
            with lock:
                claimed.append(job.id)
            jobs.finish_job(own, job.id)
        own.dispose()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(created)
    assert {j.state for j in jobs.list_jobs(engine, limit=100)} == {"succeeded"}


def test_claim_filters_kinds_and_keeps_order(engine: Engine) -> None:
    first = jobs.create_job(engine, "export")
    second = jobs.create_job(engine, "train")
    job = jobs.claim_next_job(engine, "w", kinds=["train"])
    assert job is not None and job.id == second.id and job.state == "running" and job.worker_id == "w"
    job = jobs.claim_next_job(engine, "w")
    assert job is not None and job.id == first.id
    assert jobs.claim_next_job(engine, "w") is None


def test_progress_log_cancel_and_finish(engine: Engine) -> None:
    job = jobs.create_job(engine, "train")
    assert jobs.claim_next_job(engine, "w") is not None
    assert jobs.update_progress(engine, job.id, 0.4, "epoch 2/5") is False
    jobs.append_log(engine, job.id, "loss 0.3")
    jobs.append_log(engine, job.id, "loss 0.2")
    row = jobs.get_job(engine, job.id)
    assert row is not None and row.progress == 0.4 and row.message == "epoch 2/5"
    assert row.log.splitlines()[-1].endswith("loss 0.2") and len(row.log.splitlines()) == 2
    jobs.request_cancel(engine, job.id)
    assert jobs.is_cancel_requested(engine, job.id) and jobs.heartbeat(engine, job.id) is True
    done = jobs.finish_job(engine, job.id, "cancelled")
    assert done.state == "cancelled" and done.finished_at is not None
    queued = jobs.create_job(engine, "train")
    assert jobs.request_cancel(engine, queued.id).state == "cancelled"  # never started
    assert jobs.claim_next_job(engine, "w") is None


def test_failed_job_keeps_its_error(engine: Engine) -> None:
    job = jobs.create_job(engine, "train")
    jobs.claim_next_job(engine, "w")
    failed = jobs.finish_job(engine, job.id, "failed", error="ValueError: no labels")
    assert failed.state == "failed" and failed.error == "ValueError: no labels"


def test_stale_running_jobs_are_failed(engine: Engine) -> None:
    alive, dead = jobs.create_job(engine, "a"), jobs.create_job(engine, "b")
    jobs.claim_next_job(engine, "w1")
    jobs.claim_next_job(engine, "w2")
    old = utcnow() - timedelta(minutes=10)
    run_write(engine, lambda s: s.execute(update(Job).where(Job.id == dead.id).values(heartbeat_at=old)))
    assert jobs.mark_stale_jobs_failed(engine, timeout_s=60) == [dead.id]
    row = jobs.get_job(engine, dead.id)
    assert row is not None and row.state == "failed" and "heartbeat" in (row.error or "")
    still = jobs.get_job(engine, alive.id)
    assert still is not None and still.state == "running"
