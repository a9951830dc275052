"""Sign-in sessions: random tokens held by the browser, stored as their SHA-256 with an expiry."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from db.accounts.users import user_row
from db.engine import run_read, run_write
from db.models import User, UserSession, utcnow
from db.rows import UserRow

SESSION_TTL = timedelta(hours=12)
"""How long a sign-in lasts; after that the sign-in page comes back."""


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
        return user_row(found) if found is not None else None

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
