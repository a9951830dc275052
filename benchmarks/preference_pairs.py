"""Step colouring learned from preference pairs, alone or beside the responses' own labels, given the preference
and given the label, against the cosine prior and the broadcast.

Usage (DIR holds one folder per dataset with train/valid/test.jsonl):
    nice .venv/bin/python benchmarks/preference_pairs.py [--data DIR] [--datasets processbench,delucionqa]
        [--seeds 0,1,2]

The pairwise view of a labelled split: every two responses to the same question (same ``context``) whose
response labels differ make a pair; the one with the lower label (fewer or milder errors) is preferred, strength
1. Three fits per seed on the train split, each early-stopped and read out on the valid split, none seeing a
sentence label (``FractalModel``, library defaults):

- ``pairs``: PrefBagLoss alone (``response_labels="alone"``);
- ``pairs+labels``: PrefBagLoss beside BagLoss on the same paired responses' own labels, balanced
  (``response_labels="beside"``, ``fitting.preference``);
- ``labels``: plain BagLoss on those labels alone (method ``bagloss``).

The default of a pairs dataset (``config.DEFAULT_RESPONSE_LABELS``) is chosen on valid only, over both readings
(:func:`choose`): ``chosen_on_valid`` per dataset; test is measured once per configuration. Scores are read as
the product reads them (through the step calibration where it was chosen for the given-label view).

Measured on the test split's pairs, over the sentences of both responses of every pair (a response in several
pairs counts once per pair, as Review shows it once per pair; gold ``null`` steps are left out; level >= 1 is
positive):

- ``auc_given_preference``: what Review colours on a pair, P(level_i >= 1 | the rejected response has more
  erroneous sentences than the chosen one) under the model's independent sentence probabilities
  (``mil.preference_posterior``): the preference's analogue of the given-label view of a labelled response;
- ``auc_given_label``: the given-label view (``mil.posterior``) of each paired response under its own label,
  once per response;
- ``auc_marginal``: the model's scores without the preference;
- ``auc_cosine_prior``: the cosine prior alone, t_i = (1 + cos(context, sentence)) / 2, and
  ``auc_cosine_given_preference``: the same posterior with t_i as the sentence probabilities;
- ``auc_broadcast``: the preference broadcast to every sentence (rejected 1, chosen 0);
- ``auc_constant_given_preference``: the same posterior with one constant sentence probability (the model's
  mean score): what the conditioning alone gives (shorter losing responses concentrate the blame).

Writes ``benchmarks/results/preference_pairs.json`` and prints a markdown table (mean ± sd over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_option import add_data_option  # noqa: E402
from quality_common import fmt, machine, stats  # noqa: E402

from fractal_core.data.io import num_classes, read_split_dir  # noqa: E402
from fractal_core.data.records import ResponseRecord  # noqa: E402
from fractal_core.embedding.encoder import Encoder, get_encoder  # noqa: E402
from fractal_core.embedding.features import embed_records  # noqa: E402
from fractal_core.evaluation.metrics import auc_roc  # noqa: E402
from fractal_core.fitting.bags import BagSet  # noqa: E402
from fractal_core.fitting.config import TrainConfig  # noqa: E402
from fractal_core.fitting.estimator import FractalModel, task_of  # noqa: E402
from fractal_core.fitting.pairs import colour_pairs, pair_bags  # noqa: E402
from fractal_core.mil.posterior import posterior_scores  # noqa: E402
from fractal_core.mil.preference_posterior import preference_posterior  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def label_pairs(records: list[ResponseRecord]) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) record indices (K,) of every two responses to one context with different labels."""
    by_context: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_context[record.context].append(i)
    chosen, rejected = [], []
    for members in by_context.values():
        for a, i in enumerate(members):
            for j in members[a + 1 :]:
                yi, yj = float(records[i].response_label), float(records[j].response_label)
                if yi != yj:
                    chosen.append(i if yi < yj else j)
                    rejected.append(j if yi < yj else i)
    return torch.tensor(chosen, dtype=torch.long), torch.tensor(rejected, dtype=torch.long)


@dataclass(frozen=True)
class Split:
    """One split's paired responses (each once, embedded) and its pairs (K, 2) [chosen, rejected] into them."""

    bags: BagSet
    index: torch.Tensor
    aggregation: str

    @property
    def paired(self) -> BagSet:
        """The pairs laid out for the preference loss and the colouring (chosen, rejected), strength 1."""
        return pair_bags(self.bags, self.index[:, 0], self.index[:, 1], torch.ones(len(self.index)))


def pairwise(records: list[ResponseRecord], encoder: Encoder) -> Split:
    """The split's pairs; only the responses that are in some pair are embedded (their labels kept)."""
    chosen, rejected = label_pairs(records)
    used, position = torch.unique(torch.cat([chosen, rejected]), return_inverse=True)
    kept = [records[i] for i in used.tolist()]
    bags = embed_records(kept, encoder, device="cpu")
    k = len(chosen)
    aggregation, _ = task_of(kept)
    return Split(bags, torch.stack([position[:k], position[k:]], 1), aggregation)


def _auc(gold: np.ndarray, score: np.ndarray) -> float:
    mask = gold >= 0
    return auc_roc(gold[mask] >= 1, score[mask])


def measure(test: BagSet, logp: torch.Tensor) -> dict[str, float]:
    """Every AUC of the module docstring on the test pairs, from the model's log-probabilities ``logp`` (N, C)."""
    gold = test.gold.cpu().numpy()
    cosine = test.with_cosine_target().cos_target
    assert cosine is not None
    cos_logp = torch.stack([torch.log1p(-cosine.double().clamp(max=1 - 1e-9)), cosine.double().log()], 1)
    strength = torch.ones(test.n_bags // 2, dtype=torch.float64)
    rejected = (test.bag_index % 2 == 1).double().numpy()
    mean = float(logp.exp()[:, 1:].sum(1).mean())
    constant = torch.tensor([[1.0 - mean, mean]], dtype=torch.float64).expand(test.n_sentences, 2)
    return {
        "auc_given_preference": _auc(gold, colour_pairs(logp, test).numpy()),
        "auc_marginal": _auc(gold, logp.exp()[:, 1:].sum(1).double().numpy()),
        "auc_cosine_prior": _auc(gold, cosine.double().numpy()),
        "auc_cosine_given_preference": _auc(
            gold, preference_posterior(cos_logp, test.bag_index, strength).numpy()
        ),
        "auc_broadcast": _auc(gold, rejected),
        # How much of the colouring is the conditioning alone: one constant score (the model's mean) given the
        # preference ranks sentences only by the size of their response and which side lost.
        "auc_constant_given_preference": _auc(
            gold, preference_posterior(constant.log(), test.bag_index, strength).numpy()
        ),
    }


def measure_model(model: FractalModel, split: Split) -> dict[str, float]:
    """:func:`measure` of the model's scores as the product reads them (its bag calibration, and its step
    calibration where it was chosen for the given-label view), plus ``auc_given_label``: the given-label view of
    each paired response (once each) under its own label."""
    paired, bags = split.paired, split.bags
    view = model.step_calibration_.given_label  # both views read the scores as Review and the Pairs page do
    row = measure(paired, model.predict_proba_bags(paired, calibrated=view).clamp_min(1e-12).log())
    logp = model.predict_proba_bags(bags, calibrated=view).clamp_min(1e-12).log()
    given = posterior_scores(logp, bags.bag_index, bags.labels, aggregation=split.aggregation)
    row["auc_given_label"] = _auc(bags.gold.cpu().numpy(), given.double().numpy())
    return row


CONDITIONS = ("pairs", "pairs+labels", "labels")
"""PrefBagLoss alone; PrefBagLoss beside the paired responses' own labels; BagLoss on those labels alone."""


def fit(
    condition: str, splits: dict[str, Split], n_classes: int, config: TrainConfig, seed: int
) -> FractalModel:
    """One condition fitted on the train split, early-stopped (and read out) on the valid split."""
    train, valid = splits["train"], splits["valid"]
    if condition == "labels":
        model = FractalModel("bagloss", config=config, seed=seed)
        return model.fit_bags(train.bags, valid.bags, aggregation=train.aggregation, n_classes=n_classes)
    prefs = torch.ones(len(train.index))
    return FractalModel(config=config, seed=seed).fit_preference_bags(
        train.bags,
        train.index,
        prefs,
        valid=(valid.bags, valid.index, torch.ones(len(valid.index))),
        aggregation=train.aggregation,
        n_classes=n_classes,
        response_labels="beside" if condition == "pairs+labels" else "alone",
    )


VIEWS = ("valid_auc_given_preference", "valid_auc_given_label")
"""What a pairs dataset is read through: the Pairs page's colouring given the preference, and Review's
given-label view of each response that carries a label of its own."""


def choose(runs: dict[str, list[dict[str, float]]]) -> tuple[str, dict[str, dict[str, float]]]:
    """Pairs alone or beside the labels, on valid only: the mode whose largest shortfall against the other over
    :data:`VIEWS` (mean over seeds) is the smaller, so the default lowers neither view by more than the other
    would. Returns (mode, {mode: {view: valid mean}})."""
    modes = ("pairs", "pairs+labels")
    means = {m: {v: float(np.mean([r[v] for r in runs[m]])) for v in VIEWS} for m in modes}

    def shortfall(mode: str) -> float:
        return max(max(means[o][v] for o in modes) - means[mode][v] for v in VIEWS)

    return min(modes, key=shortfall), means


def run(name: str, data: Path, seeds: list[int], config: TrainConfig) -> dict[str, Any]:
    splits = read_split_dir(data / name)
    encoder = get_encoder(None)
    started = time.perf_counter()
    paired = {split: pairwise(records, encoder) for split, records in splits.items()}
    print(f"{name}: embedded in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    counts = {f"{split}_pairs": len(p.index) for split, p in paired.items()}
    counts.update({f"{split}_paired_responses": p.bags.n_bags for split, p in paired.items()})
    n_classes = num_classes(splits["train"])
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONDITIONS}
    for condition in CONDITIONS:
        for seed in seeds:
            wall, cpu = time.perf_counter(), time.process_time()
            model = fit(condition, paired, n_classes, config, seed)
            seconds = {
                "train_seconds": time.perf_counter() - wall,
                "train_cpu_seconds": time.process_time() - cpu,
            }
            row = {**measure_model(model, paired["test"]), **seconds}
            row.update({f"valid_{k}": v for k, v in measure_model(model, paired["valid"]).items()})
            stage = model.history_[0] if model.history_ else {}
            row["epochs"] = float(len(stage.get("train_loss", [])))
            row["best_epoch"] = float(stage.get("best_epoch", -1))
            runs[condition].append(row)
            print(
                f"{name} {condition} seed {seed}: valid given preference {row['valid_auc_given_preference']:.3f} "
                f"given label {row['valid_auc_given_label']:.3f}",
                file=sys.stderr,
            )
    # The default for a pairs dataset, chosen on valid only (:func:`choose`); test is reported for both.
    chosen, valid_means = choose(runs)
    return {
        "counts": counts,
        "runs": runs,
        "encoder_id": encoder.encoder_id,
        "chosen_on_valid": chosen,
        "valid_means": valid_means,
    }


ROWS = [
    ("auc_given_preference", "colouring given the preference (what the Pairs page shows)"),
    ("auc_given_label", "given-label view of each response (its own label)"),
    ("auc_marginal", "scores without the preference"),
    ("valid_auc_given_preference", "valid: colouring given the preference"),
    ("valid_auc_given_label", "valid: given-label view"),
    ("train_seconds", "training wall seconds"),
]
BASELINES = [
    ("auc_cosine_prior", "cosine prior alone"),
    ("auc_cosine_given_preference", "cosine prior given the preference"),
    ("auc_broadcast", "preference broadcast to every sentence"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_option(parser)
    parser.add_argument("--datasets", default="processbench,delucionqa")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=RESULTS / "preference_pairs.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    seeds = [int(s) for s in args.seeds.split(",")]
    config = TrainConfig(device="cpu")
    command = " ".join("DIR" if a == str(args.data) else a for a in sys.argv)
    payload: dict[str, Any] = {"machine": machine(), "command": command, "datasets": {}}
    wall, cpu = time.perf_counter(), time.process_time()
    for name in args.datasets.split(","):
        payload["datasets"][name] = run(name, args.data, seeds, config)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    payload["wall_seconds"] = time.perf_counter() - wall
    payload["cpu_seconds"] = time.process_time() - cpu
    payload["max_rss_mb"] = usage.ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1, default=float, allow_nan=True) + "\n")
    names = list(payload["datasets"])
    print("| measure | condition | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for key, label in ROWS:
        for condition in CONDITIONS:
            cells = [
                fmt(stats([r.get(key, float("nan")) for r in payload["datasets"][n]["runs"][condition]]))
                for n in names
            ]
            print(f"| {label} | {condition} | " + " | ".join(cells) + " |")
    for key, label in BASELINES:
        cells = [fmt(stats([r[key] for r in payload["datasets"][n]["runs"]["pairs"]])) for n in names]
        print(f"| {label} | - | " + " | ".join(cells) + " |")
    for n in names:
        d = payload["datasets"][n]
        print(f"{n}: {d['counts']}; chosen on valid: {d['chosen_on_valid']} {d['valid_means']}")


if __name__ == "__main__":
    main()
