"""Training runs (model versions), their sentence and response scores, and their files kept in the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, one_of, utcnow

MODEL_STATUSES: tuple[str, ...] = ("training", "ready", "failed")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "version"),
        CheckConstraint(one_of("status", MODEL_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per dataset
    method: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    artifact_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    # The version that was active when this one was activated: what rollback goes back to.
    replaced_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    activated_at: Mapped[datetime | None] = mapped_column()


class SentenceScore(Base):
    __tablename__ = "sentence_scores"

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    sentence_id: Mapped[int] = mapped_column(ForeignKey("sentences.id", ondelete="CASCADE"), primary_key=True)
    score: Mapped[float] = mapped_column(Float)  # in [0, 1]: P(positive), or expected level / (C - 1)
    uncertainty: Mapped[float] = mapped_column(Float)  # in [0, 1]: 1 = maximally unsure


class ResponseScore(Base):
    __tablename__ = "response_scores"
    __table_args__ = (
        Index("ix_response_scores_mv_uncertainty", "model_version_id", "uncertainty", "response_id"),
        Index("ix_response_scores_mv_disagreement", "model_version_id", "disagreement", "response_id"),
        Index("ix_response_scores_mv_score", "model_version_id", "score", "response_id"),
    )

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), primary_key=True)
    # Computed by fractal_core.mil.semantics (one home of these rules) when the version is scored:
    score: Mapped[float] = mapped_column(Float)  # sentence scores aggregated as the model was trained
    uncertainty: Mapped[float] = mapped_column(Float)  # mean sentence uncertainty 1 - |2p - 1|
    disagreement: Mapped[float] = mapped_column(Float)  # |score - label (binary view)|; > 0.5 flips
    # 1 / 0: the gold sentence labels at scoring time agree / contradict the response label; NULL: none.
    consistent: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)


class ModelFile(Base):
    """A trained model's files (``model.json``, ``weights.pt``) kept in the store, so every worker of a shared
    store reads the same model; local copies are only a cache keyed by store id and model version id."""

    __tablename__ = "model_files"

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
