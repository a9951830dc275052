"""Tiny deterministic datasets for the app tests (fast to embed and train on two cores)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOOD = [
    "We add the two numbers to get the total.",
    "The sum of 12 and 30 is 42.",
    "Dividing 42 by 6 gives 7.",
    "So each friend receives 7 apples.",
    "The area of the square is the side squared.",
    "With side 5 the area is 25.",
]
BAD = [
    "Then 7 times 8 equals 54, which is wrong.",
    "The sum of 12 and 30 is 52.",
    "Dividing 42 by 6 gives 9.",
]


def tiny_records(
    n: int = 16, *, with_labels: bool = False, extra_text: str | None = None
) -> list[dict[str, Any]]:
    """``n`` max-aggregation responses; odd ones contain one wrong step (response label 1)."""
    out = []
    for i in range(n):
        steps = [GOOD[(i + k) % len(GOOD)] for k in range(3)]
        bad = i % 2 == 1
        if bad:
            steps.insert(1 + i % 2, BAD[i % len(BAD)])
        if extra_text is not None and i == 0:
            steps.append(extra_text)
        rec: dict[str, Any] = {
            "id": f"r{i:03d}",
            "context": f"Problem {i}: compute the answer step by step.",
            "sentences": steps,
            "response_label": int(bad),
            "aggregation": "max",
        }
        if with_labels:
            rec["sentence_labels"] = [int(s in BAD) for s in steps]
        out.append(rec)
    return out


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


FAST_TRAIN = {"max_epochs": 2, "patience": 1, "batch_bags": 8, "min_batches_per_epoch": 1, "hidden": 32}
"""TrainConfig overrides that train in a second or two: the tests check the plumbing, not the accuracy."""
