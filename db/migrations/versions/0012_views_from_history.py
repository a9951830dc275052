"""the current views are written only from the history, and a response label must fit its dataset's kind.

Triggers (SQLite and PostgreSQL) refuse:
- a ``current_labels`` row (INSERT / UPDATE) that is not what the latest shared-view event of its sentence
  left (label, source, attributed annotator) or whose ``event_id`` is not such an event; a DELETE unless that
  latest event cleared the label (or the sentence or response is being deleted);
- the same for ``annotations`` against the latest event in the annotator's own layer;
- a response whose label or aggregation does not fit its dataset's kind (binary: 0/1; ordinal: integers up to
  the top level; proportion: mean bags in [0, 1]); staging datasets of an ingest are checked when published;
- a change of a dataset's kind or top level that its responses do not fit.

Existing rows that break the response rule stop the migration with their count (nothing changes).
Frozen: literal values only, no imports from the live code.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FROM_HISTORY = "current labels are written only from label_events: record the change as an event"
OWN_FROM_HISTORY = "annotations are written only from label_events: record the change as an event"
KIND = "a response label must fit its dataset''s label kind"

_PARENT_GONE = (
    "(NOT EXISTS (SELECT 1 FROM sentences WHERE id = OLD.sentence_id) "
    "OR NOT EXISTS (SELECT 1 FROM responses WHERE id = OLD.response_id))"
)
# An own label also goes with its dataset (a foreign key of its own, cascaded first on a dataset's deletion).
_OWN_PARENT_GONE = f"({_PARENT_GONE} OR NOT EXISTS (SELECT 1 FROM datasets WHERE id = OLD.dataset_id))"


def _shared_matches(row: str) -> str:
    """SQL: ``row`` (NEW) is the state the latest shared-view event of its sentence left, and its event_id is
    an event of that sentence that left the same state."""
    same = f"{{e}}.new_label = {row}.label AND {{e}}.source = {row}.source AND {{e}}.new_annotator = {row}.annotator"
    return (
        f"EXISTS (SELECT 1 FROM label_events e WHERE e.id = (SELECT MAX(m.id) FROM label_events m"
        f" WHERE m.sentence_id = {row}.sentence_id AND m.layer IS NULL) AND e.response_id = {row}.response_id"
        f" AND {same.format(e='e')}) AND EXISTS (SELECT 1 FROM label_events v WHERE v.id = {row}.event_id"
        f" AND v.sentence_id = {row}.sentence_id AND v.layer IS NULL AND {same.format(e='v')})"
    )


def _own_matches(row: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM label_events e WHERE e.id = (SELECT MAX(m.id) FROM label_events m"
        f" WHERE m.sentence_id = {row}.sentence_id AND m.layer = {row}.annotator)"
        f" AND e.response_id = {row}.response_id AND e.new_label = {row}.label)"
    )


def _cleared(row: str, layer: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM label_events e WHERE e.id = (SELECT MAX(m.id) FROM label_events m"
        f" WHERE m.sentence_id = {row}.sentence_id AND {layer}) AND e.new_label IS NULL)"
    )


def _misfit(r: str, kind: str, top: str) -> str:
    """SQL: response ``r`` does not fit a dataset of ``kind`` with top level ``top``."""
    return (
        f"(({kind} = 'proportion') <> ({r}.aggregation = 'mean') OR ({kind} <> 'proportion' AND"
        f" ({r}.response_label <> round({r}.response_label) OR {r}.response_label >"
        f" CASE WHEN {kind} = 'ordinal' THEN {top} ELSE 1 END)))"
    )


_STAGING = "EXISTS (SELECT 1 FROM ingested_files f WHERE f.dataset_id = {d} AND f.state = 'staging')"
_RESPONSE_MISFIT = (
    f"NOT {_STAGING.format(d='NEW.dataset_id')} AND EXISTS (SELECT 1 FROM datasets d WHERE d.id = NEW.dataset_id"
    f" AND {_misfit('NEW', 'd.label_kind', 'd.max_label')})"
)
_DATASET_MISFIT = f"EXISTS (SELECT 1 FROM responses r WHERE r.dataset_id = NEW.id AND {_misfit('r', 'NEW.label_kind', 'NEW.max_label')})"

SQLITE_TRIGGERS = {
    "current_labels_from_history_insert": f"""BEFORE INSERT ON current_labels WHEN NOT ({_shared_matches("NEW")})
        BEGIN SELECT RAISE(ABORT, '{FROM_HISTORY}'); END""",
    "current_labels_from_history_update": f"""BEFORE UPDATE ON current_labels WHEN NOT ({_shared_matches("NEW")})
        BEGIN SELECT RAISE(ABORT, '{FROM_HISTORY}'); END""",
    "current_labels_from_history_delete": f"""BEFORE DELETE ON current_labels
        WHEN NOT {_PARENT_GONE} AND NOT {_cleared("OLD", "m.layer IS NULL")}
        BEGIN SELECT RAISE(ABORT, '{FROM_HISTORY}'); END""",
    "annotations_from_history_insert": f"""BEFORE INSERT ON annotations WHEN NOT ({_own_matches("NEW")})
        BEGIN SELECT RAISE(ABORT, '{OWN_FROM_HISTORY}'); END""",
    "annotations_from_history_update": f"""BEFORE UPDATE ON annotations WHEN NOT ({_own_matches("NEW")})
        BEGIN SELECT RAISE(ABORT, '{OWN_FROM_HISTORY}'); END""",
    "annotations_from_history_delete": f"""BEFORE DELETE ON annotations
        WHEN NOT {_OWN_PARENT_GONE} AND NOT {_cleared("OLD", "m.layer = OLD.annotator")}
        BEGIN SELECT RAISE(ABORT, '{OWN_FROM_HISTORY}'); END""",
    "responses_label_fits_insert": f"""BEFORE INSERT ON responses WHEN {_RESPONSE_MISFIT}
        BEGIN SELECT RAISE(ABORT, '{KIND}'); END""",
    "responses_label_fits_update": f"""BEFORE UPDATE OF response_label, aggregation, dataset_id ON responses
        WHEN {_RESPONSE_MISFIT} BEGIN SELECT RAISE(ABORT, '{KIND}'); END""",
    "datasets_kind_fits": f"""BEFORE UPDATE OF label_kind, max_label ON datasets WHEN {_DATASET_MISFIT}
        BEGIN SELECT RAISE(ABORT, '{KIND}'); END""",
}

_PG_FUNCTIONS = {
    "fractal_current_from_history": f"""
    BEGIN
        IF TG_OP = 'DELETE' THEN
            IF {_PARENT_GONE} OR {_cleared("OLD", "m.layer IS NULL")} THEN
                RETURN OLD;
            END IF;
        ELSIF {_shared_matches("NEW")} THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION '{FROM_HISTORY}' USING ERRCODE = 'integrity_constraint_violation';
    END""",
    "fractal_annotations_from_history": f"""
    BEGIN
        IF TG_OP = 'DELETE' THEN
            IF {_OWN_PARENT_GONE} OR {_cleared("OLD", "m.layer = OLD.annotator")} THEN
                RETURN OLD;
            END IF;
        ELSIF {_own_matches("NEW")} THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION '{OWN_FROM_HISTORY}' USING ERRCODE = 'integrity_constraint_violation';
    END""",
    "fractal_response_label_fits": f"""
    BEGIN
        IF {_RESPONSE_MISFIT} THEN
            RAISE EXCEPTION '{KIND}' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END""",
    "fractal_dataset_kind_fits": f"""
    BEGIN
        IF {_DATASET_MISFIT} THEN
            RAISE EXCEPTION '{KIND}' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END""",
}
_PG_TRIGGERS = {
    "current_labels_from_history": "BEFORE INSERT OR UPDATE OR DELETE ON current_labels",
    "annotations_from_history": "BEFORE INSERT OR UPDATE OR DELETE ON annotations",
    "responses_label_fits": "BEFORE INSERT OR UPDATE OF response_label, aggregation, dataset_id ON responses",
    "datasets_kind_fits": "BEFORE UPDATE OF label_kind, max_label ON datasets",
}
_PG_TRIGGER_FUNCTION = {
    "current_labels_from_history": "fractal_current_from_history",
    "annotations_from_history": "fractal_annotations_from_history",
    "responses_label_fits": "fractal_response_label_fits",
    "datasets_kind_fits": "fractal_dataset_kind_fits",
}
_PG_TABLE = {
    "current_labels_from_history": "current_labels",
    "annotations_from_history": "annotations",
    "responses_label_fits": "responses",
    "datasets_kind_fits": "datasets",
}


def upgrade() -> None:
    conn = op.get_bind()
    bad = conn.execute(
        sa.text(
            "SELECT COUNT(*) FROM responses r JOIN datasets d ON d.id = r.dataset_id"
            f" WHERE NOT {_STAGING.format(d='r.dataset_id')} AND {_misfit('r', 'd.label_kind', 'd.max_label')}"
        )
    ).scalar()
    if bad:
        raise RuntimeError(
            f"{bad} response(s) have a label that does not fit their dataset's label kind; "
            "fix or delete them, then run the upgrade again"
        )
    if conn.dialect.name == "sqlite":
        for name, body in SQLITE_TRIGGERS.items():
            conn.execute(sa.text(f"CREATE TRIGGER {name} {body}"))
        return
    for name, body in _PG_FUNCTIONS.items():
        conn.execute(sa.text(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body} $$"))
    for name, when in _PG_TRIGGERS.items():
        conn.execute(
            sa.text(
                f"CREATE TRIGGER {name} {when} FOR EACH ROW EXECUTE FUNCTION {_PG_TRIGGER_FUNCTION[name]}()"
            )
        )


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}"))
        return
    for name, table in _PG_TABLE.items():
        conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))
    for name in _PG_FUNCTIONS:
        conn.execute(sa.text(f"DROP FUNCTION IF EXISTS {name}()"))
