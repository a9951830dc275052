"""preference_pairs: two responses of a dataset, which one is preferred, its strength and source;
responses.response_label may be NULL: a response that came in a preference pair without a label of its own.

The CHECK constraints on responses are unchanged: every label that is present stays bounded exactly as before;
NULL is "no response label" (a CHECK passes on NULL). Dropping NOT NULL: PostgreSQL alters the column; SQLite
edits the table's declaration in place (the documented procedure for removing a NOT NULL constraint, which
leaves the stored rows, triggers and indexes untouched; a batch rebuild would drop the triggers on responses).

Frozen: literal values only, no imports from the live code.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOT_NULL = "response_label FLOAT NOT NULL"
_NULLABLE = "response_label FLOAT"


def _sqlite_declaration(conn: sa.Connection, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` once in the declaration of ``responses`` (nothing stored changes)."""
    sql = conn.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'responses'")
    ).scalar()
    if sql is None or sql.count(old) != 1:
        raise RuntimeError(
            f"responses is not declared with {old!r} exactly once; this store cannot be migrated"
        )
    version = int(conn.execute(sa.text("PRAGMA schema_version")).scalar() or 0)
    conn.execute(sa.text("PRAGMA writable_schema = ON"))
    conn.execute(
        sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'responses'"),
        {"sql": sql.replace(old, new)},
    )
    conn.execute(sa.text(f"PRAGMA schema_version = {version + 1}"))
    conn.execute(sa.text("PRAGMA writable_schema = OFF"))
    problems = conn.execute(sa.text("PRAGMA integrity_check")).scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"integrity check failed after the change: {problems[:3]}")


def upgrade() -> None:
    op.create_table(
        "preference_pairs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=True),
        sa.Column("external_id", sa.String(length=512), nullable=False),
        sa.Column("chosen_id", sa.Integer(), nullable=False),
        sa.Column("rejected_id", sa.Integer(), nullable=False),
        sa.Column("strength", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("annotator", sa.String(length=128), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("strength >= 0 AND strength <= 1", name=op.f("ck_preference_pairs_strength")),
        sa.CheckConstraint("chosen_id <> rejected_id", name=op.f("ck_preference_pairs_two_responses")),
        sa.CheckConstraint("source IN ('imported')", name=op.f("ck_preference_pairs_source")),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_preference_pairs_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["ingested_files.id"],
            name=op.f("fk_preference_pairs_file_id_ingested_files"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["chosen_id"],
            ["responses.id"],
            name=op.f("fk_preference_pairs_chosen_id_responses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rejected_id"],
            ["responses.id"],
            name=op.f("fk_preference_pairs_rejected_id_responses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preference_pairs")),
        sa.UniqueConstraint(
            "dataset_id", "external_id", name=op.f("uq_preference_pairs_dataset_id_external_id")
        ),
    )
    op.create_index("ix_preference_pairs_chosen_id", "preference_pairs", ["chosen_id"], unique=False)
    op.create_index("ix_preference_pairs_rejected_id", "preference_pairs", ["rejected_id"], unique=False)
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        _sqlite_declaration(conn, _NOT_NULL, _NULLABLE)
    else:
        op.alter_column("responses", "response_label", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    conn = op.get_bind()
    unlabelled = conn.execute(sa.text("SELECT count(*) FROM responses WHERE response_label IS NULL")).scalar()
    if unlabelled:
        raise RuntimeError(
            f"{unlabelled} response(s) have no response label (they came in preference pairs); the older schema "
            "needs one on every response, so this store cannot be downgraded"
        )
    if conn.dialect.name == "sqlite":
        _sqlite_declaration(conn, _NULLABLE + ",", _NOT_NULL + ",")
    else:
        op.alter_column("responses", "response_label", existing_type=sa.Float(), nullable=False)
    op.drop_index("ix_preference_pairs_rejected_id", table_name="preference_pairs")
    op.drop_index("ix_preference_pairs_chosen_id", table_name="preference_pairs")
    op.drop_table("preference_pairs")
