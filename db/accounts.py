"""Accounts, roles and sign-in sessions: who may do what in FRACTAL Studio.

- Users have a name, a role (``annotator`` < ``reviewer`` < ``admin``, :data:`db.models.ROLES`) and an
  argon2id password hash (``argon2-cffi``); the password itself is never stored or logged.
- :func:`authenticate` checks a name and password. Every failure gives the same :class:`SignInError` message
  (no hint whether the name or the password was wrong; an unknown name costs a hash check too), and repeated
  failures are slowed down per user name and per client address (:func:`backoff_seconds`).
- A session is a random token (``secrets.token_urlsafe``) that only the browser holds; the store keeps its
  SHA-256 with an expiry. :func:`session_user` resolves a token to its user on every request, so disabling a
  user or changing a role takes effect at once, and :func:`end_session` signs out.
- :func:`require_role` is the one authorisation check; every action function of the app calls it with the
  signed-in user before changing anything.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import ROLES, LoginFailure, User, UserSession, utcnow
from db.rows import UserRow
from fractal_core.errors import InputError

SESSION_TTL = timedelta(hours=12)
"""How long a sign-in lasts; after that the sign-in page comes back."""
MIN_PASSWORD_CHARS = 8
FREE_FAILURES = 3
"""Wrong passwords allowed before the backoff starts (per user name and per client address)."""
MAX_BACKOFF_S = 300.0
SIGN_IN_FAILED = "Sign-in failed: unknown user or wrong password."
"""The one message for every failed sign-in (a disabled account reads the same)."""

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


def add_user(
    engine: Engine, name: str, role: str, password: str, *, must_change_password: bool = False
) -> UserRow:
    """Create a user; InputError if the name is invalid or taken, the role unknown or the password short."""
    validate_user_name(name)
    _check_role(role)
    _check_password(password)
    password_hash = _hasher.hash(password)

    def work(session: Session) -> UserRow:
        if session.scalar(select(User.id).where(func.lower(User.name) == name.lower())) is not None:
            raise InputError(f"user {name!r} already exists", field="name")
        user = User(
            name=name, role=role, password_hash=password_hash, must_change_password=must_change_password
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
    """Replace a user's password (clears the one-time flag)."""
    _check_password(password)
    password_hash = _hasher.hash(password)

    def work(session: Session) -> UserRow:
        user = _require_user(session, name)
        user.password_hash = password_hash
        user.must_change_password = False
        return _row(user)

    return run_write(engine, work)


def new_one_time_password() -> str:
    """A random password for the first admin (printed once; the first sign-in must replace it)."""
    return secrets.token_urlsafe(12)


# ------------------------------------------------------------------------------------------------ sign-in


def backoff_seconds(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures: none for the first few, then 2, 4, 8, ... s."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(MAX_BACKOFF_S, 2.0 ** (failures - FREE_FAILURES + 1))


def _failure_keys(name: str, client: str | None) -> list[str]:
    keys = ["user:" + name.strip().lower()[:150]]
    if client:
        keys.append("client:" + client[:150])
    return keys


def _wait_left(session: Session, keys: list[str], now: datetime) -> float:
    wait = 0.0
    for row in session.scalars(select(LoginFailure).where(LoginFailure.key.in_(keys))):
        until = row.last_failure_at + timedelta(seconds=backoff_seconds(row.failures))
        wait = max(wait, (until - now).total_seconds())
    return wait


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def authenticate(engine: Engine, name: str, password: str, *, client: str | None = None) -> UserRow:
    """The user whose name and password these are; :class:`SignInError` otherwise.

    While a user name or a client address is in its backoff, attempts are refused without checking the
    password (``retry_after`` says how long). A success clears the user's counter.
    """
    name = str(name or "").strip()
    keys = _failure_keys(name, client)
    now = utcnow()
    wait = run_read(engine, lambda s: _wait_left(s, keys, now))
    if wait > 0:
        raise SignInError(f"Too many failed sign-ins: try again in {wait:.0f} s.", retry_after=wait)
    user = run_read(engine, lambda s: s.scalars(select(User).where(User.name == name)).first())
    ok = _verify(user.password_hash if user else None, str(password or ""))
    if ok and user is not None and not user.disabled:
        run_write(engine, lambda s: s.execute(delete(LoginFailure).where(LoginFailure.key == keys[0])))
        return _row(user)

    def record(session: Session) -> None:
        for key in keys:
            row = session.get(LoginFailure, key)
            if row is None:
                session.add(LoginFailure(key=key, failures=1, last_failure_at=utcnow()))
            else:
                row.failures += 1
                row.last_failure_at = utcnow()

    run_write(engine, record)
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
