"""staged ingest: an ingested file's state (staging / published), the staging process and its heartbeat.

A large file is written chunk by chunk into a hidden dataset of its own and published in one short
transaction (see :mod:`db.ingest`); rows already in the store came from finished ingests, so they are
published.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingested_files") as batch:
        batch.add_column(sa.Column("state", sa.String(length=16), server_default="published", nullable=False))
        batch.add_column(sa.Column("owner", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint(op.f("ck_ingested_files_state"), "state IN ('staging', 'published')")


def downgrade() -> None:
    conn = op.get_bind()
    staged = conn.execute(sa.text("SELECT count(*) FROM ingested_files WHERE state = 'staging'")).scalar()
    if staged:
        raise RuntimeError(
            f"{staged} ingest(s) are being staged; let them finish (or remove them by starting a worker) "
            "before downgrading"
        )
    with op.batch_alter_table("ingested_files") as batch:
        batch.drop_constraint(op.f("ck_ingested_files_state"), type_="check")
        batch.drop_column("heartbeat_at")
        batch.drop_column("owner")
        batch.drop_column("state")
