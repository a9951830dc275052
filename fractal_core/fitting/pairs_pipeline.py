"""The train job on preference pairs: learn sentence scores from the pairs (PrefBagLoss), beside the responses'
own labels by default, then score every response as :func:`~fractal_core.fitting.pipeline.train_and_score`
does, with the same figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import EncoderConfig
from fractal_core.fitting.config import DEFAULT_RESPONSE_LABELS, TrainConfig
from fractal_core.fitting.estimator import FractalModel, task_of
from fractal_core.fitting.pairs import preference_triples
from fractal_core.fitting.pipeline import QUEUE_SIZE, TrainResult, score_records
from fractal_core.fitting.preference import STAGE_PREFERENCE
from fractal_core.fitting.train import ProgressFn


def train_pairs_and_score(
    records: Sequence[ResponseRecord],
    pairs: Sequence[tuple[int, int, float]],
    *,
    sentence_ids: np.ndarray | Sequence[int],
    response_ids: np.ndarray | Sequence[int],
    config: TrainConfig | None = None,
    seed: int = 0,
    queue_size: int = QUEUE_SIZE,
    progress: ProgressFn | None = None,
    encoder: EncoderConfig | None = None,
    scratch: str | Path | None = None,
    response_labels: str = DEFAULT_RESPONSE_LABELS,
) -> TrainResult:
    """Fit PrefBagLoss on ``pairs`` of ``records`` (``response_labels="beside"``: with BagLoss on the responses
    that carry a label of their own, ``FractalModel.fit_preferences``) and score every sentence of ``records``.

    pairs: ``(chosen index, rejected index, strength)`` into ``records`` (strength in [0, 1]); sentence scores
    are P(level >= 1), so the rejected response is the one whose mean score should be higher. Gold sentence
    labels on ``records`` are measured (``gold_metrics``), not trained on. A response without a label of
    its own (NaN) disagrees with none: its disagreement is 0.
    """
    if not pairs:
        raise ValueError("no preference pairs to train on")
    aggregation, _ = task_of(records)
    model = FractalModel("fractal", config=config or TrainConfig(), encoder=encoder, seed=seed)
    model.fit_preferences(
        records,
        preference_triples(pairs),
        aggregation=aggregation,
        response_labels=response_labels,
        progress=progress,
    )
    scored = score_records(
        model, records, sentence_ids=sentence_ids, response_ids=response_ids, queue_size=queue_size,
        scratch=scratch,
    )  # fmt: skip
    # A response without a label of its own has nothing to disagree with: 0, not undefined (list pages sort by it).
    unlabelled = np.array([r.response_label != r.response_label for r in records], dtype=bool)
    summaries = scored.summaries
    disagreement = np.where(unlabelled, 0.0, summaries.disagreement)
    scored = replace(scored, summaries=replace(summaries, disagreement=disagreement))
    gold = [r for r in records if r.sentence_labels is not None]
    metrics: dict[str, float] = {}
    if gold:
        metrics = {
            k: float(v)
            for k, v in model.evaluate(gold).items()
            if isinstance(v, int | float) and k.startswith("instance")
        }
    return TrainResult(
        model=model,
        scored=scored,
        stages=(STAGE_PREFERENCE,),
        n_gold_responses=len(gold),
        n_gold_sentences=sum(sum(v is not None for v in r.sentence_labels or []) for r in gold),
        gold_metrics=metrics,
        previous_gold_metrics={},
        file_label_metrics={},
    )


__all__ = ["STAGE_PREFERENCE", "train_pairs_and_score"]
