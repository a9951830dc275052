"""One entry point for a training job and one for re-scoring: records in, typed arrays out.

    result = train_and_score(records, sentence_ids=ids, response_ids=rids, method="fractal", config=config)
    result.scores            # (N,) P(level >= 1), aligned with result.sentence_ids
    result.summaries         # per response (B,): aggregate score, uncertainty, disagreement, consistency
    result.gold_proposals    # per queue strategy: response ids to label next, best first

Every sentence and context window is embedded (or looked up in the on-disk cache) once per job; training,
scoring, the gold metrics and the gold proposals all run on that one ``BagSet`` through the library's fast
paths (``FractalModel.fit_prepared`` / ``predict_proba_bags`` / ``evaluate_bags``,
``selection.select_gold_bags``). The caller's ids (e.g. database ids) travel as arrays aligned with the
records' flattened sentences, never inside the records. The response figures come from
``fractal_core.mil.semantics`` with the bag variant the model was trained with.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import EncoderConfig, get_encoder
from fractal_core.embedding.features import embed_records
from fractal_core.evaluation.gold_queue import selection_reasons
from fractal_core.evaluation.selection import select_gold_bags
from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.criteria_model import CriteriaModel
from fractal_core.fitting.estimator import FractalModel, resolve_device, task_of
from fractal_core.fitting.train import ProgressFn
from fractal_core.mil import semantics

QUEUE_SIZE = 200
"""Responses proposed per strategy (``registry.QUEUE_STRATEGIES``) with each scoring."""


@dataclass(frozen=True)
class ScoredResponses:
    """Scores of every sentence and the figures of every response, aligned with the caller's ids.

    sentence_ids, scores, uncertainty: (N,) int64 / float64 / float64 in the records' flattened span order;
    response_ids (B,) int64 in record order, aligned with every array of ``summaries``; gold_proposals:
    strategy -> (k,) int64 response ids, best first, never a response that already has gold labels;
    gold_reasons: strategy -> one short reason per proposal (``gold_queue.selection_reasons``), same order.
    """

    sentence_ids: np.ndarray
    scores: np.ndarray
    uncertainty: np.ndarray
    response_ids: np.ndarray
    summaries: semantics.ResponseSummaries
    gold_proposals: dict[str, np.ndarray]
    gold_reasons: dict[str, list[str]]


@dataclass(frozen=True)
class TrainResult:
    """A fitted model, its scores on the training records, and what the job measured.

    gold_metrics / previous_gold_metrics: sentence and bag metrics of the new / the previous model on the
    responses with gold labels (empty when there are none, or no previous model); file_label_metrics: the new
    model on every current label including imported ones (empty unless they add labels to the gold ones).
    """

    model: FractalModel
    scored: ScoredResponses
    stages: tuple[str, ...]
    n_gold_responses: int
    n_gold_sentences: int
    gold_metrics: dict[str, float]
    previous_gold_metrics: dict[str, float]
    file_label_metrics: dict[str, float]


def check_ids(records: Sequence[ResponseRecord], sentence_ids: np.ndarray, response_ids: np.ndarray) -> None:
    n = sum(len(r.spans) for r in records)
    if sentence_ids.shape != (n,):
        raise ValueError(f"sentence_ids must be ({n},) for these records, got {sentence_ids.shape}")
    if response_ids.shape != (len(records),):
        raise ValueError(
            f"response_ids must be ({len(records)},) for these records, got {response_ids.shape}"
        )


def embed_job_records(
    records: Sequence[ResponseRecord],
    model: FractalModel | CriteriaModel,
    progress: ProgressFn | None,
    store: str,
) -> tuple[BagSet, str]:
    """The records' bags (embedded by ``model``'s encoder, on its config's device) with their sentence
    embeddings streamed into a float16 memory-mapped matrix under ``store`` (``features.embed_records``): a
    job's memory does not grow with the embeddings. Reports the ``embed`` stage to ``progress``."""
    encoder = get_encoder(model.encoder)
    device = resolve_device((model.config or TrainConfig()).device)
    on_embed = None
    if progress is not None:
        report = progress
        report(registry.STAGE_EMBED, 0.0, f"embedding {sum(len(r.spans) for r in records)} sentences")

        def on_embed(done: int, total: int) -> None:
            report(registry.STAGE_EMBED, done / max(total, 1), f"{done}/{total} sentences embedded")

    bags = embed_records(records, encoder, device=device, progress=on_embed, store=store)
    if progress is not None:
        progress(registry.STAGE_EMBED, 1.0, "embeddings ready")
    return bags, encoder.encoder_id


def _numbers(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def _labelled_bags(bags: BagSet, labels: torch.Tensor) -> BagSet | None:
    """The bags with at least one sentence label in ``labels`` (N,) (-1: none), carrying those labels."""
    ids = torch.unique(bags.bag_index[labels >= 0])
    if len(ids) == 0:
        return None
    return replace(bags, gold=labels).select(ids)


def _score(
    model: FractalModel,
    bags: BagSet,
    *,
    sentence_ids: np.ndarray,
    response_ids: np.ndarray,
    queue_size: int,
) -> ScoredResponses:
    proba = model.predict_proba_bags(bags)
    return scored_responses(
        (1 - proba[:, 0]).clamp(0.0, 1.0), bags, aggregation=model.aggregation_,
        config=model.config or TrainConfig(), sentence_ids=sentence_ids, response_ids=response_ids,
        queue_size=queue_size,
    )  # fmt: skip


def scored_responses(
    score: torch.Tensor,
    bags: BagSet,
    *,
    aggregation: str,
    config: TrainConfig,
    sentence_ids: np.ndarray,
    response_ids: np.ndarray,
    queue_size: int,
) -> ScoredResponses:
    """Response figures and gold proposals from any scorer's sentence scores ``score`` (N,) P(level >= 1) on
    ``bags`` (the bag variant and temperature from ``config``). Strategies that spread picks over the
    embeddings are left out when ``bags`` carry none (a token-level scorer's bags)."""
    flat = score.double().cpu().numpy()
    index = bags.bag_index.cpu().numpy()
    summaries = semantics.summarise(
        flat,
        index,
        bags.labels.double().cpu().numpy(),
        aggregation=aggregation,
        variant=config.bag_variant,
        temperature=config.lse_temperature,
        gold=bags.gold.cpu().numpy(),
    )
    already = torch.unique(bags.bag_index[bags.gold >= 0]).cpu()
    proposals: dict[str, np.ndarray] = {}
    reasons: dict[str, list[str]] = {}
    for name in registry.QUEUE_STRATEGIES:  # a handful of strategies, each vectorised over bags
        if registry.strategy(name).needs_embeddings and bags.sent_emb.shape[1] == 0:
            continue
        picks = select_gold_bags(
            bags,
            score.cpu(),
            k=queue_size,
            strategy=name,
            aggregation=aggregation,
            already=already,
            variant=config.bag_variant,
            sort=False,
        )
        proposals[name] = response_ids[picks.numpy()]
        reasons[name] = selection_reasons(
            score.cpu(),
            bags.bag_index.cpu(),
            bags.labels.cpu(),
            picks.tolist(),
            aggregation=aggregation,
            strategy=name,
            variant=config.bag_variant,
        )
    return ScoredResponses(
        sentence_ids=sentence_ids,
        scores=flat,
        uncertainty=semantics.uncertainty(flat),
        response_ids=response_ids,
        summaries=summaries,
        gold_proposals=proposals,
        gold_reasons=reasons,
    )


def _sentence_order(records: Sequence[ResponseRecord], order: np.ndarray) -> np.ndarray:
    """Flat sentence positions (N,) of the records taken in ``order`` (B,): position k of the reordered
    records' sentences is sentence ``result[k]`` of the records as given."""
    sizes = np.array([len(r.spans) for r in records], dtype=np.int64)
    counts = sizes[order]
    offset = (np.cumsum(sizes) - sizes)[order] - (np.cumsum(counts) - counts)
    return np.repeat(offset, counts) + np.arange(int(counts.sum()), dtype=np.int64)


def _restore_order(scored: ScoredResponses, order: np.ndarray, sentences: np.ndarray) -> ScoredResponses:
    """``scored`` computed on records taken in ``order`` (B,) / ``sentences`` (N,), back in the given order."""
    bag_back = np.empty_like(order)
    bag_back[order] = np.arange(len(order))
    sent_back = np.empty_like(sentences)
    sent_back[sentences] = np.arange(len(sentences))
    summaries = semantics.ResponseSummaries(
        *(getattr(scored.summaries, f)[bag_back] for f in semantics.ResponseSummaries.__dataclass_fields__)
    )
    return replace(
        scored,
        sentence_ids=scored.sentence_ids[sent_back],
        scores=scored.scores[sent_back],
        uncertainty=scored.uncertainty[sent_back],
        response_ids=scored.response_ids[bag_back],
        summaries=summaries,
    )


def train_and_score(
    records: Sequence[ResponseRecord],
    *,
    sentence_ids: np.ndarray | Sequence[int],
    response_ids: np.ndarray | Sequence[int],
    method: str = "fractal",
    config: TrainConfig | None = None,
    seed: int = 0,
    previous: FractalModel | None = None,
    file_labels: np.ndarray | None = None,
    queue_size: int = QUEUE_SIZE,
    progress: ProgressFn | None = None,
    encoder: EncoderConfig | None = None,
    scratch: str | Path | None = None,
) -> TrainResult:
    """Train ``method`` on ``records`` (their ``sentence_labels`` are the gold labels), score every sentence,
    summarise every response and propose the next responses to label.

    sentence_ids (N,) / response_ids (B,): the caller's ids, returned aligned with the scores. previous: the
    model this one replaces, measured on the same gold sentences. file_labels (N,): every current label,
    imported ones included (-1: none), for a second measurement. progress: ``(stage, fraction, message)``
    for the embedding step, then each training stage of ``registry.training_stages``; it may raise to cancel.
    encoder: the sentence encoder (``None``: the bundled one); the model keeps it, so re-scoring uses it too.
    scratch: where the embeddings file is made (``None``: the system's temporary directory); a caller that can
    be killed passes a directory it owns, to remove what a killed call left (``app.jobs.purge_scratch``).

    Memory: the sentence embeddings live in a float16 memory-mapped file for the duration of the call, written
    with the responses in the model's hold-out order (``FractalModel.holdout_order``), so the training and
    held-out bags are two ranges of it and nothing is copied or upcast beyond a minibatch or a chunk. The
    results come back in the records' order; the gold proposals are drawn over the hold-out order.
    """
    sids = np.asarray(sentence_ids, dtype=np.int64)
    rids = np.asarray(response_ids, dtype=np.int64)
    check_ids(records, sids, rids)
    aggregation, n_classes = task_of(records)
    config = config or TrainConfig()
    model = FractalModel(method, config=config, encoder=encoder, seed=seed)
    has_gold = any(r.sentence_labels is not None for r in records)
    stages = registry.training_stages(method, has_gold=has_gold, aggregation=aggregation, config=config)
    labels = None if file_labels is None else np.asarray(file_labels, dtype=np.int64)
    if labels is not None and labels.shape != sids.shape:
        raise ValueError(f"file_labels must be ({len(sids)},), got {labels.shape}")
    order = model.holdout_order(len(records))
    sentences = _sentence_order(records, order)
    with tempfile.TemporaryDirectory(prefix="fractal-embeddings-", dir=scratch) as store:
        result = _train_and_score(
            [records[i] for i in order],
            model,
            sentence_ids=sids[sentences],
            response_ids=rids[order],
            stages=stages,
            aggregation=aggregation,
            n_classes=n_classes,
            previous=previous,
            file_labels=None if labels is None else labels[sentences],
            queue_size=queue_size,
            progress=progress,
            store=store,
        )
    return replace(result, scored=_restore_order(result.scored, order, sentences))


def _train_and_score(
    records: Sequence[ResponseRecord],
    model: FractalModel,
    *,
    sentence_ids: np.ndarray,
    response_ids: np.ndarray,
    stages: tuple[str, ...],
    aggregation: str,
    n_classes: int,
    previous: FractalModel | None,
    file_labels: np.ndarray | None,
    queue_size: int,
    progress: ProgressFn | None,
    store: str,
) -> TrainResult:
    """:func:`train_and_score` on records already in the model's hold-out order."""
    bags, encoder_id = embed_job_records(records, model, progress, store)
    model.fit_prepared(
        bags,
        aggregation=aggregation,
        n_classes=n_classes,
        encoder_id=encoder_id,
        progress=progress,
        ordered_holdout=True,
    )
    return measure_and_score(
        model, bags, records, stages=stages, sentence_ids=sentence_ids, response_ids=response_ids,
        previous=previous, file_labels=file_labels, queue_size=queue_size,
    )  # fmt: skip


def measure_and_score(
    model: FractalModel,
    bags: BagSet,
    records: Sequence[ResponseRecord],
    *,
    stages: tuple[str, ...],
    sentence_ids: np.ndarray,
    response_ids: np.ndarray,
    previous: FractalModel | None,
    file_labels: np.ndarray | None,
    queue_size: int,
) -> TrainResult:
    """What a training job reports of a fitted ``model`` on the ``bags`` embedded from ``records`` (their gold
    in ``bags.gold``): the new and the ``previous`` model on the gold sentences, the new one on ``file_labels``
    (N,) when they add labels, and every sentence's score with the response figures and gold proposals."""
    encoder_id = model.encoder_id_
    gold = _labelled_bags(bags, bags.gold)
    n_gold_sentences = int((bags.gold >= 0).sum())
    after: dict[str, float] = {}
    before: dict[str, float] = {}
    if gold is not None:
        after = _numbers(model.evaluate_bags(gold))
        if previous is not None:
            # Same encoder: the same embeddings; another encoder embeds the gold responses its own way.
            if previous.encoder_id_ == encoder_id:
                before = _numbers(previous.evaluate_bags(gold))
            else:
                before = _numbers(previous.evaluate([r for r in records if r.sentence_labels is not None]))
    with_file: dict[str, float] = {}
    if file_labels is not None:
        labels = torch.as_tensor(file_labels).to(bags.device)
        labelled = _labelled_bags(bags, labels)
        if labelled is not None and int((labels >= 0).sum()) > n_gold_sentences:
            with_file = _numbers(model.evaluate_bags(labelled))
    return TrainResult(
        model=model,
        scored=_score(
            model, bags, sentence_ids=sentence_ids, response_ids=response_ids, queue_size=queue_size
        ),
        stages=stages,
        n_gold_responses=0 if gold is None else gold.n_bags,
        n_gold_sentences=n_gold_sentences,
        gold_metrics=after,
        previous_gold_metrics=before,
        file_label_metrics=with_file,
    )


def score_records(
    model: FractalModel,
    records: Sequence[ResponseRecord],
    *,
    sentence_ids: np.ndarray | Sequence[int],
    response_ids: np.ndarray | Sequence[int],
    queue_size: int = QUEUE_SIZE,
    progress: ProgressFn | None = None,
    scratch: str | Path | None = None,
) -> ScoredResponses:
    """Score ``records`` with a fitted ``model`` (e.g. after new responses arrived): the same scores,
    response figures and gold proposals as :func:`train_and_score`, without training (``scratch``: as there)."""
    sids = np.asarray(sentence_ids, dtype=np.int64)
    rids = np.asarray(response_ids, dtype=np.int64)
    check_ids(records, sids, rids)
    aggregation, _ = task_of(records)
    if aggregation != model.aggregation_:
        raise ValueError(f"the model was trained on {model.aggregation_} responses, these are {aggregation}")
    with tempfile.TemporaryDirectory(prefix="fractal-embeddings-", dir=scratch) as store:
        bags, _ = embed_job_records(records, model, progress, store)
        return _score(model, bags, sentence_ids=sids, response_ids=rids, queue_size=queue_size)


__all__ = [
    "QUEUE_SIZE",
    "ScoredResponses",
    "TrainResult",
    "check_ids",
    "embed_job_records",
    "measure_and_score",
    "score_records",
    "scored_responses",
    "train_and_score",
]
