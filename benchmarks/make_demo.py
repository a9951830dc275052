"""Rebuild fractal_core/data/demo/processbench_demo.jsonl: a deterministic sample of ProcessBench train bags.

    .venv/bin/python benchmarks/make_demo.py [--data DIR] [SOURCE]   # default: DIR/processbench/train.jsonl

Bags are ordered by SHA-256 of their id and the first 200 whose JSON line is at most 2,000 bytes are kept,
verbatim, in that order (the size cap keeps the bundled file under 400 KB; it favours shorter solutions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from data_option import DATA, add_data_option  # noqa: E402

SOURCE = DATA / "processbench" / "train.jsonl"  # the shared data beside the clone
TARGET = ROOT / "fractal_core" / "data" / "demo" / "processbench_demo.jsonl"
N_BAGS = 200
MAX_LINE_BYTES = 2000


def build(source: Path = SOURCE) -> None:
    lines = [line for line in source.read_bytes().splitlines() if line.strip()]
    keyed = sorted(lines, key=lambda line: hashlib.sha256(json.loads(line)["id"].encode()).hexdigest())
    chosen = [line for line in keyed if len(line) <= MAX_LINE_BYTES][:N_BAGS]
    TARGET.write_bytes(b"".join(line + b"\n" for line in chosen))
    labels = [json.loads(line)["response_label"] for line in chosen]
    print(f"{len(chosen)} bags, {TARGET.stat().st_size / 1024:.0f} KB, response_label=1: {sum(labels)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_option(parser)
    parser.add_argument(
        "source", nargs="?", type=Path, help="a JSONL file to sample instead of DIR/processbench/train.jsonl"
    )
    args = parser.parse_args()
    build(args.source or args.data / "processbench" / "train.jsonl")


if __name__ == "__main__":
    main()
