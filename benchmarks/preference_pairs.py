"""Step colouring learned from preference pairs, given the preference, against the cosine prior and the broadcast.

Usage (DIR holds one folder per dataset with train/valid/test.jsonl):
    nice .venv/bin/python benchmarks/preference_pairs.py [--data DIR] [--datasets processbench,delucionqa]
        [--seeds 0,1,2]

The pairwise view of a labelled split: every two responses to the same question (same ``context``) whose
response labels differ make a pair; the one with the lower label (fewer or milder errors) is preferred, strength
1. Response labels are used for nothing else. The model (PrefBagLoss, ``fitting.preference``) trains on the
train split's pairs and early-stops on the valid split's pairs; it sees no sentence label.

Measured on the test split's pairs, over the sentences of both responses of every pair (a response in several
pairs counts once per pair, as Review shows it once per pair; gold ``null`` steps are left out; level >= 1 is
positive):

- ``auc_given_preference``: what Review colours on a pair, P(level_i >= 1 | the rejected response has more
  erroneous sentences than the chosen one) under the model's independent sentence probabilities
  (``mil.preference_posterior``): the preference's analogue of the given-label view of a labelled response;
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
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_option import add_data_option  # noqa: E402
from quality_common import fmt, machine, stats  # noqa: E402

from fractal_core.data.io import read_split_dir  # noqa: E402
from fractal_core.data.records import ResponseRecord  # noqa: E402
from fractal_core.embedding.encoder import Encoder, get_encoder  # noqa: E402
from fractal_core.embedding.features import embed_records  # noqa: E402
from fractal_core.evaluation.metrics import auc_roc  # noqa: E402
from fractal_core.fitting.bags import BagSet  # noqa: E402
from fractal_core.fitting.config import TrainConfig  # noqa: E402
from fractal_core.fitting.pairs import colour_pairs, pair_bags  # noqa: E402
from fractal_core.fitting.preference import fit_preference  # noqa: E402
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


def pairwise(records: list[ResponseRecord], encoder: Encoder) -> BagSet:
    """The split's pairs laid out for the preference loss (chosen, rejected), strength 1; only the responses
    that are in some pair are embedded."""
    chosen, rejected = label_pairs(records)
    used, position = torch.unique(torch.cat([chosen, rejected]), return_inverse=True)
    bags = embed_records([records[i] for i in used.tolist()], encoder, device="cpu")
    k = len(chosen)
    return pair_bags(bags, position[:k], position[k:], torch.ones(k))


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


def run(name: str, data: Path, seeds: list[int], config: TrainConfig) -> dict[str, Any]:
    splits = read_split_dir(data / name)
    encoder = get_encoder(None)
    started = time.perf_counter()
    paired = {split: pairwise(records, encoder) for split, records in splits.items()}
    print(f"{name}: embedded in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    counts = {f"{split}_pairs": b.n_bags // 2 for split, b in paired.items()}
    counts.update({f"{split}_responses": len(records) for split, records in splits.items()})
    runs = []
    for seed in seeds:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fit_preference(paired["train"], paired["valid"], config=config, seed=seed)
        seconds = {
            "train_seconds": time.perf_counter() - wall,
            "train_cpu_seconds": time.process_time() - cpu,
        }
        model = result.model.eval()
        with torch.inference_mode():
            logp_test = model(paired["test"])
            logp_valid = model(paired["valid"])
        row = {**measure(paired["test"], logp_test), **seconds}
        row.update({f"valid_{k}": v for k, v in measure(paired["valid"], logp_valid).items()})
        row["epochs"] = float(len(result.stages[0].train_loss)) if result.stages else 0.0
        row["best_epoch"] = float(result.stages[0].best_epoch) if result.stages else -1.0
        runs.append(row)
        print(
            f"{name} seed {seed}: given preference {row['auc_given_preference']:.3f} marginal "
            f"{row['auc_marginal']:.3f} cosine {row['auc_cosine_prior']:.3f} / "
            f"{row['auc_cosine_given_preference']:.3f} broadcast {row['auc_broadcast']:.3f}",
            file=sys.stderr,
        )
    return {"counts": counts, "runs": runs, "encoder_id": encoder.encoder_id}


ROWS = [
    ("auc_given_preference", "sentence AUC, colouring given the preference (what Review shows)"),
    ("auc_marginal", "sentence AUC, model scores without the preference"),
    ("auc_cosine_prior", "sentence AUC, cosine prior alone"),
    ("auc_cosine_given_preference", "sentence AUC, cosine prior given the preference"),
    ("auc_broadcast", "sentence AUC, preference broadcast to every sentence"),
    ("auc_constant_given_preference", "sentence AUC, one constant score given the preference (no model)"),
    ("valid_auc_given_preference", "valid: colouring given the preference"),
    ("valid_auc_broadcast", "valid: broadcast"),
    ("train_seconds", "training wall seconds"),
    ("train_cpu_seconds", "training CPU seconds"),
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
    print("| measure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, label in ROWS:
        cells = [
            fmt(stats([r.get(key, float("nan")) for r in payload["datasets"][n]["runs"]])) for n in names
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for n in names:
        print(f"{n}: {payload['datasets'][n]['counts']}")


if __name__ == "__main__":
    main()
