"""one label history: each overlap annotator's own labels are events of ``label_events`` too, in that
annotator's layer (``layer``: NULL for the shared view in ``current_labels``, else the annotator whose own labels
in ``annotations`` the event changes), so both views have one write path and one undo rule.

``annotation_events`` rows move into ``label_events`` in their order (source ``human``: a person set them),
an undo pointing at the event of the undone action for the same sentence; the table goes.
Frozen: literal values only, no imports from the live code.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _set_sequence(conn: sa.Connection, table: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0)"
                " + 1, false)"
            )
        )


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("label_events", sa.Column("layer", sa.String(length=128), nullable=True))
    offset = int(conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM label_events")).scalar() or 0)
    conn.execute(
        sa.text(
            """INSERT INTO label_events (id, action_id, sentence_id, response_id, annotator, source, old_label,
                   old_source, old_annotator, new_label, new_annotator, created_at, undoes_id, layer)
               SELECT a.id + :offset, a.action_id, a.sentence_id, a.response_id, a.annotator, 'human',
                   a.old_label, CASE WHEN a.old_label IS NULL THEN NULL ELSE 'human' END,
                   CASE WHEN a.old_label IS NULL THEN NULL ELSE a.annotator END,
                   a.new_label, CASE WHEN a.new_label IS NULL THEN NULL ELSE a.annotator END, a.created_at,
                   (SELECT MIN(u.id) + :offset FROM annotation_events u
                    WHERE u.action_id = a.undoes_action AND u.sentence_id = a.sentence_id),
                   a.annotator
               FROM annotation_events a ORDER BY a.id"""
        ),
        {"offset": offset},
    )
    _set_sequence(conn, "label_events")
    op.drop_index("ix_annotation_events_annotator_id", table_name="annotation_events")
    op.drop_index("ix_annotation_events_response_id", table_name="annotation_events")
    op.drop_table("annotation_events")


def downgrade() -> None:
    conn = op.get_bind()
    op.create_table(
        "annotation_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action_id", sa.String(length=36), nullable=False),
        sa.Column("sentence_id", sa.Integer(), nullable=False),
        sa.Column("response_id", sa.Integer(), nullable=False),
        sa.Column("annotator", sa.String(length=128), nullable=False),
        sa.Column("old_label", sa.Integer(), nullable=True),
        sa.Column("new_label", sa.Integer(), nullable=True),
        sa.Column("undoes_action", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["response_id"],
            ["responses.id"],
            name=op.f("fk_annotation_events_response_id_responses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sentence_id"],
            ["sentences.id"],
            name=op.f("fk_annotation_events_sentence_id_sentences"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotation_events")),
    )
    op.create_index(
        "ix_annotation_events_annotator_id", "annotation_events", ["annotator", "id"], unique=False
    )
    op.create_index(
        "ix_annotation_events_response_id", "annotation_events", ["response_id", "id"], unique=False
    )
    conn.execute(
        sa.text(
            """INSERT INTO annotation_events (id, action_id, sentence_id, response_id, annotator, old_label,
                   new_label, undoes_action, created_at)
               SELECT e.id, e.action_id, e.sentence_id, e.response_id, e.annotator, e.old_label, e.new_label,
                   (SELECT u.action_id FROM label_events u WHERE u.id = e.undoes_id), e.created_at
               FROM label_events e WHERE e.layer IS NOT NULL ORDER BY e.id"""
        )
    )
    _set_sequence(conn, "annotation_events")
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        conn.execute(sa.text("DROP TRIGGER IF EXISTS label_events_no_delete"))
    else:
        conn.execute(sa.text("ALTER TABLE label_events DISABLE TRIGGER label_events_append_only"))
    conn.execute(sa.text("DELETE FROM label_events WHERE layer IS NOT NULL"))
    if sqlite:
        conn.execute(
            sa.text(
                "CREATE TRIGGER label_events_no_delete BEFORE DELETE ON label_events WHEN NOT (NOT EXISTS"
                " (SELECT 1 FROM sentences WHERE id = OLD.sentence_id) OR NOT EXISTS (SELECT 1 FROM responses"
                " WHERE id = OLD.response_id)) BEGIN SELECT RAISE(ABORT, 'label_events is append-only: the"
                " label history cannot be changed or deleted'); END"
            )
        )
    else:
        conn.execute(sa.text("ALTER TABLE label_events ENABLE TRIGGER label_events_append_only"))
    op.drop_column("label_events", "layer")
