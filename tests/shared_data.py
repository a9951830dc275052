"""Where the full shared datasets live (ProcessBench, DelucionQA), when they are present at all.

They are not part of the repository: ``$FRACTAL_SHARED_DATA``, else ``shared/data`` beside the repository's
folder. A test that needs them calls :func:`shared`, which skips the test with the reason when they are absent;
with ``FRACTAL_REQUIRE_SHARED_DATA=1`` (CI, which has them) a missing folder fails the test instead, so a CI run
can never pass by skipping them. Everything else runs on what the repository ships (the bundled demo sample) or
on files the tests write.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATASETS = ("processbench", "delucionqa")


def shared_data_dir() -> Path | None:
    """The folder holding ``processbench/`` and ``delucionqa/``, or None when there is none."""
    candidates = [
        os.environ.get("FRACTAL_SHARED_DATA"),
        Path(__file__).resolve().parents[2] / "shared" / "data",
    ]
    for candidate in candidates:
        if candidate and all((Path(candidate) / name).is_dir() for name in DATASETS):
            return Path(candidate)
    return None


def shared(dataset: str) -> Path:
    """The folder of one shared dataset (``train/valid/test.jsonl``); skips the calling test when absent."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown shared dataset {dataset!r}")
    root = shared_data_dir()
    if root is None:
        msg = (
            "shared datasets not found: set FRACTAL_SHARED_DATA to the folder holding processbench/ and "
            "delucionqa/"
        )
        if os.environ.get("FRACTAL_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"FRACTAL_REQUIRE_SHARED_DATA=1 but {msg}", pytrace=False)
        pytest.skip(msg)
    return root / dataset
