"""The ``train`` job on a dataset of preference pairs: PrefBagLoss on the stored pairs (beside the responses' own
labels unless the payload says ``response_labels: "alone"``), every response scored, published as a model
version like any other (``app.job_train``); its metrics say what it was trained from, with counts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import Engine

from app.job_context import JobCancelled, JobContext
from app.job_embed import encoder_config, scratch_dir
from app.job_payloads import TrainPayload
from app.settings import AppSettings
from db.pairs_read import load_pairs
from db.repository import TrainingSet


def pair_indices(data: TrainingSet, pairs: list[Any]) -> list[tuple[int, int, float]]:
    """Each stored pair as (chosen index, rejected index, strength) into ``data.records``."""
    index = {int(rid): i for i, rid in enumerate(data.response_ids.tolist())}
    return [(index[p.chosen_id], index[p.rejected_id], float(p.strength)) for p in pairs]


def run_train_pairs(
    engine: Engine, settings: AppSettings, parsed: TrainPayload, data: TrainingSet, ctx: JobContext
) -> tuple[Any, dict[str, Any]]:
    """Train on the dataset's pairs; returns the library's result and the version's metrics (the caller adds
    ``gold_after``, the result's gold metrics made JSON-safe as for every version)."""
    from fractal_core.fitting.config import DEFAULT_RESPONSE_LABELS
    from fractal_core.fitting.pairs_pipeline import train_pairs_and_score
    from fractal_core.fitting.preference import STAGE_PREFERENCE
    from fractal_core.fitting.train import TrainingCancelled

    pairs = load_pairs(engine, parsed.dataset_id)
    mode = parsed.response_labels or DEFAULT_RESPONSE_LABELS
    labelled = sum(r.response_label == r.response_label for r in data.records)
    beside = f", beside {labelled} response labels" if mode == "beside" and labelled else ""
    ctx.log(f"training from {len(pairs)} preference pairs over {len(data.records)} responses{beside}")
    try:
        result = train_pairs_and_score(
            data.records,
            pair_indices(data, pairs),
            sentence_ids=data.sentence_ids,
            response_ids=data.response_ids,
            config=parsed.config,
            seed=parsed.seed,
            progress=ctx.training_callback((STAGE_PREFERENCE,), 0.02, 0.8),
            encoder=encoder_config(settings),
            scratch=scratch_dir(settings),
            response_labels=mode,
        )
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    used = int(result.model.trained_from_["labelled_responses"])
    metrics: dict[str, Any] = {
        # What the version was trained from: the pairs (with their sources), and the response labels beside
        # them when some responses carry one and the job did not leave them out.
        "trained_from": "preference_pairs+response_labels" if used else "preference_pairs",
        "pairs": len(pairs),
        "pair_sources": dict(Counter(p.source for p in pairs)),
        "response_labels": used,
        "response_labels_mode": mode,
        "responses": len(data.records),
        "resolved_method": result.model.resolved_method_,
        "gold_responses": result.n_gold_responses,
        "gold_sentences": result.n_gold_sentences,
        "first_error_rule": result.model.first_error_rule_.rule,
        "step_calibration": result.model.step_calibration_.to_dict(),
    }
    return result, metrics


__all__ = ["pair_indices", "run_train_pairs"]
