"""The background worker: a separate process that claims jobs from the store and runs them.

State lives only in the database (``jobs`` table), so the web app polls it and a job survives a browser reload.
While a job runs a heartbeat thread keeps ``heartbeat_at`` fresh and watches for a cancel request. A worker that
dies (SIGKILL, OOM, power) leaves its job "running" with a stale heartbeat; the next worker marks it failed, on
start and then periodically, and fails the model version that job was training, so nothing half-trained is
ever served. Training uses CUDA when present (``TrainConfig.device="auto"``, resolved by the library).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from types import FrameType

from sqlalchemy import Engine

from app import jobs
from app.settings import AppSettings
from db import artifacts
from db import jobs as db_jobs
from db import repository as repo
from db.engine import get_engine
from db.ingest import purge_abandoned_imports

log = logging.getLogger("fractal.worker")

HEARTBEAT_S = 1.0
"""Seconds between heartbeats of a running job."""
STALE_AFTER_S = 20.0
"""A running job whose heartbeat is older than this belongs to a dead worker."""


def fail_orphaned_jobs(engine: Engine, *, stale_after_s: float = STALE_AFTER_S) -> list[int]:
    """Fail running jobs whose worker is gone; returns their ids.

    Two signals: a heartbeat older than ``stale_after_s`` (any host), or a worker id on this host whose process
    no longer exists (caught at once after a crash, without waiting for the timeout). Model versions left in
    status ``training`` by such jobs are marked failed too; their partial scores were never visible.
    """
    failed = list(repo.mark_stale_jobs_failed(engine, stale_after_s))
    for job in repo.list_jobs(engine, states=["running"], limit=500):
        if db_jobs.owner_gone(job.worker_id):
            with contextlib.suppress(ValueError):  # finished meanwhile
                repo.finish_job(
                    engine, job.id, "failed", error=f"worker {job.worker_id} died while running this job"
                )
                failed.append(job.id)
    if failed:
        _fail_orphaned_versions(engine)
    return failed


def _fail_orphaned_versions(engine: Engine) -> None:
    running: set[int] = set()
    for j in repo.list_jobs(engine, states=["running"], limit=500):
        if j.kind in ("train", "score"):
            dataset_id = int(j.payload.get("dataset_id", -1))
            running.add(dataset_id)
            # A joint fit stages a version in every criterion's dataset of the group.
            if j.payload.get("joint"):
                running.update(d.id for d in repo.criteria_siblings(engine, dataset_id))
    for ds in repo.list_datasets(engine):
        if ds.id in running:
            continue
        for mv in repo.list_model_versions(engine, ds.id):
            if mv.status == "training":
                with contextlib.suppress(ValueError):
                    repo.finish_model_version(
                        engine,
                        mv.id,
                        status="failed",
                        error="the worker stopped while this version was training",
                    )


def one_line_error(exc: BaseException, *, limit: int = 500) -> str:
    """What a user is told about a failed job: the exception's message on one line (input errors already say
    where and why; other errors keep their type, which is what a bug report needs)."""
    from fractal_core.errors import InputError

    text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Worker:
    """Claims and runs jobs one at a time until stopped (SIGTERM / SIGINT finish the current step first)."""

    def __init__(self, settings: AppSettings, *, stale_after_s: float = STALE_AFTER_S) -> None:
        self.settings = settings
        self.engine = get_engine(settings.db_url, create=False)  # `fractal serve` or `db upgrade` creates it
        self.worker_id = db_jobs.process_owner()
        self.stale_after_s = stale_after_s
        self._stop = threading.Event()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()
        raise KeyboardInterrupt  # interrupt a long training step; the job is closed as failed below

    def run(self, *, once: bool = False, poll_seconds: float = 1.0) -> None:
        """Loop: fail orphaned jobs, claim the oldest queued job, run it. ``once``: stop when the queue is empty."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
        failed = fail_orphaned_jobs(self.engine, stale_after_s=self.stale_after_s)
        if failed:
            log.info("marked jobs %s failed (their worker had died)", failed)
        # What killed or failed training runs left behind: their scores, stored files and local model copies.
        purged = artifacts.purge_failed(self.engine, self.settings.models_dir)
        if any(purged.values()):
            log.info("removed leftovers of failed model versions: %s", purged)
        # Staged rows of ingests whose process died before publishing (never visible to readers).
        removed = purge_abandoned_imports(self.engine)
        if removed:
            log.info("removed %d abandoned staged import(s)", removed)
        # Embeddings files of jobs whose worker was killed on this host.
        scratch = jobs.purge_scratch(self.settings)
        if scratch:
            log.info("removed the scratch files of dead workers %s", scratch)
        log.info(
            "%s waiting for jobs on %s", self.worker_id, self.engine.url.render_as_string(hide_password=True)
        )
        last_sweep = time.monotonic()
        try:
            while not self._stop.is_set():
                job = repo.claim_next_job(self.engine, self.worker_id, kinds=jobs.JOB_KINDS)
                if job is None:
                    if once:
                        return
                    self._stop.wait(poll_seconds)
                    if time.monotonic() - last_sweep > self.stale_after_s / 2:
                        fail_orphaned_jobs(self.engine, stale_after_s=self.stale_after_s)
                        last_sweep = time.monotonic()
                    continue
                self.run_one(job)
        except KeyboardInterrupt:
            log.info("stopping")

    def run_one(self, job: repo.JobRow) -> str:
        """Run a claimed job with a heartbeat thread; close it as succeeded, failed or cancelled."""
        log.info("job %d (%s) started", job.id, job.kind)
        cancel = threading.Event()
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT_S):
                try:
                    if repo.heartbeat(self.engine, job.id):
                        cancel.set()
                except Exception:  # a busy database must not kill the heartbeat; the next beat retries
                    log.exception("heartbeat failed")

        thread = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
        thread.start()
        ctx = jobs.JobContext(self.engine, job.id, cancel_flag=cancel.is_set)
        state, error, result = "succeeded", None, {}
        interrupted = False
        try:
            result = jobs.run_job(self.engine, self.settings, job, ctx)
        except jobs.JobCancelled:
            state = "cancelled"
        except KeyboardInterrupt:
            state, error = "failed", "the worker was stopped while running this job"
            interrupted = True
        except Exception as exc:
            # Users see one line (the job's error and its log); the traceback goes to the worker's own log.
            state, error = "failed", one_line_error(exc)
            log.exception("job %d (%s) failed", job.id, job.kind)
            with contextlib.suppress(Exception):
                ctx.log(f"failed: {error}")
        finally:
            done.set()
            thread.join(timeout=5)
        repo.finish_job(self.engine, job.id, state, error=error, result=result)
        log.info("job %d %s%s", job.id, state, f": {error}" if error else "")
        if interrupted:
            raise KeyboardInterrupt  # stop the loop too: the job is closed, the worker is shutting down
        return state
