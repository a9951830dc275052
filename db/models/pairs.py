"""Preference pairs: two responses of a dataset and which one is preferred, with who or what said so."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, one_of, utcnow
from fractal_core.data.records import MAX_ID_CHARS

PAIR_SOURCES: tuple[str, ...] = ("imported",)
"""Where a preference came from: an ingested pairs file (its annotator is whoever ingested it)."""


class PreferencePair(Base):
    """``chosen`` is better than ``rejected`` with P = (1 + strength) / 2. Both are ordinary responses of the
    pair's dataset (one response may be in several pairs); deleting either deletes the pair."""

    __tablename__ = "preference_pairs"
    __table_args__ = (
        UniqueConstraint("dataset_id", "external_id"),
        Index("ix_preference_pairs_chosen_id", "chosen_id"),
        Index("ix_preference_pairs_rejected_id", "rejected_id"),
        CheckConstraint("strength >= 0 AND strength <= 1", name="strength"),
        CheckConstraint("chosen_id <> rejected_id", name="two_responses"),
        CheckConstraint(one_of("source", PAIR_SOURCES), name="source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    file_id: Mapped[int | None] = mapped_column(ForeignKey("ingested_files.id", ondelete="SET NULL"))
    external_id: Mapped[str] = mapped_column(String(MAX_ID_CHARS))
    chosen_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    rejected_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    strength: Mapped[float] = mapped_column(Float, default=1.0)
    source: Mapped[str] = mapped_column(String(16))
    annotator: Mapped[str] = mapped_column(String(128))  # who ingested it
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
