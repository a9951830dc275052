"""The jobs queued for new responses (embed, then score with the active model or train the first one)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from app.job_payloads import TrainPayload
from db import repository as repo

FIRST_TRAINING: dict[str, Any] = {"method": "fractal", "config": {}, "seed": 0}
"""The training queued for a dataset that has no model yet: the recommended method with library defaults."""


def queue_after_import(
    engine: Engine, dataset_id: int, *, bundled_embeddings: bool = False
) -> list[repo.JobRow]:
    """Follow-up work for new responses: embed them now, then re-score with the active model if there is one,
    or train (and score) the dataset's first model if there is none, so a first upload ends in a scored Review
    without anyone starting a job. The training job shares the Train page's key (``train:<dataset>``): a click
    there while it waits returns this job instead of starting a second one.

    ``bundled_embeddings``: the dataset is the bundled demo, whose precomputed vectors the embed job loads first.
    """
    payload: dict[str, Any] = {"dataset_id": dataset_id}
    if bundled_embeddings:
        payload["bundled_embeddings"] = True
    queued = [repo.create_job(engine, "embed", payload, idempotency_key=f"embed:{dataset_id}")]
    if repo.active_model_version(engine, dataset_id) is not None:
        queued.append(
            repo.create_job(
                engine, "score", {"dataset_id": dataset_id}, idempotency_key=f"score:{dataset_id}"
            )
        )
    else:
        queued.append(
            repo.create_job(
                engine,
                "train",
                TrainPayload.parse({"dataset_id": dataset_id, **FIRST_TRAINING}).to_dict(),
                idempotency_key=f"train:{dataset_id}",
            )
        )
    return queued
