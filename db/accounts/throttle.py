"""Sign-in throttling: failed sign-ins counted per (user name, client) and the waits they impose."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import SignInFailure

FREE_FAILURES = 3
"""Wrong passwords one (user name, client) pair may make before it has to wait: 2, 4, 8 ... s."""
CLIENT_FREE_FAILURES = 10
"""Wrong passwords one client may make over every user name before it has to wait (password spraying)."""
AUTOMATED_CLIENTS = 5
"""This many clients failing for one user name within :data:`AUTOMATED_WINDOW` is an automated attack."""
AUTOMATED_WINDOW = timedelta(minutes=1)
GUARD_WAIT_S = 30.0
"""Under an automated attack on a name, each client that failed for it waits at least this long per try."""
FORGET_FAILURES_AFTER = timedelta(hours=24)
"""Failure counters that have not grown for this long are forgotten."""
MAX_BACKOFF_S = 300.0
LOCAL_CLIENT = "local"
"""The client key of a sign-in without an address (this machine, or a proxy whose header is not trusted)."""


def backoff_seconds(failures: int, free: int = FREE_FAILURES) -> float:
    """Seconds to wait after ``failures`` failures: none for the first ``free``, then 2, 4, 8, ... s (capped)."""
    if failures < free:
        return 0.0
    return min(MAX_BACKOFF_S, 2.0 ** min(failures - free + 1, 32))


def failure_keys(name: str, client: str | None) -> tuple[str, str]:
    """The (user, client) a failed sign-in is counted under: the name as typed, case-folded, and the client's
    address or :data:`LOCAL_CLIENT` when there is none (this machine, or a proxy without a trusted header)."""
    client = (client or "").strip() or LOCAL_CLIENT
    return str(name or "").strip().lower()[:160], client[:160]


def _since(when: datetime, seconds: float, now: datetime) -> float:
    """Seconds left of a wait of ``seconds`` that started at ``when``."""
    return (when + timedelta(seconds=seconds) - now).total_seconds()


def wait_left(session: Session, user_key: str, client_key: str, now: datetime) -> float:
    """Seconds this (user, client) must still wait before its password is checked (0: check it now).

    Three limits, each from the counters of the last :data:`FORGET_FAILURES_AFTER`:

    - the pair: :data:`FREE_FAILURES` free, then 2, 4, 8 ... s after the last failure;
    - the client over every name: :data:`CLIENT_FREE_FAILURES` free, then the same growth;
    - the user under an automated attack (:data:`AUTOMATED_CLIENTS` or more clients failed for this name
      within :data:`AUTOMATED_WINDOW`): every client that has failed for the name waits at least
      :data:`GUARD_WAIT_S` after its last failure. A client with no failure for the name is never held back
      by other clients' failures, so the right password from the user's own machine still works.
    """
    recent = now - FORGET_FAILURES_AFTER
    waits = [0.0]
    pair = session.get(SignInFailure, (user_key, client_key))
    if pair is not None and pair.last_failure_at >= recent:
        waits.append(_since(pair.last_failure_at, backoff_seconds(pair.failures), now))
        attacked_by = session.scalar(
            select(func.count())
            .select_from(SignInFailure)
            .where(
                SignInFailure.user_key == user_key,
                SignInFailure.last_failure_at >= now - AUTOMATED_WINDOW,
            )
        )
        if int(attacked_by or 0) >= AUTOMATED_CLIENTS:
            waits.append(_since(pair.last_failure_at, GUARD_WAIT_S, now))
    total, last = session.execute(
        select(func.sum(SignInFailure.failures), func.max(SignInFailure.last_failure_at)).where(
            SignInFailure.client_key == client_key, SignInFailure.last_failure_at >= recent
        )
    ).one()
    if last is not None:
        waits.append(_since(last, backoff_seconds(int(total or 0), CLIENT_FREE_FAILURES), now))
    return max(waits)


def record_failure(session: Session, user_key: str, client_key: str, now: datetime) -> None:
    # Counters nobody added to for a day are of no use: drop them while writing anyway (this also bounds
    # what a spray of made-up names can leave behind).
    session.execute(delete(SignInFailure).where(SignInFailure.last_failure_at < now - FORGET_FAILURES_AFTER))
    row = session.get(SignInFailure, (user_key, client_key))
    if row is None:
        try:
            with session.begin_nested():
                session.add(
                    SignInFailure(user_key=user_key, client_key=client_key, failures=1, last_failure_at=now)
                )
            return
        except IntegrityError:  # the same pair failed at the same moment elsewhere: count on its row
            row = session.get(SignInFailure, (user_key, client_key), populate_existing=True)
            assert row is not None
    row.failures += 1
    row.last_failure_at = now
