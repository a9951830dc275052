"""The background job queue, kept in the database so it needs no broker and survives restarts.

Life of a job: ``create_job`` (queued) -> ``claim_next_job`` by a worker (running; heartbeats, progress and
log lines while it works) -> ``finish_job`` (succeeded / failed with its error / cancelled). The page polls
``get_job``. ``request_cancel`` cancels a queued job at once and asks a running one to stop (the worker
checks ``is_cancel_requested`` or the return of ``update_progress``). ``mark_stale_jobs_failed`` fails running
jobs whose worker stopped heartbeating (crashed), so no job stays "running" forever.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from datetime import timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import Job, utcnow
from db.rows import JobRow

LIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")
MAX_LOG_CHARS = 200_000


def process_owner() -> str:
    """This process as ``host:pid``: how a running job names its worker and a staged import its process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_gone(owner: str | None) -> bool:
    """True when ``owner`` (``host:pid``) names a process on this host that no longer exists (crashed or
    killed); a process on another host is judged by its heartbeat instead."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def _row(job: Job) -> JobRow:
    return JobRow(
        id=job.id,
        kind=job.kind,
        payload=dict(job.payload or {}),
        state=job.state,
        idempotency_key=job.idempotency_key,
        progress=job.progress,
        message=job.message,
        log=job.log,
        result=dict(job.result or {}),
        error=job.error,
        worker_id=job.worker_id,
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        started_at=job.started_at,
        heartbeat_at=job.heartbeat_at,
        finished_at=job.finished_at,
    )


def _live_with_key(session: Session, key: str) -> Job | None:
    return session.scalars(
        select(Job).where(Job.idempotency_key == key, Job.state.in_(LIVE_STATES)).order_by(Job.id).limit(1)
    ).first()


def create_job(
    engine: Engine,
    kind: str,
    payload: Mapping[str, object] | None = None,
    *,
    idempotency_key: str | None = None,
) -> JobRow:
    """Queue a job. While a job with the same ``idempotency_key`` is queued or running, that job is
    returned instead of a new one (two clicks on "Train" make one job); a partial unique index enforces it
    even when two processes race."""

    def work(session: Session) -> JobRow:
        if idempotency_key is not None:
            existing = _live_with_key(session, idempotency_key)
            if existing is not None:
                return _row(existing)
        job = Job(
            kind=kind,
            payload=dict(payload or {}),
            state="queued",
            idempotency_key=idempotency_key,
            progress=0.0,
            message="",
            log="",
            result={},
            cancel_requested=False,
            created_at=utcnow(),
        )
        session.add(job)
        session.flush()
        return _row(job)

    try:
        return run_write(engine, work)
    except IntegrityError:
        # Lost a race on the unique index (PostgreSQL; SQLite serialises writers): the winner's job is it.
        assert idempotency_key is not None
        found = run_read(engine, lambda s: _live_with_key(s, idempotency_key))
        if found is None:
            raise
        return _row(found)


def get_job(engine: Engine, job_id: int) -> JobRow | None:
    return run_read(engine, lambda s: (lambda j: _row(j) if j else None)(s.get(Job, job_id)))


def list_jobs(
    engine: Engine, *, kind: str | None = None, states: Iterable[str] | None = None, limit: int = 50
) -> list[JobRow]:
    """Most recent jobs first."""

    def work(session: Session) -> list[JobRow]:
        q = select(Job).order_by(Job.id.desc()).limit(limit)
        if kind is not None:
            q = q.where(Job.kind == kind)
        if states is not None:
            q = q.where(Job.state.in_(list(states)))
        return [_row(j) for j in session.scalars(q)]

    return run_read(engine, work)


def claim_next_job(engine: Engine, worker_id: str, *, kinds: Iterable[str] | None = None) -> JobRow | None:
    """Atomically move the oldest queued job (of ``kinds``, if given) to running for ``worker_id``.

    Safe with several workers: the claim is a conditional UPDATE (``WHERE state = 'queued'``) inside a
    write transaction, and on PostgreSQL the candidate row is locked with ``FOR UPDATE SKIP LOCKED``.
    Returns None when nothing is queued.
    """
    kind_list = list(kinds) if kinds is not None else None

    def work(session: Session) -> JobRow | None:
        for _ in range(20):
            q = select(Job.id).where(Job.state == "queued").order_by(Job.id).limit(1)
            if kind_list is not None:
                q = q.where(Job.kind.in_(kind_list))
            job_id = session.scalar(q.with_for_update(skip_locked=True))
            if job_id is None:
                return None
            now = utcnow()
            claimed = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == "queued")
                .values(state="running", worker_id=worker_id, started_at=now, heartbeat_at=now)
            )
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                job = session.get(Job, job_id)
                assert job is not None
                session.refresh(job)
                return _row(job)
        return None

    return run_write(engine, work)


def heartbeat(engine: Engine, job_id: int) -> bool:
    """Record that the job's worker is alive; returns whether cancellation was requested."""
    return update_progress(engine, job_id)


def update_progress(
    engine: Engine, job_id: int, progress: float | None = None, message: str | None = None
) -> bool:
    """Heartbeat plus optional progress (in [0, 1]) and status message; returns whether cancellation was
    requested, so a worker loop needs one call per step."""

    def work(session: Session) -> bool:
        job = session.get(Job, job_id)
        if job is None:
            raise ValueError(f"no job {job_id}")
        job.heartbeat_at = utcnow()
        if progress is not None:
            job.progress = min(1.0, max(0.0, float(progress)))
        if message is not None:
            job.message = message
        return job.cancel_requested

    return run_write(engine, work)


def append_log(engine: Engine, job_id: int, line: str) -> None:
    """Append one line to the job's log (the oldest text is dropped beyond 200k characters)."""

    def work(session: Session) -> None:
        job = session.get(Job, job_id)
        if job is None:
            raise ValueError(f"no job {job_id}")
        stamped = f"{utcnow():%Y-%m-%d %H:%M:%S} {line.rstrip()}\n"
        job.log = (job.log + stamped)[-MAX_LOG_CHARS:]
        job.heartbeat_at = utcnow()

    run_write(engine, work)


def finish_job(
    engine: Engine,
    job_id: int,
    state: str = "succeeded",
    *,
    error: str | None = None,
    result: Mapping[str, object] | None = None,
) -> JobRow:
    """Close a job as ``succeeded``, ``failed`` (with ``error``) or ``cancelled``."""
    if state not in FINAL_STATES:
        raise ValueError(f"state must be one of {FINAL_STATES}, got {state!r}")

    def work(session: Session) -> JobRow:
        job = session.get(Job, job_id)
        if job is None:
            raise ValueError(f"no job {job_id}")
        if job.state in FINAL_STATES:
            raise ValueError(f"job {job_id} is already {job.state}")
        job.state = state
        job.error = error
        job.result = dict(result or {})
        job.finished_at = utcnow()
        if state == "succeeded":
            job.progress = 1.0
        return _row(job)

    return run_write(engine, work)


def request_cancel(engine: Engine, job_id: int) -> JobRow:
    """Cancel a queued job now; ask a running one to stop (its worker finishes it as ``cancelled``)."""

    def work(session: Session) -> JobRow:
        job = session.get(Job, job_id)
        if job is None:
            raise ValueError(f"no job {job_id}")
        if job.state == "queued":
            job.state = "cancelled"
            job.finished_at = utcnow()
        elif job.state == "running":
            job.cancel_requested = True
        return _row(job)

    return run_write(engine, work)


def is_cancel_requested(engine: Engine, job_id: int) -> bool:
    return bool(run_read(engine, lambda s: s.scalar(select(Job.cancel_requested).where(Job.id == job_id))))


def mark_stale_jobs_failed(engine: Engine, timeout_s: float) -> list[int]:
    """Fail running jobs whose last heartbeat is older than ``timeout_s`` seconds (their worker died);
    returns their ids."""

    def work(session: Session) -> list[int]:
        cutoff = utcnow() - timedelta(seconds=timeout_s)
        stale = session.scalars(
            select(Job).where(Job.state == "running", Job.heartbeat_at < cutoff).order_by(Job.id)
        ).all()
        now = utcnow()
        for job in stale:
            job.state = "failed"
            job.error = (
                f"worker {job.worker_id} stopped sending heartbeats (none for {timeout_s:g} s); marked failed"
            )
            job.finished_at = now
        return [job.id for job in stale]

    return run_write(engine, work)
