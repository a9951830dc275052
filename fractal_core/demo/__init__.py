"""Bundled demo data: 200 ProcessBench math solutions (Apache-2.0), see README.md next to this file."""

from __future__ import annotations

from pathlib import Path

_DEMO_FILE = "processbench_demo.jsonl"


def demo_path() -> Path:
    """Path of the bundled demo JSONL (shared schema: steps, step labels, response label, ``max``)."""
    return Path(__file__).resolve().parent / _DEMO_FILE
