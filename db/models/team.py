"""Team work on overlap responses: annotators' queues, their own labels, adjudications and response notes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, utcnow


class Assignment(Base):
    """A response in an annotator's queue (several annotators for the overlap sample)."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("response_id", "annotator"),
        Index("ix_assignments_annotator_dataset", "annotator", "dataset_id", "response_id"),
        Index("ix_assignments_dataset_id", "dataset_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    annotator: Mapped[str] = mapped_column(String(128))
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column()  # the annotator finished it (Save & next)


class Annotation(Base):
    """One annotator's own current label of a sentence of an overlap response (kept apart from the gold
    view in ``current_labels``, which an adjudication sets): the current view of the ``label_events`` whose
    ``layer`` is that annotator."""

    __tablename__ = "annotations"
    __table_args__ = (
        Index("ix_annotations_dataset_id", "dataset_id"),
        Index("ix_annotations_response_id", "response_id"),
    )

    sentence_id: Mapped[int] = mapped_column(ForeignKey("sentences.id", ondelete="CASCADE"), primary_key=True)
    annotator: Mapped[str] = mapped_column(String(128), primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    label: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Adjudication(Base):
    """A reviewer's decision on an overlap response: the gold labels they set, with who and when."""

    __tablename__ = "adjudications"
    __table_args__ = (Index("ix_adjudications_response_id", "response_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    sentence_id: Mapped[int] = mapped_column(ForeignKey("sentences.id", ondelete="CASCADE"))
    label: Mapped[int | None] = mapped_column(Integer)
    reviewer: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


NOTE_FLAGS: tuple[str, ...] = ("unsure", "bad split", "bad response")


class ResponseNote(Base):
    """A comment on a response, optionally with a flag (one of NOTE_FLAGS)."""

    __tablename__ = "response_notes"
    __table_args__ = (Index("ix_response_notes_response_id", "response_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    author: Mapped[str] = mapped_column(String(128))
    flag: Mapped[str | None] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
