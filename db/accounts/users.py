"""User accounts and their passwords: names, roles, argon2id hashes, one-time passwords."""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import ROLES, User, UserSession, utcnow
from db.rows import UserRow
from fractal_core.errors import InputError

MIN_PASSWORD_CHARS = 8
ONE_TIME_PASSWORD_TTL = timedelta(hours=24)
"""How long an unused one-time password works (``FRACTAL_ONE_TIME_PASSWORD_HOURS`` overrides it)."""
ONE_TIME_TTL_ENV = "FRACTAL_ONE_TIME_PASSWORD_HOURS"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_hasher = PasswordHasher()
# Verified against when the name is unknown, so that a wrong name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


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


def user_row(u: User) -> UserRow:
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
        return user_row(user)

    return run_write(engine, work)


def list_users(engine: Engine) -> list[UserRow]:
    """Every user by name."""
    return run_read(engine, lambda s: [user_row(u) for u in s.scalars(select(User).order_by(User.name))])


def get_user(engine: Engine, name: str) -> UserRow | None:
    return run_read(
        engine, lambda s: next((user_row(u) for u in s.scalars(select(User).where(User.name == name))), None)
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
        return user_row(user)

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
        return user_row(user)

    return run_write(engine, work)


def set_password(engine: Engine, name: str, password: str) -> UserRow:
    """Replace a user's password with one they chose (clears the one-time flag and its expiry).

    InputError if it breaks the password rules, or if the user holds a one-time password and this is the
    same one: a password printed to a terminal or a log must not stay valid."""
    _check_password(password)
    password_hash = _hasher.hash(password)

    def work(session: Session) -> UserRow:
        user = _require_user(session, name)
        if user.must_change_password and verify_password(user.password_hash, password):
            raise InputError("choose a password different from the one-time password", field="password")
        user.password_hash = password_hash
        user.must_change_password = False
        user.password_expires_at = None
        return user_row(user)

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


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
