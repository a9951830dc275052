"""criteria groups: datasets.criteria_group and datasets.criterion (both NULL for an ordinary dataset). A file
whose rows carry several criteria is stored as one dataset per criterion; the datasets of one group hold the same
responses (same external ids, same sentences), each with its criterion's response label and sentence labels.

Adding two nullable columns is an in-place ALTER on both engines (no table rebuild, triggers untouched).

Frozen: literal values only, no imports from the live code.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("criteria_group", sa.String(length=64), nullable=True))
    op.add_column("datasets", sa.Column("criterion", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_datasets_criteria_group_criterion", "datasets", ["criteria_group", "criterion"], unique=True
    )


def downgrade() -> None:
    conn = op.get_bind()
    grouped = conn.execute(sa.text("SELECT count(*) FROM datasets WHERE criteria_group IS NOT NULL")).scalar()
    if grouped:
        raise RuntimeError(
            f"{grouped} dataset(s) belong to a group of criteria; the older schema cannot tell them apart from "
            "ordinary datasets, so this store cannot be downgraded"
        )
    op.drop_index("ix_datasets_criteria_group_criterion", table_name="datasets")
    op.drop_column("datasets", "criterion")
    op.drop_column("datasets", "criteria_group")
