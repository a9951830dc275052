"""Quality regression on a fixed slice of real data: a change that breaks learning fails CI.

The slice is the first 150 train / 40 valid / 80 test responses of DelucionQA (binary view: label >= 1), embedded
into a temporary FRACTAL_HOME (CI starts with an empty cache, so only the slice is embedded), then run through
``prepare_splits`` + ``run_one`` exactly as ``fractal evaluate`` does, with the library defaults and seeds 0, 1.

Thresholds sit below the values measured over seeds 0-4 (``python -m tests.fractal_core.test_quality_regression``
prints them) by a margin larger than the seed spread; the measured figures are in the comments. On 150 training
responses no method generalises at the sentence level to unseen DelucionQA answers (held-out sentence AUC is
0.42-0.51 for every method, Supervised included: the context is the question only), so the sentence checks are
transductive, as the app uses the model: the training responses' own sentences are scored against their hidden
gold labels, bag-blind and given the response label; held-out quality is checked at the bag level.

``auto`` (= ``fractal``) is checked against its own candidates given the label, and the proportion (LLP) view of
the same slice (label = share of a response's sentences at level >= 1, ``--label-view mean``) checks that
BagLoss's scores given the proportion beat broadcasting it (naive) and the cosine prior.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest

from tests.shared_data import shared

DATASET = os.environ.get("FRACTAL_REGRESSION_DATASET", "delucionqa")  # measure() can try others
SLICE = {"train": 150, "valid": 40, "test": 80}
SEEDS = (0, 1)
METHODS = ("naive", "prior_only", "bagloss", "priors", "pslab", "hybrid", "supervised")
GOLD = 0.2  # 30 gold responses: enough for the teacher to be meaningful on a 150-response slice
MEAN_METHODS = ("naive", "prior_only", "bagloss")  # on the proportion view (auto's LLP path: test_auto.py)
CONTEXT_METHODS = (
    "priors",
    "hybrid",
    "supervised",
)  # also run with the contextual scorer ("<method>+context")


def _prepare(home: Path, cache_dir: str | None = None):
    """Embed the slice (into ``home``'s cache, or ``cache_dir``) once; returns PreparedSplits."""
    os.environ["FRACTAL_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from fractal_core.data.io import read_records
    from fractal_core.embedding.encoder import EncoderConfig, get_encoder
    from fractal_core.evaluation.comparison import prepare_splits

    splits = {}
    for split, n in SLICE.items():
        lines = (shared(DATASET) / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        path = home / f"{split}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        splits[split] = read_records(path)
    encoder = get_encoder(EncoderConfig(cache_dir=cache_dir or str(home / "cache"), device="cpu"))
    return prepare_splits(
        splits, encoder, label_view="binary" if DATASET == "delucionqa" else "native", device="cpu"
    )


def _run(prepared, seeds) -> dict[str, dict[str, list[float]]]:
    """Metrics per method over ``seeds``: held-out test metrics (``run_one``), and for the no-gold methods the
    transductive ones (scores of the training responses themselves against their hidden gold labels, bag-blind
    and given the response label): what the app shows after training on a user's file."""
    from dataclasses import replace

    import torch

    from fractal_core.evaluation.comparison import keep_gold_of, proportion_view, run_one
    from fractal_core.evaluation.metrics import auc_roc
    from fractal_core.evaluation.selection import bag_posterior
    from fractal_core.fitting.config import TrainConfig
    from fractal_core.fitting.estimator import FractalModel

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny MLPs: one thread is fastest on a shared machine
    config = TrainConfig(device="cpu")
    contextual = replace(config, scorer="context")
    runs = [(m, m, config) for m in METHODS] + [(f"{m}+context", m, contextual) for m in CONTEXT_METHODS]
    train, valid = prepared.train, prepared.valid
    labelled = train.gold >= 0
    positive = (train.gold[labelled] >= 1).numpy()
    out: dict[str, dict[str, list[float]]] = {}

    def put(method: str, key: str, value: float) -> None:
        out.setdefault(method, {}).setdefault(key, []).append(float(value))

    try:
        for seed in seeds:
            for name, method, run_config in runs:
                r = run_one(prepared, method, seed=seed, gold_fraction=GOLD, config=run_config)
                put(name, "test_auc", r["instance_auc_roc"])
                put(name, "test_bag_auc", r["bag_auc_roc"])
            # No gold: fit exactly as run_one does, and keep the scores of the training sentences; the same
            # on the proportion view of the slice (no re-embedding: the view is derived from the gold labels).
            views = [
                (
                    "",
                    train,
                    valid,
                    prepared.aggregation,
                    ("naive", "bagloss", "priors", "pslab", "auto", "priors+context"),
                )
            ]
            views.append(("[mean]", *map(proportion_view, (train, valid)), "mean", MEAN_METHODS))
            for suffix, bags, held, aggregation, methods in views:
                for method in methods:
                    name, method = method, method.removesuffix("+context")
                    run_config = contextual if name.endswith("+context") else config
                    model = FractalModel(method, config=run_config, seed=seed).fit_bags(
                        keep_gold_of(bags, None),
                        keep_gold_of(held, None),
                        aggregation=aggregation,
                        n_classes=prepared.n_classes,
                    )
                    score = model.predict_bags(bags)
                    post = bag_posterior(score, bags.bag_index, bags.labels, aggregation=aggregation)
                    put(name + suffix, "train_auc", auc_roc(positive, score[labelled].numpy()))
                    put(name + suffix, "train_auc_given_y", auc_roc(positive, post[labelled].numpy()))
        return out
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # many fits (auto: three candidates); on a loaded 2-core machine 600 s is short
def test_quality_on_a_real_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path))
    got = _run(_prepare(tmp_path), SEEDS)
    mean = {m: {k: statistics.fmean(v) for k, v in d.items()} for m, d in got.items()}
    # Deterministic: the response-label broadcast (data loading, binarisation, the exact AUC).
    assert mean["naive"]["test_auc"] == pytest.approx(NAIVE_TEST_AUC, abs=1e-4)
    for (method, key), floor in THRESHOLDS.items():
        assert mean[method][key] >= floor, (method, key, mean[method][key], floor)
    # Conditioning on the response label must add to the label itself (naive), not only match it.
    for method in ("bagloss", "priors", "pslab", "auto", "priors+context"):
        assert mean[method]["train_auc_given_y"] >= mean["naive"]["train_auc_given_y"] + 0.01
    # auto never falls far below the candidates it chooses from (given the label). Its rule keeps the simplest
    # candidate whose held-out likelihood is within noise of the best, so it may give up a few thousandths against
    # the best of them (one CI run on another CPU: auto 0.891 against priors 0.904); what it must not do is land
    # below both.
    worst = min(mean[m]["train_auc_given_y"] for m in ("bagloss", "priors"))
    assert mean["auto"]["train_auc_given_y"] >= worst - AUTO_SLACK, (mean["auto"], worst)
    # Proportion labels: the learned scores given the proportion beat the proportion itself and the prior
    # (measured: naive 0.9681, prior-only 0.9555, BagLoss 0.9691-0.9692 in every seed).
    for baseline in ("naive[mean]", "prior_only[mean]"):
        assert mean["bagloss[mean]"]["train_auc_given_y"] >= mean[baseline]["train_auc_given_y"] + 0.0005, (
            baseline
        )


# Measured with seeds 0-4 on 2026-11-23 with the tuned defaults (`measure()`), twice: embedded afresh as in CI
# and from the shared cache (vectors from other batches differ in the last float16 bit, which moves training);
# comments give min / mean / max over both. Each floor sits below the minimum by at least the seed range of a
# 2-seed mean, and far above a broken method (0.5 for random scores; the naive 0.870 for the given-Y metric).
NAIVE_TEST_AUC = 0.8643
# auto given Y vs the worse of its two trained candidates, transductively. Seeds 0-1 embedded afresh on 2026-12-07:
# auto 0.8959, BagLoss 0.8963, priors 0.8996 (seeds 0-4 on 2026-11-23: auto 0.8982, priors 0.9013).
AUTO_SLACK = 0.01
THRESHOLDS: dict[tuple[str, str], float] = {
    # Transductive sentence AUC, no gold (the app's view of the responses it trained on).
    ("bagloss", "train_auc"): 0.74,  # 0.785 / 0.821 / 0.834
    ("priors", "train_auc"): 0.79,  # 0.830 / 0.847 / 0.861 (FRACTAL without gold under the defaults)
    ("pslab", "train_auc"): 0.67,  # 0.698 / 0.708 / 0.717
    ("bagloss", "train_auc_given_y"): 0.882,  # 0.892 / 0.897 / 0.901 (naive: 0.870)
    ("priors", "train_auc_given_y"): 0.886,  # 0.896 / 0.901 / 0.908
    ("pslab", "train_auc_given_y"): 0.893,  # 0.901 / 0.903 / 0.904
    # auto (= fractal; the one-standard-error rule, mostly BagLoss here), seeds 0-4 from the shared cache on
    # 2026-11-30: 0.892 / 0.898 / 0.903.
    ("auto", "train_auc_given_y"): 0.882,
    # Held-out bag AUC of AGG(sentence scores) on 80 unseen responses (chance: 0.5).
    ("bagloss", "test_bag_auc"): 0.55,  # 0.593 / 0.616 / 0.670
    ("priors", "test_bag_auc"): 0.57,  # 0.605 / 0.617 / 0.630
    ("pslab", "test_bag_auc"): 0.64,  # 0.676 / 0.681 / 0.688
    ("hybrid", "test_bag_auc"): 0.58,  # 0.624 / 0.674 / 0.707
    ("supervised", "test_bag_auc"): 0.57,  # 0.605 / 0.636 / 0.664
    # The contextual scorer (TrainConfig.scorer="context"; bidirectional here), measured fresh on 2026-11-30.
    ("priors+context", "train_auc"): 0.72,  # 0.759 / 0.782 / 0.801
    ("priors+context", "train_auc_given_y"): 0.893,  # 0.901 / 0.907 / 0.911
    ("priors+context", "test_bag_auc"): 0.67,  # 0.701 / 0.709 / 0.716
    ("hybrid+context", "test_bag_auc"): 0.63,  # 0.667 / 0.704 / 0.725
    ("supervised+context", "test_bag_auc"): 0.65,  # 0.679 / 0.689 / 0.704
}


def measure() -> None:
    """Print every method's metrics over seeds 0-4 on the slice, embedded afresh as in CI (or, with
    FRACTAL_REGRESSION_SHARED_CACHE=1, from the shared cache, whose vectors came from other batches)."""
    import tempfile

    from fractal_core.embedding.encoder import default_cache_dir

    with tempfile.TemporaryDirectory() as home:
        cache = str(default_cache_dir()) if os.environ.get("FRACTAL_REGRESSION_SHARED_CACHE") else None
        got = _run(_prepare(Path(home), cache), range(5))
    for method, d in got.items():
        for key, values in d.items():
            print(
                f"{method:11s} {key:17s} min {min(values):.4f} mean {statistics.fmean(values):.4f} "
                f"max {max(values):.4f}  {[round(v, 4) for v in values]}"
            )


if __name__ == "__main__":
    measure()
