"""What each background job does. The worker (``app.worker``) claims a job and calls :func:`run_job`.

Job kinds and payloads (every id is a database id):

- ``train``: ``{"dataset_id", "method", "config": TrainConfig overrides, "seed"}`` (:class:`TrainPayload`,
  checked when the job is queued); with ``"scorer": "one_pass"`` and ``"train_layers"``, the token-level
  scorer is trained instead (``app.job_one_pass``), stored and activated the same way; with ``"joint": true``
  on a dataset of a group of criteria, one model is fitted for every criterion of the group and a version is
  published in each criterion's dataset (``app.job_train_joint``). Loads the dataset once
  (records, gold labels and ids), hands it to the library's one entry point
  (``fractal_core.fitting.pipeline.train_and_score``: embed once, train, score, summarise each response, measure the
  previous and the new model on the gold set, propose gold), stores what it returns under a new model version
  and only then activates it, if it is not worse than the active version on the current gold set beyond noise
  (else it waits for a person): until that last step the previously active version keeps serving the Review
  page, so a crash or a cancel never shows partial scores.
- ``score``: ``{"dataset_id"}``. Re-applies the active model's saved artifact to every response (for example
  after new responses were ingested) through ``fractal_core.fitting.pipeline.score_records``, as a new version,
  activated the same way.
- ``embed``: ``{"dataset_id"}``. Embeds every sentence and context window into the on-disk cache (queued after
  an import) so the next training job starts from cached embeddings.
- ``import``: ``{"path", "dataset", "format", "column_map", "label_map", "extra_columns", "segment_mode",
  "labels_as"}``: ingests a file (the log and result name the extra columns kept in meta or left out),
  then queues ``embed`` and ``score`` when the dataset already has an active model, else ``train``.
- ``export``: ``{"dataset_id", "format", "model_version", "human_only", "soft_labels"}``: writes an export file under FRACTAL_HOME/exports.

The job functions take an engine and plain values so they can run from the worker, the CLI or a test. Where they
live: progress and cancel plumbing in ``app.job_context``, payload checks in ``app.job_payloads``, the jobs
queued after an import in ``app.job_queue``, and the runners by kind in ``app.job_train`` (train, score; the
one-pass scorer's training in ``app.job_one_pass``, publishing a version in ``app.job_publish``),
``app.job_embed`` (embed) and ``app.job_files`` (import, export). This module dispatches a claimed job to its
runner and re-exports their names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from app.job_context import JobCancelled, JobContext
from app.job_embed import purge_scratch, run_embed, scratch_dir
from app.job_files import (
    EXPORT_INLINE_MAX_RESPONSES,
    EXPORT_SUFFIX,
    export_path,
    run_export,
    run_import,
)
from app.job_payloads import TrainPayload, train_config
from app.job_queue import FIRST_TRAINING, queue_after_import
from app.job_train import GOLD_QUEUE_SIZE, run_score, run_train
from app.settings import AppSettings
from db import repository as repo

JOB_KINDS: tuple[str, ...] = ("train", "score", "embed", "import", "export")
"""Kinds the worker runs."""


def run_job(engine: Engine, settings: AppSettings, job: repo.JobRow, ctx: JobContext) -> dict[str, Any]:
    """Run one claimed job to completion; returns its result. Raises on failure or :class:`JobCancelled`."""
    handlers: dict[str, Callable[[Engine, AppSettings, dict[str, Any], JobContext], dict[str, Any]]] = {
        "train": run_train,
        "score": run_score,
        "embed": run_embed,
        "import": run_import,
        "export": run_export,
    }
    handler = handlers.get(job.kind)
    if handler is None:
        raise ValueError(f"unknown job kind {job.kind!r}; this worker runs {', '.join(JOB_KINDS)}")
    return handler(engine, settings, dict(job.payload), ctx)


__all__ = [
    "EXPORT_INLINE_MAX_RESPONSES",
    "EXPORT_SUFFIX",
    "FIRST_TRAINING",
    "GOLD_QUEUE_SIZE",
    "JOB_KINDS",
    "JobCancelled",
    "JobContext",
    "TrainPayload",
    "export_path",
    "purge_scratch",
    "queue_after_import",
    "run_embed",
    "run_export",
    "run_import",
    "run_job",
    "run_score",
    "run_train",
    "scratch_dir",
    "train_config",
]
