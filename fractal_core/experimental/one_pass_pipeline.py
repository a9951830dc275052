"""The one-pass scorer as a training job: a dataset's records in, the frozen pipeline's outputs out (sentence
scores, response figures, gold proposals, gold metrics), and what such a job costs, estimated before it starts.

    result = train_and_score_one_pass(records, sentence_ids=ids, response_ids=rids, config=FinetuneConfig(...))
    cost = estimate_cost(records, config, rate)   # windows, tokens and the estimated seconds

The held-out responses (early stopping, calibration, the choice of ``train_layers``) are drawn like
``FractalModel``'s (``estimator.holdout_split`` with ``TrainConfig.valid_fraction``); the response figures and
gold proposals come from ``pipeline.scored_responses``, the gold metrics from ``evaluation_metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import resolve_model_path
from fractal_core.evaluation.scorer_metrics import evaluation_metrics
from fractal_core.experimental.finetune import FinetuneConfig, FinetuneResult, finetune
from fractal_core.experimental.finetune_config import TRAIN_LAYER_GRID
from fractal_core.experimental.one_pass_windows import build_pass_windows, causal_mode, record_bags
from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.estimator import holdout_split, task_of
from fractal_core.fitting.pipeline import QUEUE_SIZE, ScoredResponses, scored_responses
from fractal_core.fitting.train import ProgressFn

if TYPE_CHECKING:
    from fractal_core.fitting.estimator import FractalModel


@dataclass(frozen=True)
class PassRate:
    """Wall seconds per window: through the frozen layers once (``cache_s``), and per training epoch
    (``epoch_s``: the top layers forward and backward, the validation pass included); ``source`` says where
    the figures were measured."""

    cache_s: float
    epoch_s: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"cache_s": self.cache_s, "epoch_s": self.epoch_s, "source": self.source}


REFERENCE_RATE = PassRate(
    cache_s=25.5 / 44,
    epoch_s=78.9 / 44,
    source="benchmarks/one_pass_scorer.py on a shared 2-core CPU (44 windows, MiniLM, top 2 layers trained)",
)
"""The rate measured by the benchmark (BENCHMARKS.md, "One pass per response"), used until a job of this
store has measured its own (:func:`measured_rate`)."""


@dataclass(frozen=True)
class OnePassCost:
    """What a one-pass training job over ``responses`` will do and how long it should take at ``rate``."""

    responses: int
    tokens: int
    windows: int
    candidates: int  # trainings run (``train_layers`` = 0: one per count of TRAIN_LAYER_GRID)
    epochs: int  # the upper bound per training, over its one-pass stages (early stopping may stop sooner)
    rate: PassRate

    @property
    def seconds(self) -> float:
        """The estimate: every window through the frozen layers, then ``epochs`` epochs, per candidate."""
        return self.candidates * self.windows * (self.rate.cache_s + self.epochs * self.rate.epoch_s)


def estimate_cost(records: Sequence[ResponseRecord], config: FinetuneConfig, rate: PassRate) -> OnePassCost:
    """The windows ``records`` are cut into (tokenised exactly as training will) and the job's estimated cost."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config.encoder), local_files_only=True)
    data = build_pass_windows(records, tokenizer, config, causal=causal_mode(config, records))
    candidates = 1 if config.train_layers else len(TRAIN_LAYER_GRID)
    aggregation, _ = task_of(records)
    plan = registry.resolve(config.method, has_gold=True, aggregation=aggregation, config=config.bag)
    passes = sum(stage != registry.STAGE_TEACHER for stage in plan.stages)  # PsLab trains a second scorer
    return OnePassCost(
        len(records), int(data.lengths.sum()), data.n_windows, candidates, config.epochs * passes, rate
    )


def measured_rate(run: dict[str, Any] | None) -> PassRate | None:
    """The rate a finished one-pass job measured (its ``one_pass_run`` metrics), or None without one."""
    if not run or not run.get("windows") or not run.get("epochs_run"):
        return None
    windows, candidates = float(run["windows"]), float(run.get("candidates", 1))
    cache = float(run["cache_seconds"]) / (windows * candidates)
    epoch = max(float(run["train_seconds"]) - float(run["cache_seconds"]), 0.0) / (
        windows * run["epochs_run"]
    )
    return PassRate(cache, epoch, run.get("source", "measured by a training job"))


@dataclass(frozen=True)
class OnePassTrainResult:
    """A trained one-pass scorer, its scores on every record, and what the job measured (``run``: windows,
    seconds, the rate per window, the choice of ``train_layers``)."""

    model: FinetuneResult
    scored: ScoredResponses
    n_gold_responses: int
    n_gold_sentences: int
    gold_metrics: dict[str, float]
    previous_gold_metrics: dict[str, float]
    file_label_metrics: dict[str, float]
    run: dict[str, Any]


def gold_metrics(score: torch.Tensor, bags: BagSet, aggregation: str, n_classes: int) -> dict[str, float]:
    """``evaluation_metrics`` on the bags with a label in ``bags.gold`` (empty when none has one)."""
    ids = torch.unique(bags.bag_index[bags.gold >= 0])
    if len(ids) == 0:
        return {}
    keep = torch.isin(bags.bag_index, ids)
    p = score.double().clamp(1e-6, 1 - 1e-6)
    proba = torch.stack([1 - p, p], dim=1)[keep].float()
    out = evaluation_metrics(proba, bags.select(ids), aggregation=aggregation, n_classes=n_classes)
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float)}


def _previous_scores(
    previous: FractalModel | FinetuneResult, records: Sequence[ResponseRecord]
) -> torch.Tensor:
    return torch.from_numpy(np.concatenate(previous.predict(list(records))))


def train_and_score_one_pass(
    records: Sequence[ResponseRecord],
    *,
    sentence_ids: np.ndarray | Sequence[int],
    response_ids: np.ndarray | Sequence[int],
    config: FinetuneConfig,
    seed: int = 0,
    previous: FractalModel | FinetuneResult | None = None,
    file_labels: np.ndarray | None = None,
    queue_size: int = QUEUE_SIZE,
    progress: ProgressFn | None = None,
) -> OnePassTrainResult:
    """Train the one-pass scorer with ``config.method`` on ``records`` (their ``sentence_labels`` are the gold
    labels the method reads, + ``config.gold_weight``), score every sentence, summarise every response and
    propose responses to label:
    ``pipeline.train_and_score``'s outputs for the token-level scorer. ``previous``: the model it replaces,
    measured on the same gold responses; ``file_labels`` (N,): every current label (-1: none)."""
    sids = np.asarray(sentence_ids, dtype=np.int64)
    rids = np.asarray(response_ids, dtype=np.int64)
    if sids.shape != (sum(len(r.spans) for r in records),) or rids.shape != (len(records),):
        raise ValueError("sentence_ids / response_ids do not match the records")
    aggregation, n_classes = task_of(records)
    train_ids, valid_ids = holdout_split(len(records), config.bag.valid_fraction, seed)
    train = [records[i] for i in train_ids.tolist()]
    valid = [records[i] for i in valid_ids.tolist()] if valid_ids is not None else None
    model = finetune(
        train,
        valid,
        aggregation=aggregation,
        n_classes=n_classes,
        config=config,
        seed=seed,
        progress=progress,
    )
    score = torch.from_numpy(np.concatenate(model.predict(records, progress=progress)))
    bags = record_bags(records)
    gold = gold_metrics(score, bags, aggregation, n_classes)
    before: dict[str, float] = {}
    gold_records = [r for r in records if r.sentence_labels is not None]
    if previous is not None and gold_records:
        before = gold_metrics(
            _previous_scores(previous, gold_records), record_bags(gold_records), aggregation, n_classes
        )
    with_file: dict[str, float] = {}
    n_gold_sentences = int((bags.gold >= 0).sum())
    if file_labels is not None and int((np.asarray(file_labels) >= 0).sum()) > n_gold_sentences:
        with_file = gold_metrics(score, record_bags(records, file_labels), aggregation, n_classes)
    windows = build_pass_windows(records, model.tokenizer, model.config, causal=model.causal).n_windows
    trained_windows = build_pass_windows(train, model.tokenizer, model.config, causal=model.causal).n_windows
    run = {
        "route": "one_pass",
        "windows": windows,
        "train_windows": trained_windows,
        "candidates": len(model.layer_choice["valid_score"]) if model.layer_choice else 1,
        "epochs_run": model.epochs_run,
        "cache_seconds": model.cache_seconds,
        "train_seconds": model.seconds,
        "train_layers": model.config.train_layers,
        "layer_choice": model.layer_choice,
        "causal": model.causal,
        "best_epoch": model.best_epoch,
        "valid_score": model.valid_score,
        "device": str(model.device),
    }
    return OnePassTrainResult(
        model=model,
        scored=scored_responses(
            score,
            bags,
            aggregation=aggregation,
            config=config.bag,
            sentence_ids=sids,
            response_ids=rids,
            queue_size=queue_size,
        ),  # fmt: skip
        n_gold_responses=len(gold_records),
        n_gold_sentences=n_gold_sentences,
        gold_metrics=gold,
        previous_gold_metrics=before,
        file_label_metrics=with_file,
        run=run,
    )


def score_records_one_pass(
    model: FinetuneResult,
    records: Sequence[ResponseRecord],
    *,
    sentence_ids: np.ndarray | Sequence[int],
    response_ids: np.ndarray | Sequence[int],
    queue_size: int = QUEUE_SIZE,
    progress: ProgressFn | None = None,
) -> ScoredResponses:
    """Score ``records`` with a trained one-pass scorer: ``pipeline.score_records``' outputs."""
    aggregation, _ = task_of(records)
    if aggregation != model.aggregation:
        raise ValueError(f"the model was trained on {model.aggregation} responses, these are {aggregation}")
    score = torch.from_numpy(np.concatenate(model.predict(records, progress=progress)))
    return scored_responses(
        score, record_bags(records), aggregation=aggregation, config=model.config.bag,
        sentence_ids=np.asarray(sentence_ids, dtype=np.int64), response_ids=np.asarray(response_ids, dtype=np.int64),
        queue_size=queue_size,
    )  # fmt: skip


__all__ = [
    "REFERENCE_RATE",
    "OnePassCost",
    "OnePassTrainResult",
    "PassRate",
    "estimate_cost",
    "gold_metrics",
    "measured_rate",
    "score_records_one_pass",
    "train_and_score_one_pass",
]
