"""the store enforces its own rules: CHECK constraints on labels, sources, aggregations, statuses and kinds; an
append-only label history (triggers refuse UPDATE and DELETE of label_events; an undo is a new event pointing
back, so ``undone_by_id`` goes); labels above a dataset's highest level are refused by triggers too.

Existing stores: an event that an undo left alone (formerly marked by ``undone_by_id`` pointing at itself)
gets an explicit event that changes nothing and points back at it, as new undos write. Rows that break the new
rules stop the migration with a message naming them (nothing is changed then).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Frozen: the values as they were at this revision, never imported from the live code (a fresh store must be
# built the same way whatever the code's constants become).
LABEL_SOURCES: tuple[str, ...] = ("gold", "reviewed", "imported")
JOB_STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
MODEL_STATUSES: tuple[str, ...] = ("training", "ready", "failed")
FILE_FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
SEGMENT_MODES: tuple[str, ...] = ("sentences", "steps")
AGGREGATIONS: tuple[str, ...] = ("max", "min", "mean")
LABEL_KINDS: tuple[str, ...] = ("binary", "ordinal", "proportion")
MAX_LABEL = 100


def one_of(column: str, values: tuple[str, ...], *, nullable: bool = False) -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    return f"{column} IS NULL OR {column} IN ({listed})" if nullable else f"{column} IN ({listed})"


def label_in_range(column: str) -> str:
    return f"{column} IS NULL OR ({column} >= 0 AND {column} <= {MAX_LABEL})"


revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS: dict[str, list[tuple[str, str]]] = {
    "datasets": [
        ("label_kind", one_of("label_kind", LABEL_KINDS)),
        ("max_label", f"max_label >= 0 AND max_label <= {MAX_LABEL}"),
        ("gold_target", "gold_target >= 0 AND gold_target <= 1"),
    ],
    "ingested_files": [
        ("format", one_of("format", FILE_FORMATS)),
        ("segment_mode", one_of("segment_mode", SEGMENT_MODES)),
    ],
    "responses": [
        ("aggregation", one_of("aggregation", AGGREGATIONS)),
        ("label_kind", one_of("label_kind", LABEL_KINDS)),
        (
            "response_label",
            f"response_label >= 0 AND response_label <= CASE WHEN aggregation = 'mean' THEN 1 ELSE {MAX_LABEL} END",
        ),
        ("counts", "n_sentences >= 1 AND n_gold >= 0 AND n_gold <= n_sentences"),
    ],
    "sentences": [("offsets", 'position >= 0 AND start >= 0 AND "end" >= start')],
    "model_versions": [("status", one_of("status", MODEL_STATUSES))],
    "label_events": [
        ("source", one_of("source", LABEL_SOURCES)),
        ("old_source", one_of("old_source", LABEL_SOURCES, nullable=True)),
        ("old_label", label_in_range("old_label")),
        ("new_label", label_in_range("new_label")),
    ],
    "current_labels": [
        ("source", one_of("source", LABEL_SOURCES)),
        ("label", label_in_range("label")),
    ],
    "jobs": [
        ("state", one_of("state", JOB_STATES)),
        ("progress", "progress >= 0 AND progress <= 1"),
    ],
}

APPEND_ONLY = "label_events is append-only: the label history cannot be changed or deleted"
ABOVE_LEVEL = "label above the highest level of its dataset"
# A label row may go only together with its sentence or response (a dataset being deleted).
_PARENT_GONE = (
    "NOT EXISTS (SELECT 1 FROM sentences WHERE id = OLD.sentence_id) "
    "OR NOT EXISTS (SELECT 1 FROM responses WHERE id = OLD.response_id)"
)
_TOP = (
    "(SELECT CASE WHEN d.label_kind = 'ordinal' THEN d.max_label ELSE 1 END FROM responses r "
    "JOIN datasets d ON d.id = r.dataset_id WHERE r.id = NEW.response_id)"
)

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER label_events_no_update BEFORE UPDATE ON label_events
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END""",
    f"""CREATE TRIGGER label_events_no_delete BEFORE DELETE ON label_events WHEN NOT ({_PARENT_GONE})
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END""",
    f"""CREATE TRIGGER label_events_level BEFORE INSERT ON label_events
    WHEN NEW.new_label IS NOT NULL AND NEW.new_label > {_TOP}
    BEGIN SELECT RAISE(ABORT, '{ABOVE_LEVEL}'); END""",
    f"""CREATE TRIGGER current_labels_level_insert BEFORE INSERT ON current_labels
    WHEN NEW.label > {_TOP}
    BEGIN SELECT RAISE(ABORT, '{ABOVE_LEVEL}'); END""",
    f"""CREATE TRIGGER current_labels_level_update BEFORE UPDATE OF label, response_id ON current_labels
    WHEN NEW.label > {_TOP}
    BEGIN SELECT RAISE(ABORT, '{ABOVE_LEVEL}'); END""",
]

POSTGRESQL_TRIGGERS = [
    f"""CREATE FUNCTION fractal_label_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND ({_PARENT_GONE}) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '{APPEND_ONLY}' USING ERRCODE = 'integrity_constraint_violation';
    END $$""",
    """CREATE TRIGGER label_events_append_only BEFORE UPDATE OR DELETE ON label_events
    FOR EACH ROW EXECUTE FUNCTION fractal_label_events_append_only()""",
    f"""CREATE FUNCTION fractal_label_level() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        value integer;
    BEGIN
        IF TG_TABLE_NAME = 'label_events' THEN
            value := NEW.new_label;
        ELSE
            value := NEW.label;
        END IF;
        IF value IS NOT NULL AND value > {_TOP} THEN
            RAISE EXCEPTION '{ABOVE_LEVEL}' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER label_events_level BEFORE INSERT ON label_events
    FOR EACH ROW EXECUTE FUNCTION fractal_label_level()""",
    """CREATE TRIGGER current_labels_level BEFORE INSERT OR UPDATE ON current_labels
    FOR EACH ROW EXECUTE FUNCTION fractal_label_level()""",
]


def _refuse_rows_breaking_the_rules(conn: sa.Connection) -> None:
    for table, checks in CHECKS.items():
        for name, condition in checks:
            bad = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table} WHERE NOT ({condition})")).scalar()
            if bad:
                raise RuntimeError(
                    f"{bad} row(s) of {table} break the rule {name} ({condition}); "
                    "fix or delete them, then run the upgrade again"
                )


def upgrade() -> None:
    conn = op.get_bind()
    _refuse_rows_breaking_the_rules(conn)
    # Events an undo left alone pointed at themselves; write the explicit "left alone" event instead.
    conn.execute(
        sa.text(
            """INSERT INTO label_events (action_id, sentence_id, response_id, annotator, source, old_label,
                   old_source, old_annotator, new_label, created_at, undoes_id)
               SELECT e.action_id, e.sentence_id, e.response_id, e.annotator, COALESCE(c.source, e.source),
                   c.label, c.source, c.annotator, c.label, e.created_at, e.id
               FROM label_events e LEFT JOIN current_labels c ON c.sentence_id = e.sentence_id
               WHERE e.undone_by_id = e.id
               ORDER BY e.id"""
        )
    )
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            if table == "label_events":
                batch.drop_constraint("fk_label_events_undone_by_id_label_events", type_="foreignkey")
                batch.drop_column("undone_by_id")
                batch.create_index("ix_label_events_undoes_id", ["undoes_id"])
            for name, condition in checks:
                batch.create_check_constraint(op.f(f"ck_{table}_{name}"), condition)
    for statement in SQLITE_TRIGGERS if conn.dialect.name == "sqlite" else POSTGRESQL_TRIGGERS:
        conn.execute(sa.text(statement))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for name in (
            "label_events_no_update",
            "label_events_no_delete",
            "label_events_level",
            "current_labels_level_insert",
            "current_labels_level_update",
        ):
            conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}"))
    else:
        conn.execute(sa.text("DROP TRIGGER IF EXISTS label_events_append_only ON label_events"))
        conn.execute(sa.text("DROP TRIGGER IF EXISTS label_events_level ON label_events"))
        conn.execute(sa.text("DROP TRIGGER IF EXISTS current_labels_level ON current_labels"))
        conn.execute(sa.text("DROP FUNCTION IF EXISTS fractal_label_events_append_only()"))
        conn.execute(sa.text("DROP FUNCTION IF EXISTS fractal_label_level()"))
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for name, _ in checks:
                batch.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
            if table == "label_events":
                batch.drop_index("ix_label_events_undoes_id")
                batch.add_column(sa.Column("undone_by_id", sa.Integer(), nullable=True))
                batch.create_foreign_key(
                    "fk_label_events_undone_by_id_label_events", "label_events", ["undone_by_id"], ["id"]
                )
