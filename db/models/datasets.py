"""Datasets and what an ingest puts in them: ingested files, responses (bags) and sentences (instances)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from db.models.base import Base, one_of, utcnow
from fractal_core.data.records import AGGREGATIONS, LABEL_KINDS, MAX_ID_CHARS, MAX_LABEL, MAX_TASK_CHARS
from fractal_core.data.segment_edit import EDIT_KINDS

FILE_FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
SEGMENT_MODES: tuple[str, ...] = ("sentences", "steps")
# An import is staged (written chunk by chunk into a hidden dataset of its own) until it is published.
IMPORT_STATES: tuple[str, ...] = ("staging", "published")


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (
        CheckConstraint(one_of("label_kind", LABEL_KINDS), name="label_kind"),
        CheckConstraint(f"max_label >= 0 AND max_label <= {MAX_LABEL}", name="max_label"),
        CheckConstraint("gold_target >= 0 AND gold_target <= 1", name="gold_target"),
        Index("ix_datasets_criteria_group_criterion", "criteria_group", "criterion", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # "binary" | "ordinal" | "proportion": fixed when the dataset is created (declared, or derived from its first
    # file); later files must fit it.
    label_kind: Mapped[str] = mapped_column(String(16))
    # Highest level (ordinal: C - 1, fixed with the kind; else 1): labels are divided by it to compare with scores.
    max_label: Mapped[float] = mapped_column(Float, default=1.0)
    gold_target: Mapped[float] = mapped_column(Float, default=0.1)
    # Team work: a share ``overlap_fraction`` of responses goes to ``overlap_k`` annotators each (agreement).
    overlap_k: Mapped[int] = mapped_column(Integer, default=1, server_default=sql_text("1"))
    overlap_fraction: Mapped[float] = mapped_column(Float, default=0.0, server_default=sql_text("0"))
    guidelines: Mapped[str] = mapped_column(Text, default="", server_default="")  # Markdown, by an admin
    active_model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", use_alter=True, ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Several criteria per response (db.ingest_criteria): the group this dataset belongs to and the criterion
    # its labels judge; the datasets of a group hold the same responses and sentences. NULL: an ordinary dataset.
    criteria_group: Mapped[str | None] = mapped_column(String(64))
    criterion: Mapped[str | None] = mapped_column(String(64))


class IngestedFile(Base):
    __tablename__ = "ingested_files"
    __table_args__ = (
        UniqueConstraint("dataset_id", "sha256"),
        CheckConstraint(one_of("format", FILE_FORMATS), name="format"),
        CheckConstraint(one_of("segment_mode", SEGMENT_MODES), name="segment_mode"),
        CheckConstraint(one_of("state", IMPORT_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # While ``state`` is "staging" this is the import's own hidden dataset (readers never list it); publishing
    # renames that dataset to the target name, or moves its responses into the existing target.
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default="published", server_default="published")
    # The staging process ("host:pid") and its last sign of life (each chunk): a crashed import's staged rows
    # are removed by the next worker or ingest that finds it dead.
    owner: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    filename: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    segment_mode: Mapped[str] = mapped_column(String(32))
    segmenter_version: Mapped[str] = mapped_column(String(64))
    n_responses: Mapped[int] = mapped_column(Integer)
    n_sentences: Mapped[int] = mapped_column(Integer)
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)


class Response(Base):
    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("dataset_id", "external_id"),
        Index("ix_responses_dataset_id_id", "dataset_id", "id"),
        CheckConstraint(one_of("aggregation", AGGREGATIONS), name="aggregation"),
        CheckConstraint(one_of("label_kind", LABEL_KINDS), name="label_kind"),
        CheckConstraint(
            f"response_label >= 0 AND response_label <= CASE WHEN aggregation = 'mean' THEN 1 ELSE {MAX_LABEL} END",
            name="response_label",
        ),
        CheckConstraint("n_sentences >= 1 AND n_gold >= 0 AND n_gold <= n_sentences", name="counts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    file_id: Mapped[int | None] = mapped_column(ForeignKey("ingested_files.id", ondelete="SET NULL"))
    external_id: Mapped[str] = mapped_column(String(MAX_ID_CHARS))
    context: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    # NULL: no label of its own (a response that came in a preference pair without one, db.models.pairs).
    response_label: Mapped[float | None] = mapped_column(Float)
    aggregation: Mapped[str] = mapped_column(String(8))
    label_kind: Mapped[str] = mapped_column(String(16))
    split: Mapped[str | None] = mapped_column(String(32))
    task: Mapped[str | None] = mapped_column(String(MAX_TASK_CHARS))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_sentences: Mapped[int] = mapped_column(Integer)
    # Current gold-source labels in this response; kept in step with current_labels by every label write.
    n_gold: Mapped[int] = mapped_column(Integer, default=0, server_default=sql_text("0"))


class Sentence(Base):
    __tablename__ = "sentences"
    __table_args__ = (
        UniqueConstraint("response_id", "position"),
        CheckConstraint('position >= 0 AND start >= 0 AND "end" >= start', name="offsets"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)  # character offset into responses.text
    end: Mapped[int] = mapped_column(Integer)  # exclusive
    text: Mapped[str] = mapped_column(Text)
    segmenter_version: Mapped[str] = mapped_column(String(64))
    # Set when a split fix replaced this sentence (the segment_edits row that did): the row, its label history
    # and scores stay, outside the response (position RETIRED_POSITION + id); an undo brings it back.
    retired_by: Mapped[int | None] = mapped_column(Integer)


RETIRED_POSITION = 1_000_000_000
"""Retired sentences sit at ``RETIRED_POSITION + id``: out of every live range, unique per response."""


def live_sentence() -> ColumnElement[bool]:
    """The one condition every reader of a response's current sentences applies: not replaced by a split fix."""
    return Sentence.retired_by.is_(None)


SEGMENT_EDIT_KINDS: tuple[str, ...] = EDIT_KINDS


class SegmentEdit(Base):
    """A person's fix of a response's split (``db.repository.segment_edits``): what the sentences were and
    became, and the labels it ended, so that an undo gives both back. Rows are never changed; an undo is a
    row of kind ``undo`` pointing at the edit it reverts."""

    __tablename__ = "segment_edits"
    __table_args__ = (
        Index("ix_segment_edits_response_id", "response_id", "id"),
        CheckConstraint(one_of("kind", SEGMENT_EDIT_KINDS), name="kind"),
        CheckConstraint('position >= 0 AND ("offset" IS NULL OR "offset" > 0)', name="position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    editor: Mapped[str] = mapped_column(String(128))  # who made it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(8))
    position: Mapped[int] = mapped_column(Integer)  # first sentence (0-based) it replaced
    offset: Mapped[int | None] = mapped_column(Integer)  # a split's offset inside the sentence
    # Every sentence of the response before and after, as [[start, end], ...] into responses.text.
    spans_before: Mapped[list[Any]] = mapped_column(JSON)
    spans_after: Mapped[list[Any]] = mapped_column(JSON)
    # The labels it ended on the sentences it replaced: [{"position", "shared": {"label", "source",
    # "annotator"} | null, "own": {annotator: label}, "adjudications": [{"reviewer", "label", "at"}]}].
    ended: Mapped[list[Any]] = mapped_column(JSON)
    undoes_id: Mapped[int | None] = mapped_column(ForeignKey("segment_edits.id", ondelete="CASCADE"))
