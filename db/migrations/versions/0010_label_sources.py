"""label sources say who set a label: ``human``, ``adjudicated``, ``model``, ``imported``, ``imported_gold``
(formerly ``gold``, ``reviewed``, ``imported``); every history event names whom its resulting label is
attributed to (``new_annotator``: an undo gives a label back to whoever had set it).

Old rows are renamed by following each label to the event that set it:
- ``gold`` written by an ingest (``--labels-as gold``) -> ``imported_gold``; any other ``gold`` -> ``human``;
- ``reviewed`` -> ``adjudicated`` where an adjudication by the same reviewer recorded the same label for the
  sentence; any other ``reviewed`` -> ``model`` (the old "accept the model's labels" key wrote ``reviewed``
  too, and nothing else tells the two apart: a label accepted from the model by a reviewer who later
  adjudicated the same sentence to the same label is counted as adjudicated).

The history is append-only: its triggers are dropped around the rewrite and created again after it.
Frozen: literal values only, no imports from the live code.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_SOURCES = "'human', 'adjudicated', 'model', 'imported', 'imported_gold'"
OLD_SOURCES = "'gold', 'reviewed', 'imported'"

APPEND_ONLY = "label_events is append-only: the label history cannot be changed or deleted"
ABOVE_LEVEL = "label above the highest level of its dataset"
_PARENT_GONE = (
    "NOT EXISTS (SELECT 1 FROM sentences WHERE id = OLD.sentence_id) "
    "OR NOT EXISTS (SELECT 1 FROM responses WHERE id = OLD.response_id)"
)
_TOP = (
    "(SELECT CASE WHEN d.label_kind = 'ordinal' THEN d.max_label ELSE 1 END FROM responses r "
    "JOIN datasets d ON d.id = r.dataset_id WHERE r.id = NEW.response_id)"
)
# The triggers of revision 0004, as they were (a SQLite table rebuild drops its triggers).
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
SQLITE_TRIGGER_NAMES = [
    "label_events_no_update",
    "label_events_no_delete",
    "label_events_level",
    "current_labels_level_insert",
    "current_labels_level_update",
]


def _drop_append_only(conn: sa.Connection) -> None:
    if conn.dialect.name == "sqlite":
        for name in SQLITE_TRIGGER_NAMES:
            conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}"))
    else:
        conn.execute(sa.text("ALTER TABLE label_events DISABLE TRIGGER label_events_append_only"))


def _restore_append_only(conn: sa.Connection) -> None:
    if conn.dialect.name == "sqlite":
        for statement in SQLITE_TRIGGERS:
            conn.execute(sa.text(statement))
    else:
        conn.execute(sa.text("ALTER TABLE label_events ENABLE TRIGGER label_events_append_only"))


def _set_checks(sources: str, *, drop: bool) -> None:
    for table, columns in (("label_events", ("source", "old_source")), ("current_labels", ("source",))):
        with op.batch_alter_table(table) as batch:
            for column in columns:
                name = op.f(f"ck_{table}_{column}")
                if drop:
                    batch.drop_constraint(name, type_="check")
                else:
                    nullable = f"{column} IS NULL OR " if column == "old_source" else ""
                    batch.create_check_constraint(name, f"{nullable}{column} IN ({sources})")


def _rename(conn: sa.Connection) -> None:
    """Follow every label to the event that set it and rename its source (module docstring)."""
    adjudicated = {
        (sid, reviewer, label)
        for sid, reviewer, label in conn.execute(
            sa.text("SELECT sentence_id, reviewer, label FROM adjudications")
        )
    }
    events = conn.execute(
        sa.text(
            "SELECT id, sentence_id, action_id, annotator, source, old_source, old_annotator, old_label,"
            " new_label, undoes_id, new_annotator FROM label_events ORDER BY sentence_id, id"
        )
    ).all()

    def renamed(source: str, action: str, sid: int, who: str | None, label: int | None) -> str:
        if source == "gold":
            return "imported_gold" if action.startswith("ingest-") else "human"
        if source == "reviewed":
            return "adjudicated" if (sid, who, label) in adjudicated else "model"
        return source

    # Per sentence, the state after each event: (label, renamed source, attributed annotator). An undo that
    # reverted gives back the state before the event it undid; one that left the label alone keeps it.
    State = tuple[int | None, str | None, str | None]
    before: dict[int, State] = {}
    after: dict[int, State] = {}
    now: dict[int, State] = {}
    updates = []
    for e in events:
        previous = now.get(e.sentence_id, (None, None, None))
        before[e.id] = previous
        own: State = (
            e.new_label,
            renamed(e.source, e.action_id, e.sentence_id, e.annotator, e.new_label),
            e.annotator if e.new_label is not None else None,
        )
        if e.undoes_id is None:
            state = own
        elif e.new_label == e.old_label and e.source == e.old_source:  # left alone
            state = previous if previous[0] == e.new_label else (own[0], own[1], e.old_annotator)
        else:
            state = before.get(e.undoes_id, own)
        if state[0] != e.new_label:  # a history that does not chain (an old drift): trust the row
            state = own
        if state[1] is None:
            state = (state[0], own[1], state[2])
        now[e.sentence_id] = state
        after[e.id] = state
        if e.old_source is None:
            old_source = None
        elif previous[0] == e.old_label and previous[1] is not None:
            old_source = previous[1]
        else:
            old_source = renamed(e.old_source, "", e.sentence_id, e.old_annotator, e.old_label)
        if (state[1], old_source, state[2]) != (e.source, e.old_source, e.new_annotator):
            updates.append({"id": e.id, "source": state[1], "old_source": old_source, "who": state[2]})
    if updates:
        conn.execute(
            sa.text(
                "UPDATE label_events SET source = :source, old_source = :old_source, new_annotator = :who"
                " WHERE id = :id"
            ),
            updates,
        )
    current = conn.execute(
        sa.text("SELECT sentence_id, event_id, label, source, annotator FROM current_labels")
    ).all()
    moved = []
    for c in current:
        found = after.get(c.event_id)
        if found is not None and found[0] == c.label and found[1] is not None:
            source = found[1]
        else:
            source = renamed(c.source, "", c.sentence_id, c.annotator, c.label)
        if source != c.source:
            moved.append({"sid": c.sentence_id, "source": source})
    if moved:
        conn.execute(sa.text("UPDATE current_labels SET source = :source WHERE sentence_id = :sid"), moved)


def upgrade() -> None:
    conn = op.get_bind()
    _drop_append_only(conn)
    _set_checks(OLD_SOURCES, drop=True)
    with op.batch_alter_table("label_events") as batch:
        batch.add_column(sa.Column("new_annotator", sa.String(length=128), nullable=True))
    conn.execute(
        sa.text(
            "UPDATE label_events SET new_annotator = annotator WHERE undoes_id IS NULL AND new_label IS NOT NULL"
        )
    )
    _rename(conn)
    # Labels accepted from the model no longer count as gold.
    conn.execute(
        sa.text(
            "UPDATE responses SET n_gold = (SELECT COUNT(*) FROM current_labels c WHERE c.response_id ="
            " responses.id AND c.source IN ('human', 'adjudicated', 'imported_gold'))"
        )
    )
    _set_checks(NEW_SOURCES, drop=False)
    _restore_append_only(conn)


def downgrade() -> None:
    conn = op.get_bind()
    _drop_append_only(conn)
    _set_checks(NEW_SOURCES, drop=True)
    back = (
        "CASE {c} WHEN 'human' THEN 'gold' WHEN 'imported_gold' THEN 'gold' WHEN 'adjudicated' THEN 'reviewed'"
        " WHEN 'model' THEN 'reviewed' ELSE {c} END"
    )
    conn.execute(
        sa.text(
            f"UPDATE label_events SET source = {back.format(c='source')},"
            f" old_source = {back.format(c='old_source')}"
        )
    )
    conn.execute(sa.text(f"UPDATE current_labels SET source = {back.format(c='source')}"))
    conn.execute(
        sa.text(
            "UPDATE responses SET n_gold = (SELECT COUNT(*) FROM current_labels c WHERE c.response_id ="
            " responses.id AND c.source IN ('gold', 'reviewed'))"
        )
    )
    with op.batch_alter_table("label_events") as batch:
        batch.drop_column("new_annotator")
    _set_checks(OLD_SOURCES, drop=False)
    _restore_append_only(conn)
