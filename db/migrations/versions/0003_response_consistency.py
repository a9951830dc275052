"""response_scores.consistent: whether the gold sentence labels at scoring time agree with the response label
(1 / 0, NULL when the response had none), computed with the other per-response figures by fractal_core.mil.semantics.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("response_scores", sa.Column("consistent", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("response_scores") as batch:
        batch.drop_column("consistent")
