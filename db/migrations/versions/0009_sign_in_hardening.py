"""sign-in hardening: one-time passwords expire, and wrong passwords are counted per (user name, client).

``users.password_expires_at`` is when an unused one-time password stops working (NULL for a chosen password).
``sign_in_failures`` replaces ``login_failures``: one row per (user name, client) instead of one counter per
name and one per address, so that failures for a user from elsewhere no longer slow down that user's own
client. The old counters are transient (they only slow down sign-ins), so they are dropped, not carried over.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_table("login_failures")
    op.create_table(
        "sign_in_failures",
        sa.Column("user_key", sa.String(length=160), nullable=False),
        sa.Column("client_key", sa.String(length=160), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_key", "client_key", name=op.f("pk_sign_in_failures")),
    )
    op.create_index("ix_sign_in_failures_client_key", "sign_in_failures", ["client_key"])


def downgrade() -> None:
    op.drop_index("ix_sign_in_failures_client_key", "sign_in_failures")
    op.drop_table("sign_in_failures")
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_failures")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_expires_at")
