"""segment_edits: a person's fixes of a response's split (merge two sentences, split one, undo), with the
sentences before and after and the labels each fix ended, so that an undo gives both back; sentences.retired_by:
the fix that replaced a sentence (its row, label history and scores stay, outside the response).

Frozen: literal values only, no imports from the live code.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "segment_edits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("response_id", sa.Integer(), nullable=False),
        sa.Column("editor", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=True),
        sa.Column("spans_before", sa.JSON(), nullable=False),
        sa.Column("spans_after", sa.JSON(), nullable=False),
        sa.Column("ended", sa.JSON(), nullable=False),
        sa.Column("undoes_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("kind IN ('merge', 'split', 'undo')", name=op.f("ck_segment_edits_kind")),
        sa.CheckConstraint(
            'position >= 0 AND ("offset" IS NULL OR "offset" > 0)', name=op.f("ck_segment_edits_position")
        ),
        sa.ForeignKeyConstraint(
            ["response_id"],
            ["responses.id"],
            name=op.f("fk_segment_edits_response_id_responses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["undoes_id"],
            ["segment_edits.id"],
            name=op.f("fk_segment_edits_undoes_id_segment_edits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_edits")),
    )
    op.create_index("ix_segment_edits_response_id", "segment_edits", ["response_id", "id"], unique=False)
    op.add_column("sentences", sa.Column("retired_by", sa.Integer(), nullable=True))


def downgrade() -> None:
    conn = op.get_bind()
    edited = conn.execute(sa.text("SELECT count(*) FROM segment_edits")).scalar()
    if edited:
        raise RuntimeError(
            f"{edited} split fix(es) are recorded; the older schema cannot tell replaced sentences from current "
            "ones, so this store cannot be downgraded"
        )
    # A plain DROP COLUMN (SQLite 3.35+): a table rebuild would trip over the triggers that name sentences.
    conn.execute(sa.text("ALTER TABLE sentences DROP COLUMN retired_by"))
    op.drop_index("ix_segment_edits_response_id", table_name="segment_edits")
    op.drop_table("segment_edits")
