"""Accounts, roles and sign-in sessions: who may do what in FRACTAL Studio.

- Users have a name, a role (``annotator`` < ``reviewer`` < ``admin``, :data:`db.models.ROLES`) and an
  argon2id password hash (``argon2-cffi``); the password itself is never stored or logged.
- A one-time password (the first admin's, or :func:`reset_password`) works until
  ``FRACTAL_ONE_TIME_PASSWORD_HOURS`` (default 24 h, :func:`one_time_password_ttl`) have passed unused; the
  first sign-in with it must choose a different password that passes the same rules (:func:`set_password`).
- :func:`authenticate` checks a name and password. Every failure gives the same :class:`SignInError` message
  (no hint whether the name or the password was wrong; an unknown name costs a hash check too). Wrong
  passwords slow down the (user name, client) pair that made them, a client trying many names, and, only
  under an automated attack on one name from many clients, each of those clients (:func:`_wait_left`); a
  user's own machine is never held back by failures made elsewhere.
- A session is a random token (``secrets.token_urlsafe``) that only the browser holds; the store keeps its
  SHA-256 with an expiry. :func:`session_user` resolves a token to its user on every request, so disabling a
  user or changing a role takes effect at once, and :func:`end_session` signs out.
- :func:`require_role` is the one authorisation check; every action function of the app calls it with the
  signed-in user before changing anything.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import ROLES, SignInFailure, User, UserSession, utcnow
from db.rows import UserRow
from fractal_core.errors import InputError

SESSION_TTL = timedelta(hours=12)
"""How long a sign-in lasts; after that the sign-in page comes back."""
MIN_PASSWORD_CHARS = 8
ONE_TIME_PASSWORD_TTL = timedelta(hours=24)
"""How long an unused one-time password works (``FRACTAL_ONE_TIME_PASSWORD_HOURS`` overrides it)."""
ONE_TIME_TTL_ENV = "FRACTAL_ONE_TIME_PASSWORD_HOURS"
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
SIGN_IN_FAILED = "Sign-in failed: unknown user or wrong password."
"""The one message for every failed sign-in (a disabled account reads the same)."""
ONE_TIME_EXPIRED = (
    "This one-time password has expired. Ask an admin for a new one (`fractal users passwd NAME --one-time`)."
)
"""Shown only to someone who typed the right one-time password after it expired."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_hasher = PasswordHasher()
# Verified against when the name is unknown, so that a wrong name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class PermissionDenied(Exception):
    """The acting user's role does not allow the action (or nobody is signed in). Nothing was changed."""


class SignInError(Exception):
    """A sign-in was refused; ``retry_after`` > 0 when it was refused because of the backoff."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# ------------------------------------------------------------------------------------------------ roles


def role_rank(role: str) -> int:
    """0 for annotator, 1 reviewer, 2 admin; ValueError for anything else."""
    try:
        return ROLES.index(role)
    except ValueError:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}") from None


def has_role(user: UserRow | None, role: str) -> bool:
    """Whether ``user`` (None: nobody signed in) is active and has ``role`` or a higher one."""
    return user is not None and not user.disabled and role_rank(user.role) >= role_rank(role)


def require_role(user: UserRow | None, role: str, action: str = "this") -> UserRow:
    """Return ``user`` if it may act as ``role``; else raise :class:`PermissionDenied` naming what is needed."""
    if user is None:
        raise PermissionDenied(f"sign in to do {action}")
    if not has_role(user, role):
        raise PermissionDenied(f"{action} needs the {role} role; {user.name} is {user.role}")
    return user


# ------------------------------------------------------------------------------------------------ users


def validate_user_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    return name


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise InputError(f"the password needs at least {MIN_PASSWORD_CHARS} characters", field="password")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}; roles: {', '.join(ROLES)}", field="role")


def _row(u: User) -> UserRow:
    return UserRow(
        id=u.id,
        name=u.name,
        role=u.role,
        disabled=bool(u.disabled),
        must_change_password=bool(u.must_change_password),
        created_at=u.created_at,
    )


def one_time_password_ttl() -> timedelta:
    """How long an unused one-time password works: ``FRACTAL_ONE_TIME_PASSWORD_HOURS`` (a positive number of
    hours), else :data:`ONE_TIME_PASSWORD_TTL`; InputError for anything else."""
    raw = os.environ.get(ONE_TIME_TTL_ENV, "").strip()
    if not raw:
        return ONE_TIME_PASSWORD_TTL
    try:
        hours = float(raw)
    except ValueError:
        hours = float("nan")
    if not 0 < hours <= 24 * 365:  # also refuses nan and inf
        raise InputError(
            f"{ONE_TIME_TTL_ENV}={raw!r}: give a number of hours between 0 and 8760", field=ONE_TIME_TTL_ENV
        )
    return timedelta(hours=hours)


def add_user(
    engine: Engine,
    name: str,
    role: str,
    password: str,
    *,
    must_change_password: bool = False,
    one_time_ttl: timedelta | None = None,
    now: datetime | None = None,
) -> UserRow:
    """Create a user; InputError if the name is invalid or taken, the role unknown or the password short.

    With ``must_change_password`` the password is a one-time password: it stops working ``one_time_ttl``
    (default :func:`one_time_password_ttl`) after ``now`` unless it was used and replaced before."""
    validate_user_name(name)
    _check_role(role)
    _check_password(password)
    password_hash = _hasher.hash(password)
    expires = (now or utcnow()) + (one_time_ttl or one_time_password_ttl()) if must_change_password else None

    def work(session: Session) -> UserRow:
        if session.scalar(select(User.id).where(func.lower(User.name) == name.lower())) is not None:
            raise InputError(f"user {name!r} already exists", field="name")
        user = User(
            name=name,
            role=role,
            password_hash=password_hash,
            must_change_password=must_change_password,
            password_expires_at=expires,
        )
        session.add(user)
        session.flush()
        return _row(user)

    return run_write(engine, work)


def list_users(engine: Engine) -> list[UserRow]:
    """Every user by name."""
    return run_read(engine, lambda s: [_row(u) for u in s.scalars(select(User).order_by(User.name))])


def get_user(engine: Engine, name: str) -> UserRow | None:
    return run_read(
        engine, lambda s: next((_row(u) for u in s.scalars(select(User).where(User.name == name))), None)
    )


def count_users(engine: Engine) -> int:
    return run_read(engine, lambda s: int(s.scalar(select(func.count()).select_from(User)) or 0))


def _require_user(session: Session, name: str) -> User:
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is None:
        raise InputError(f"no user {name!r}", field="name")
    return user


def _keep_an_admin(session: Session, user: User) -> None:
    """Refuse to remove the last active admin (nobody could manage users any more)."""
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == "admin", User.disabled.is_(False), User.id != user.id)
    )
    if user.role == "admin" and not user.disabled and not others:
        raise InputError(f"{user.name} is the last active admin; make another admin first", field="name")


def set_role(engine: Engine, name: str, role: str) -> UserRow:
    _check_role(role)

    def work(session: Session) -> UserRow:
        user = _require_user(session, name)
        if role != "admin":
            _keep_an_admin(session, user)
        user.role = role
        return _row(user)

    return run_write(engine, work)


def set_disabled(engine: Engine, name: str, disabled: bool = True) -> UserRow:
    """Disable (or re-enable) a user; disabling also ends every session of theirs."""

    def work(session: Session) -> UserRow:
        user = _require_user(session, name)
        if disabled:
            _keep_an_admin(session, user)
            session.execute(
                update(UserSession)
                .where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
                .values(ended_at=utcnow())
            )
        user.disabled = disabled
        return _row(user)

    return run_write(engine, work)


def set_password(engine: Engine, name: str, password: str) -> UserRow:
    """Replace a user's password with one they chose (clears the one-time flag and its expiry).

    InputError if it breaks the password rules, or if the user holds a one-time password and this is the
    same one: a password printed to a terminal or a log must not stay valid."""
    _check_password(password)
    password_hash = _hasher.hash(password)

    def work(session: Session) -> UserRow:
        user = _require_user(session, name)
        if user.must_change_password and _verify(user.password_hash, password):
            raise InputError("choose a password different from the one-time password", field="password")
        user.password_hash = password_hash
        user.must_change_password = False
        user.password_expires_at = None
        return _row(user)

    return run_write(engine, work)


def reset_password(
    engine: Engine, name: str, *, one_time_ttl: timedelta | None = None, now: datetime | None = None
) -> str:
    """Give a user a new one-time password and return it (to hand over once; only its hash is kept).

    Their sessions end; the next sign-in must choose a new password, and the one-time password stops working
    ``one_time_ttl`` (default :func:`one_time_password_ttl`) after ``now`` if unused."""
    password = new_one_time_password()
    password_hash = _hasher.hash(password)
    expires = (now or utcnow()) + (one_time_ttl or one_time_password_ttl())

    def work(session: Session) -> None:
        user = _require_user(session, name)
        user.password_hash = password_hash
        user.must_change_password = True
        user.password_expires_at = expires
        session.execute(
            update(UserSession)
            .where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
            .values(ended_at=utcnow())
        )

    run_write(engine, work)
    return password


def new_one_time_password() -> str:
    """A random password for the first admin or a reset (printed once; the first sign-in must replace it)."""
    return secrets.token_urlsafe(12)


# ------------------------------------------------------------------------------------------------ sign-in


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


def _wait_left(session: Session, user_key: str, client_key: str, now: datetime) -> float:
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


def _record_failure(session: Session, user_key: str, client_key: str, now: datetime) -> None:
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


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _one_time_expired(user: User, now: datetime) -> bool:
    return bool(user.must_change_password) and (
        user.password_expires_at is not None and user.password_expires_at <= now
    )


def authenticate(
    engine: Engine, name: str, password: str, *, client: str | None = None, now: datetime | None = None
) -> UserRow:
    """The user whose name and password these are; :class:`SignInError` otherwise.

    ``client`` is the browser's address (None: :data:`LOCAL_CLIENT`); ``now`` is for tests. While the
    (user, client) pair, the client, or (under an automated attack) every failed client of the user is in its
    wait (:func:`_wait_left`), attempts are refused without checking the password (``retry_after`` says how
    long). A success clears the pair's counter only; a correct one-time password past its expiry is refused
    with :data:`ONE_TIME_EXPIRED`.
    """
    now = now or utcnow()
    name = str(name or "").strip()
    user_key, client_key = failure_keys(name, client)
    wait = run_read(engine, lambda s: _wait_left(s, user_key, client_key, now))
    if wait > 0:
        raise SignInError(f"Too many failed sign-ins: try again in {wait:.0f} s.", retry_after=wait)
    user = run_read(engine, lambda s: s.scalars(select(User).where(User.name == name)).first())
    ok = _verify(user.password_hash if user else None, str(password or ""))
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
        return _row(user)
    run_write(engine, lambda s: _record_failure(s, user_key, client_key, now))
    raise SignInError(SIGN_IN_FAILED)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(engine: Engine, user: UserRow, *, ttl: timedelta = SESSION_TTL) -> str:
    """A new session for a signed-in user; returns the token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()

    def work(session: Session) -> None:
        # Expired or ended sessions are of no use to anyone: drop them while we are writing anyway.
        session.execute(
            delete(UserSession).where((UserSession.expires_at < now) | UserSession.ended_at.is_not(None))
        )
        session.add(
            UserSession(token_hash=_token_hash(token), user_id=user.id, created_at=now, expires_at=now + ttl)
        )

    run_write(engine, work)
    return token


def session_user(engine: Engine, token: str | None) -> UserRow | None:
    """The user of a live session (not expired, not signed out, user not disabled); None otherwise."""
    if not token:
        return None
    now = utcnow()

    def work(session: Session) -> UserRow | None:
        found = session.execute(
            select(User)
            .join(UserSession, UserSession.user_id == User.id)
            .where(
                UserSession.token_hash == _token_hash(token),
                UserSession.ended_at.is_(None),
                UserSession.expires_at > now,
                User.disabled.is_(False),
            )
        ).scalar_one_or_none()
        return _row(found) if found is not None else None

    return run_read(engine, work)


def end_session(engine: Engine, token: str | None) -> None:
    """Sign out: the token no longer resolves to anyone."""
    if not token:
        return
    run_write(
        engine,
        lambda s: s.execute(
            update(UserSession).where(UserSession.token_hash == _token_hash(token)).values(ended_at=utcnow())
        ),
    )
