"""Accounts: users and their roles, signed-in sessions, and wrong-password counts for the sign-in slowdown."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, utcnow

ROLES: tuple[str, ...] = ("annotator", "reviewer", "admin")
"""Roles in increasing order of rights: each role may do everything the roles before it may."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32), default="annotator")  # one of ROLES
    # argon2id hash (never the password); NULL means the account cannot sign in.
    password_hash: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Set for a one-time password (the first `fractal serve`, `fractal users passwd --one-time`): the first
    # sign-in must replace it, and it stops working at ``password_expires_at`` if nobody used it by then.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    password_expires_at: Mapped[datetime | None] = mapped_column()


class UserSession(Base):
    """A signed-in browser: the random token lives only in the browser; the store keeps its SHA-256."""

    __tablename__ = "user_sessions"
    __table_args__ = (Index("ix_user_sessions_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()  # sign-out


class SignInFailure(Base):
    """Wrong passwords for one user name from one client (an address, or "local"), since the last success.

    The sign-in slowdown reads it three ways: per (user, client), per client over every name, and per user
    over the clients that failed in the last minute (see :mod:`db.accounts`)."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_client_key", "client_key"),)

    user_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    client_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(default=utcnow)
