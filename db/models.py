"""The store's schema (SQLAlchemy 2 typed ORM). Alembic revisions in ``db/migrations`` build exactly this.

Tables and why they exist:

- ``datasets``: a named collection of responses; remembers its label kind and the active model version.
- ``ingested_files``: one row per file ingested (sha256), so the same file is never ingested twice.
- ``responses`` (bags) and ``sentences`` (instances, with character offsets into ``responses.text``).
- ``model_versions``: one training run each (method, config, metrics, artifact, status, parent).
- ``sentence_scores``: one score per (model version, sentence); ``response_scores``: the per-response
  summary of those scores (aggregate score, uncertainty, disagreement with the bag label), written once when
  a version finishes, so that list pages sort on an index instead of aggregating 100k rows per request.
- ``label_events``: the append-only label history (who, when, old, new, source); ``current_labels`` is its
  current view, maintained in the same transaction as every event.
- ``jobs``: the background work queue; ``users``: names, roles and password hashes for later auth.

Times are timezone-aware UTC. Labels are integers (0/1 binary, 0..C-1 ordinal); a cleared label is a
``label_events.new_label`` of NULL and no ``current_labels`` row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names: Alembic batch mode on SQLite needs them to alter tables later.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

LABEL_SOURCES: tuple[str, ...] = ("gold", "reviewed", "imported")
# Sources that count as gold for training (hybrid prior) and for the gold budget.
GOLD_SOURCES: tuple[str, ...] = ("gold", "reviewed")
JOB_STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
MODEL_STATUSES: tuple[str, ...] = ("training", "ready", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores no zone and returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # "binary" | "ordinal" | "proportion": fixed by the first file ingested; later files must agree.
    label_kind: Mapped[str] = mapped_column(String(16))
    # Highest response label seen: ordinal labels are divided by it to compare with scores in [0, 1].
    max_label: Mapped[float] = mapped_column(Float, default=1.0)
    gold_target: Mapped[float] = mapped_column(Float, default=0.1)
    active_model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", use_alter=True, ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IngestedFile(Base):
    __tablename__ = "ingested_files"
    __table_args__ = (UniqueConstraint("dataset_id", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
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
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    file_id: Mapped[int | None] = mapped_column(ForeignKey("ingested_files.id", ondelete="SET NULL"))
    external_id: Mapped[str] = mapped_column(String(512))
    context: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    response_label: Mapped[float] = mapped_column(Float)
    aggregation: Mapped[str] = mapped_column(String(8))
    label_kind: Mapped[str] = mapped_column(String(16))
    split: Mapped[str | None] = mapped_column(String(32))
    task: Mapped[str | None] = mapped_column(String(128))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_sentences: Mapped[int] = mapped_column(Integer)
    # Current gold-source labels in this response; kept in step with current_labels by every label write.
    n_gold: Mapped[int] = mapped_column(Integer, default=0, server_default=sql_text("0"))


class Sentence(Base):
    __tablename__ = "sentences"
    __table_args__ = (UniqueConstraint("response_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)  # character offset into responses.text
    end: Mapped[int] = mapped_column(Integer)  # exclusive
    text: Mapped[str] = mapped_column(Text)
    segmenter_version: Mapped[str] = mapped_column(String(64))


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

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
    # Computed by fractal_core.semantics (one home of these rules) when the version is scored:
    score: Mapped[float] = mapped_column(Float)  # sentence scores aggregated as the model was trained
    uncertainty: Mapped[float] = mapped_column(Float)  # mean sentence uncertainty 1 - |2p - 1|
    disagreement: Mapped[float] = mapped_column(Float)  # |score - label (binary view)|; > 0.5 flips
    # 1 / 0: the gold sentence labels at scoring time agree / contradict the response label; NULL: none.
    consistent: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)


class LabelEvent(Base):
    __tablename__ = "label_events"
    __table_args__ = (
        Index("ix_label_events_annotator_id", "annotator", "id"),
        Index("ix_label_events_response_id", "response_id", "id"),
        Index("ix_label_events_sentence_id", "sentence_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # One user action (a single label, a whole response, an undo) shares one action id.
    action_id: Mapped[str] = mapped_column(String(36))
    sentence_id: Mapped[int] = mapped_column(ForeignKey("sentences.id", ondelete="CASCADE"))
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    annotator: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    old_label: Mapped[int | None] = mapped_column(Integer)
    old_source: Mapped[str | None] = mapped_column(String(16))
    old_annotator: Mapped[str | None] = mapped_column(String(128))
    new_label: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set on an undo event: the event it reverted. Set on a reverted event: the undo that reverted it.
    undoes_id: Mapped[int | None] = mapped_column(ForeignKey("label_events.id"))
    undone_by_id: Mapped[int | None] = mapped_column(ForeignKey("label_events.id"))


class CurrentLabel(Base):
    __tablename__ = "current_labels"
    __table_args__ = (
        Index("ix_current_labels_response_id", "response_id"),
        Index("ix_current_labels_annotator_response", "annotator", "response_id"),
    )

    sentence_id: Mapped[int] = mapped_column(ForeignKey("sentences.id", ondelete="CASCADE"), primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    label: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    annotator: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[int] = mapped_column(ForeignKey("label_events.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_id", "state", "id"),
        # At most one live job per idempotency key: two clicks on "Train" make one job, even when racing.
        Index(
            "uq_jobs_live_idempotency_key",
            "idempotency_key",
            unique=True,
            sqlite_where=sql_text("state IN ('queued', 'running')"),
            postgresql_where=sql_text("state IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # in [0, 1]
    message: Mapped[str] = mapped_column(Text, default="")
    log: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32), default="annotator")  # "annotator" | "lead" | "admin"
    password_hash: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
