"""The store's own workings: the background job queue and facts about the store itself (its id)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, one_of, utcnow

JOB_STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")


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


class StoreInfo(Base):
    """Facts about the store itself; ``store_id`` (a UUID written when the schema is created) names it, so
    files kept outside the database (model caches, exports) can say which store they belong to."""

    __tablename__ = "store_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
