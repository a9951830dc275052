"""Read-only figures for the Models page: labelled sentence scores of a model version, calibration bins.

``db.repository`` has no bulk "scores with labels" read, so this module holds that one query (read-only, one
round trip); the rest is numpy over its result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, Row, and_, select
from sqlalchemy.orm import Session

from db.engine import run_read
from db.models import GOLD_SOURCES, CurrentLabel, Response, Sentence, SentenceScore


@dataclass(frozen=True)
class LabelledScores:
    """Scores (n,) of one version on sentences with a current label, the labels (n,) and their sources."""

    scores: np.ndarray
    labels: np.ndarray
    gold: np.ndarray  # (n,) bool: label source counts as gold (else imported from a file)


def labelled_scores(engine: Engine, dataset_id: int, model_version_id: int) -> LabelledScores:
    """Every labelled sentence of the dataset that ``model_version_id`` scored."""

    def work(session: Session) -> list[Row[tuple[float, int, str]]]:
        return session.execute(
            select(SentenceScore.score, CurrentLabel.label, CurrentLabel.source)
            .join(CurrentLabel, CurrentLabel.sentence_id == SentenceScore.sentence_id)
            .join(Sentence, Sentence.id == SentenceScore.sentence_id)
            .join(Response, and_(Response.id == Sentence.response_id, Response.dataset_id == dataset_id))
            .where(SentenceScore.model_version_id == model_version_id)
        ).all()  # type: ignore[return-value]

    rows = run_read(engine, work)
    if not rows:
        empty = np.zeros(0)
        return LabelledScores(empty, empty.astype(np.int64), empty.astype(bool))
    scores, labels, sources = zip(*rows, strict=True)
    return LabelledScores(
        np.asarray(scores, dtype=np.float64),
        np.asarray(labels, dtype=np.int64),
        np.isin(np.asarray(sources, dtype=object), GOLD_SOURCES),
    )


def reliability(scores: np.ndarray, positive: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Calibration table: per score bin (n_bins,), mean score, observed positive rate and count.

    Empty bins have NaN means and count 0. Vectorised with ``np.bincount``.
    """
    bins = np.minimum((np.clip(scores, 0, 1) * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(bins, weights=scores, minlength=n_bins) / count
        rate = np.bincount(bins, weights=positive.astype(np.float64), minlength=n_bins) / count
    centre = (np.arange(n_bins) + 0.5) / n_bins
    return {"centre": centre, "mean_score": mean_score, "positive_rate": rate, "count": count}


def expected_calibration_error(table: dict[str, np.ndarray]) -> float:
    """Count-weighted mean |positive rate - mean score| over non-empty bins (NaN when nothing is labelled)."""
    count = table["count"]
    if count.sum() == 0:
        return float("nan")
    ok = count > 0
    gap = np.abs(table["positive_rate"][ok] - table["mean_score"][ok])
    return float((gap * count[ok]).sum() / count.sum())
