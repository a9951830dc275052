"""The append-only label history (``label_events``) and the shared view it writes (``current_labels``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, label_in_range, one_of, utcnow
from db.sources import LABEL_SOURCES


class LabelEvent(Base):
    __tablename__ = "label_events"
    __table_args__ = (
        Index("ix_label_events_annotator_id", "annotator", "id"),
        Index("ix_label_events_response_id", "response_id", "id"),
        Index("ix_label_events_sentence_id", "sentence_id"),
        Index("ix_label_events_undoes_id", "undoes_id"),
        CheckConstraint(one_of("source", LABEL_SOURCES), name="source"),
        CheckConstraint(one_of("old_source", LABEL_SOURCES, nullable=True), name="old_source"),
        CheckConstraint(label_in_range("old_label"), name="old_label"),
        CheckConstraint(label_in_range("new_label"), name="new_label"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # One user action (a single label, a whole response, an undo) shares one action id.
    action_id: Mapped[str] = mapped_column(String(36))
    # The view the event changes: NULL for the shared view (current_labels), else the overlap annotator whose
    # own labels (annotations) it changes.
    layer: Mapped[str | None] = mapped_column(String(128))
    sentence_id: Mapped[int] = mapped_column(ForeignKey("sentences.id", ondelete="CASCADE"))
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    annotator: Mapped[str] = mapped_column(String(128))  # who made the change (an undo: who undid)
    source: Mapped[str] = mapped_column(String(16))  # the source of the label after the event (db.sources)
    old_label: Mapped[int | None] = mapped_column(Integer)
    old_source: Mapped[str | None] = mapped_column(String(16))
    old_annotator: Mapped[str | None] = mapped_column(String(128))
    new_label: Mapped[int | None] = mapped_column(Integer)
    # Whom the label after the event is attributed to (NULL when it clears): the writer, or on an undo whoever
    # had set the label it gives back. With new_label and source, the event alone says what the view holds.
    new_annotator: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set on an undo event: the event it reverted (or left alone because someone changed it since). Rows are
    # never updated or deleted (triggers refuse it): an event is undone when a later event points at it.
    undoes_id: Mapped[int | None] = mapped_column(ForeignKey("label_events.id"))


class CurrentLabel(Base):
    __tablename__ = "current_labels"
    __table_args__ = (
        Index("ix_current_labels_response_id", "response_id"),
        Index("ix_current_labels_annotator_response", "annotator", "response_id"),
        CheckConstraint(one_of("source", LABEL_SOURCES), name="source"),
        CheckConstraint(label_in_range("label"), name="label"),
    )

    sentence_id: Mapped[int] = mapped_column(ForeignKey("sentences.id", ondelete="CASCADE"), primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    label: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    annotator: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[int] = mapped_column(ForeignKey("label_events.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
