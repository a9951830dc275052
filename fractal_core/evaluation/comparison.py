"""The method comparison behind ``fractal evaluate``, reusable from scripts.

Embeddings are computed once per split; every (seed, method) run then trains on the prepared bags. Gold
labels are hidden from every method except the ones that use them: ``hybrid``/``fractal`` see the gold
fraction's bags (train and validation alike), ``supervised`` sees all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import Encoder
from fractal_core.embedding.features import embed_records
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.estimator import FractalModel, resolve_device, task_of
from fractal_core.mil.reductions import segment_count, segment_mean

LabelView = Literal["native", "binary", "mean"]
LABEL_VIEWS: tuple[str, ...] = ("native", "binary", "mean")
USES_GOLD_FRACTION = {"hybrid", "fractal", "auto"}


@dataclass
class PreparedSplits:
    """Embedded train/valid/test bags and the task they share."""

    train: BagSet
    valid: BagSet | None
    test: BagSet
    aggregation: str
    n_classes: int
    encoder_id: str


def binarise(bags: BagSet) -> BagSet:
    """Binary view of ordinal bags: level >= 1 is positive (for max bags the bag label follows)."""
    gold = torch.where(bags.gold >= 0, (bags.gold >= 1).long(), bags.gold)
    return replace(bags, labels=(bags.labels >= 1).float(), gold=gold)


def proportion_view(bags: BagSet) -> BagSet:
    """LLP view derived from full sentence labels: each bag's label becomes the share of its sentences at level
    >= 1 (``mean`` aggregation) and the gold labels their binary view. Needs every sentence labelled."""
    counts = bags.sentence_counts()
    labelled = segment_count(bags.bag_index[bags.gold >= 0], bags.n_bags, torch.long)
    partial = int((labelled < counts).sum())
    if partial:
        raise ValueError(
            f"the mean label view needs every sentence labelled; {partial} of {bags.n_bags} responses are not"
        )
    positive = (bags.gold >= 1).float()
    labels = segment_mean(positive, bags.bag_index, bags.n_bags)
    return replace(bags, labels=labels.to(bags.labels.dtype), gold=positive.long())


def prepare_splits(
    splits: dict[str, list[ResponseRecord]],
    encoder: Encoder,
    *,
    label_view: LabelView = "native",
    device: str = "auto",
) -> PreparedSplits:
    """Embed ``splits`` ({train, valid?, test}) once."""
    if "test" not in splits:
        raise ValueError("evaluation needs a test split (test.jsonl)")
    aggregation, n_classes = task_of([r for part in splits.values() for r in part])
    torch_device = resolve_device(device)
    bags = {name: embed_records(part, encoder, device=torch_device) for name, part in splits.items() if part}
    if label_view == "binary":
        bags = {name: binarise(b) for name, b in bags.items()}
        n_classes = 2
    elif label_view == "mean":
        viewed = {}
        for name, b in bags.items():  # the three splits
            try:
                viewed[name] = proportion_view(b)
            except ValueError as err:
                raise ValueError(f"{name} split: {err}") from None
        bags, aggregation, n_classes = viewed, "mean", 2
    elif label_view != "native":
        raise ValueError(f"unknown label view {label_view!r}; choose one of {', '.join(LABEL_VIEWS)}")
    return PreparedSplits(
        train=bags["train"],
        valid=bags.get("valid"),
        test=bags["test"],
        aggregation=aggregation,
        n_classes=n_classes,
        encoder_id=encoder.encoder_id,
    )


def choose_gold_bags(bags: BagSet, fraction: float, seed: int) -> torch.Tensor:
    """Random gold budget: ids of ``round(fraction * B)`` bags among those with gold labels (paper protocol)."""
    labelled = torch.unique(bags.bag_index[bags.gold >= 0]).cpu()
    k = int(round(fraction * bags.n_bags))
    order = torch.randperm(labelled.shape[0], generator=torch.Generator().manual_seed(seed + 104729))
    return labelled[order[: min(k, labelled.shape[0])]].sort().values


def keep_gold_of(bags: BagSet, gold_bags: torch.Tensor | None) -> BagSet:
    """Hide every gold label outside ``gold_bags`` (None hides all)."""
    keep = torch.zeros(bags.n_bags, dtype=torch.bool, device=bags.device)
    if gold_bags is not None:
        keep[gold_bags.to(bags.device)] = True
    return replace(bags, gold=torch.where(keep[bags.bag_index], bags.gold, torch.full_like(bags.gold, -1)))


def run_one(
    prepared: PreparedSplits,
    method: str,
    *,
    seed: int,
    gold_fraction: float,
    config: TrainConfig,
    gold_bags: torch.Tensor | None = None,
    inspect: Callable[[FractalModel], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train ``method`` once and return its test metrics as a flat record (plus ``inspect(model)``'s entries)."""
    if method == "supervised":
        fraction = 1.0
        train, valid = prepared.train, prepared.valid
    elif method in USES_GOLD_FRACTION and gold_fraction > 0:
        fraction = gold_fraction
        chosen = gold_bags if gold_bags is not None else choose_gold_bags(prepared.train, gold_fraction, seed)
        train = keep_gold_of(prepared.train, chosen)
        valid = None
        if prepared.valid is not None:
            valid = keep_gold_of(prepared.valid, choose_gold_bags(prepared.valid, gold_fraction, seed))
    else:
        fraction = 0.0
        train = keep_gold_of(prepared.train, None)
        valid = keep_gold_of(prepared.valid, None) if prepared.valid is not None else None
    started, cpu_started = time.perf_counter(), time.process_time()
    model = FractalModel(method, config=config, seed=seed).fit_bags(
        train,
        valid,
        aggregation=prepared.aggregation,
        n_classes=prepared.n_classes,
        encoder_id=prepared.encoder_id,
    )
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    metrics = model.evaluate_bags(prepared.test)
    return {
        "method": method,
        "resolved_method": model.resolved_method_,
        "gold_fraction": fraction,
        "seed": seed,
        **metrics,
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,  # this process's CPU time: less sensitive than seconds to a loaded machine
        "epochs": {s["stage"]: s["best_epoch"] + 1 for s in model.history_},
        **({"selection": model.selection_} if getattr(model, "selection_", None) else {}),
        **(inspect(model) if inspect is not None else {}),
    }


def run_evaluation(
    prepared: PreparedSplits,
    methods: Sequence[str],
    *,
    seeds: Sequence[int],
    gold_fraction: float,
    config: TrainConfig,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every method for every seed; results in run order."""
    results = []
    for seed in seeds:
        for method in methods:
            record = run_one(prepared, method, seed=seed, gold_fraction=gold_fraction, config=config)
            results.append(record)
            if on_result is not None:
                on_result(record)
    return results
