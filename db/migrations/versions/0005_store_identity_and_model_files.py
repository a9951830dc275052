"""the store's identity and model files in the store: ``store_info`` holds a ``store_id`` (a new UUID), and
``model_files`` each trained model version's files, so that artifacts are keyed by store and version and every
worker of a shared store reads the same model. Versions trained before keep their local ``artifact_path``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    info = op.create_table(
        "store_info",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_store_info")),
    )
    op.bulk_insert(info, [{"key": "store_id", "value": str(uuid.uuid4())}])
    op.create_table(
        "model_files",
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_files_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_version_id", "name", name=op.f("pk_model_files")),
    )


def downgrade() -> None:
    op.drop_table("model_files")
    op.drop_table("store_info")
