"""Sign-in: checking a user name and password, behind the throttle of :mod:`db.accounts.throttle`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, delete, select

from db.accounts.throttle import failure_keys, record_failure, wait_left
from db.accounts.users import user_row, verify_password
from db.engine import run_read, run_write
from db.models import SignInFailure, User, utcnow
from db.rows import UserRow

SIGN_IN_FAILED = "Sign-in failed: unknown user or wrong password."
"""The one message for every failed sign-in (a disabled account reads the same)."""
ONE_TIME_EXPIRED = (
    "This one-time password has expired. Ask an admin for a new one (`fractal users passwd NAME --one-time`)."
)
"""Shown only to someone who typed the right one-time password after it expired."""


class SignInError(Exception):
    """A sign-in was refused; ``retry_after`` > 0 when it was refused because of the backoff."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _one_time_expired(user: User, now: datetime) -> bool:
    return bool(user.must_change_password) and (
        user.password_expires_at is not None and user.password_expires_at <= now
    )


def authenticate(
    engine: Engine, name: str, password: str, *, client: str | None = None, now: datetime | None = None
) -> UserRow:
    """The user whose name and password these are; :class:`SignInError` otherwise.

    ``client`` is the browser's address (None: :data:`db.accounts.throttle.LOCAL_CLIENT`); ``now`` is for
    tests. While the (user, client) pair, the client, or (under an automated attack) every failed client of
    the user is in its wait (:func:`db.accounts.throttle.wait_left`), attempts are refused without checking
    the password (``retry_after`` says how long). A success clears the pair's counter only; a correct one-time
    password past its expiry is refused with :data:`ONE_TIME_EXPIRED`.
    """
    now = now or utcnow()
    name = str(name or "").strip()
    user_key, client_key = failure_keys(name, client)
    wait = run_read(engine, lambda s: wait_left(s, user_key, client_key, now))
    if wait > 0:
        raise SignInError(f"Too many failed sign-ins: try again in {wait:.0f} s.", retry_after=wait)
    user = run_read(engine, lambda s: s.scalars(select(User).where(User.name == name)).first())
    ok = verify_password(user.password_hash if user else None, str(password or ""))
    if ok and user is not None and not user.disabled:
        if _one_time_expired(user, now):
            raise SignInError(ONE_TIME_EXPIRED)
        run_write(
            engine,
            lambda s: s.execute(
                delete(SignInFailure).where(
                    SignInFailure.user_key == user_key, SignInFailure.client_key == client_key
                )
            ),
        )
        return user_row(user)
    run_write(engine, lambda s: record_failure(s, user_key, client_key, now))
    raise SignInError(SIGN_IN_FAILED)
