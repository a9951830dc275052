"""The method comparison behind ``fractal evaluate``, reusable from scripts.

Embeddings are computed once per split; every (seed, method) run then trains on the prepared bags. Gold
labels are hidden from every method except the ones that use them: ``hybrid``/``fractal`` see the gold
fraction's bags (train and validation alike), ``supervised`` sees all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import Encoder
from fractal_core.embedding.features import embed_records
from fractal_core.evaluation.metrics import first_error_f1, tune_first_error_threshold
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.estimator import FractalModel, resolve_device, task_of
from fractal_core.fitting.first_error import choose_first_error_rule, default_rule, rule_top1
from fractal_core.fitting.methods import first_error_annotated
from fractal_core.mil.reductions import segment_count, segment_mean
from fractal_core.mil.reviewer import FIRST_ERROR_RULES

LabelView = Literal["native", "binary", "mean"]
LABEL_VIEWS: tuple[str, ...] = ("native", "binary", "mean")
USES_GOLD_FRACTION = {"hybrid", "hazard", "fractal", "auto"}


@dataclass
class PreparedSplits:
    """Embedded train/valid/test bags and the task they share; test_groups: name -> the group of each test bag
    (B,) for figures reported per group (the records' ``task``, and ``meta["subset"]`` where records carry one,
    as ProcessBench's four sources do)."""

    train: BagSet
    valid: BagSet | None
    test: BagSet
    aggregation: str
    n_classes: int
    encoder_id: str
    test_groups: dict[str, list[str | None]] = field(default_factory=dict)


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
        test_groups=_groups(splits["test"]),
    )


def _groups(records: Sequence[ResponseRecord]) -> dict[str, list[str | None]]:
    """The per-record groups the first-error figures are broken down by: ``task`` and ``meta["subset"]``,
    each only when some record carries it."""
    out: dict[str, list[str | None]] = {}
    tasks = [r.task for r in records]
    if any(t is not None for t in tasks):
        out["task"] = tasks
    subsets = [r.meta.get("subset") if isinstance(r.meta.get("subset"), str) else None for r in records]
    if any(v is not None for v in subsets):
        out["subset"] = subsets
    return out


def first_error_report(model: FractalModel, prepared: PreparedSplits) -> dict[str, Any]:
    """First-error figures on test for ``max`` data with a validation split, everything tuned on valid's gold
    labels (the evaluation protocol: whatever gold the method itself saw) and applied once to test:

    - ``fkey_top1_<rule>``: first-error top-1 of each F-key rule (``calibrated_mode`` with the Platt map fitted
      on valid), ``fkey_rule`` the rule chosen on valid and ``fkey_top1`` its top-1; ``fkey_rule_model`` the
      rule the model chose on the gold it saw (what the app's F key uses);
    - for first-error data (``methods.first_error_annotated``: nothing labelled after a first error),
      ProcessBench's official F1 (``first_error_f1``, with ``_error_acc`` / ``_correct_acc``, the threshold
      tuned on valid and ``_by_task`` / ``_by_subset`` where records carry them).
    """
    valid, test = prepared.valid, prepared.test
    if prepared.aggregation != "max" or valid is None or not bool((valid.gold >= 1).any()):
        return {}
    out = first_error_figures(
        model.predict_bags(valid), valid, model.predict_bags(test), test,
        default=default_rule(getattr(model, "resolved_method_", None)), test_groups=prepared.test_groups,
    )  # fmt: skip
    own = getattr(model, "first_error_rule_", None)
    if "fkey_rule" in out:
        out["fkey_rule_model"] = own.rule if own is not None else out["fkey_rule"]
    return out


def first_error_figures(
    valid_scores: torch.Tensor,
    valid: BagSet,
    test_scores: torch.Tensor,
    test: BagSet,
    *,
    default: str,
    test_groups: dict[str, list[str | None]] | None = None,
) -> dict[str, Any]:
    """:func:`first_error_report`'s figures from any scorer's P(level >= 1) (N,) of the valid and test steps
    of ``max`` bags (the frozen models' and the one-pass scorer's alike): the F-key rule chosen on valid
    (``default`` when valid cannot choose) and each rule's top-1 on test; the official F1 with its threshold
    tuned on valid, for first-error data."""
    if not bool((valid.gold >= 1).any()):
        return {}
    arrays = {}
    for name, bags, scores in (("valid", valid, valid_scores), ("test", test, test_scores)):
        arrays[name] = (
            scores.double().cpu().numpy(),
            bags.gold.cpu().numpy(),
            bags.bag_index.cpu().numpy(),
            bags.labels.double().cpu().numpy(),
        )
    choice = choose_first_error_rule(*arrays["valid"], aggregation="max", default=default)
    out: dict[str, Any] = {
        f"fkey_top1_{rule}": rule_top1(
            *arrays["test"], aggregation="max", rule=rule, calibration=choice.calibration
        )
        for rule in FIRST_ERROR_RULES
    }
    out["fkey_rule"] = choice.rule
    out["fkey_top1"] = out[f"fkey_top1_{choice.rule}"]
    if first_error_annotated(test):
        score, gold, index, _ = arrays["test"]
        v_score, v_gold, v_index, _ = arrays["valid"]
        threshold = tune_first_error_threshold(v_gold, v_score, v_index, valid.n_bags)
        if np.isfinite(threshold):
            f1 = first_error_f1(gold, score, index, test.n_bags, threshold=threshold, groups=test_groups)
            out.update({("first_error_f1" if k == "f1" else f"first_error_f1_{k}"): v for k, v in f1.items()})
            out["first_error_f1_threshold"] = threshold
    return out


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
    metrics.update(first_error_report(model, prepared))
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
