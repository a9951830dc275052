"""The store's schema (SQLAlchemy 2 typed ORM). Alembic revisions in ``db/migrations`` build exactly this.

Tables and why they exist:

- ``datasets``: a named collection of responses; remembers its label kind and the active model version.
- ``ingested_files``: one row per file ingested (sha256), so the same file is never ingested twice; also the
  import's state while it is being staged (see :mod:`db.ingest`).
- ``responses`` (bags) and ``sentences`` (instances, with character offsets into ``responses.text``).
- ``model_versions``: one training run each (method, config, metrics, artifact, status, parent).
- ``sentence_scores``: one score per (model version, sentence); ``response_scores``: the per-response
  summary of those scores (aggregate score, uncertainty, disagreement with the bag label), written once when
  a version finishes, so that list pages sort on an index instead of aggregating 100k rows per request.
- ``label_events``: the append-only label history (who, when, old, new, source, to whom the new label is
  attributed; triggers refuse UPDATE and DELETE) of the shared view and of each overlap annotator's own
  labels; ``current_labels`` (shared view) and ``annotations`` (own labels) are its current views, written in
  the same transaction as every event. Sources: :mod:`db.sources`.
- ``jobs``: the background work queue.
- ``users`` (names, roles, argon2 password hashes), ``user_sessions`` (signed-in browsers, token hashes,
  expiry) and ``sign_in_failures`` (wrong passwords per user name and client, for the sign-in slowdown).

Times are timezone-aware UTC. Labels are integers (0/1 binary, 0..C-1 ordinal); a cleared label is a
``label_events.new_label`` of NULL and no ``current_labels`` row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# The label vocabulary lives in db.sources; re-exported here for the readers that import it with the tables.
from db.sources import GOLD_SOURCES as GOLD_SOURCES
from db.sources import HUMAN_SOURCES as HUMAN_SOURCES
from db.sources import LABEL_SOURCES as LABEL_SOURCES
from fractal_core.data.records import AGGREGATIONS, LABEL_KINDS, MAX_ID_CHARS, MAX_LABEL, MAX_TASK_CHARS

# Deterministic constraint names: Alembic batch mode on SQLite needs them to alter tables later.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
MODEL_STATUSES: tuple[str, ...] = ("training", "ready", "failed")
FILE_FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
SEGMENT_MODES: tuple[str, ...] = ("sentences", "steps")
# An import is staged (written chunk by chunk into a hidden dataset of its own) until it is published.
IMPORT_STATES: tuple[str, ...] = ("staging", "published")


def one_of(column: str, values: tuple[str, ...], *, nullable: bool = False) -> str:
    """SQL for a CHECK that ``column`` holds one of ``values`` (or NULL)."""
    listed = ", ".join(f"'{v}'" for v in values)
    return f"{column} IS NULL OR {column} IN ({listed})" if nullable else f"{column} IN ({listed})"


def label_in_range(column: str) -> str:
    return f"{column} IS NULL OR ({column} >= 0 AND {column} <= {MAX_LABEL})"


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
    __table_args__ = (
        CheckConstraint(one_of("label_kind", LABEL_KINDS), name="label_kind"),
        CheckConstraint(f"max_label >= 0 AND max_label <= {MAX_LABEL}", name="max_label"),
        CheckConstraint("gold_target >= 0 AND gold_target <= 1", name="gold_target"),
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
    response_label: Mapped[float] = mapped_column(Float)
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
        CheckConstraint(one_of("state", JOB_STATES), name="state"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
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


ROLES: tuple[str, ...] = ("annotator", "reviewer", "admin")
"""Roles in increasing order of rights: each role may do everything the roles before it may."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32), default="annotator")  # one of ROLES
    # argon2id hash (never the password); NULL means the account cannot sign in.
    password_hash: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Set for a one-time password (the first `fractal serve`, `fractal users passwd --one-time`): the first
    # sign-in must replace it, and it stops working at ``password_expires_at`` if nobody used it by then.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    password_expires_at: Mapped[datetime | None] = mapped_column()


class StoreInfo(Base):
    """Facts about the store itself; ``store_id`` (a UUID written when the schema is created) names it, so
    files kept outside the database (model caches, exports) can say which store they belong to."""

    __tablename__ = "store_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


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


class UserSession(Base):
    """A signed-in browser: the random token lives only in the browser; the store keeps its SHA-256."""

    __tablename__ = "user_sessions"
    __table_args__ = (Index("ix_user_sessions_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()  # sign-out


class SignInFailure(Base):
    """Wrong passwords for one user name from one client (an address, or "local"), since the last success.

    The sign-in slowdown reads it three ways: per (user, client), per client over every name, and per user
    over the clients that failed in the last minute (see :mod:`db.accounts`)."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_client_key", "client_key"),)

    user_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    client_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(default=utcnow)


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
