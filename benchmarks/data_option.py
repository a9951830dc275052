"""The shared datasets folder the benchmarks read (one sub-folder per dataset) and the ``--data DIR`` option
that points them at another one."""

from __future__ import annotations

import argparse
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The default: the shared datasets folder beside the clone (``processbench``, ``delucionqa``)."""


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` the ``--data DIR`` option (a :class:`~pathlib.Path`, default :data:`DATA`)."""
    parser.add_argument(
        "--data",
        type=Path,
        default=DATA,
        metavar="DIR",
        help="folder with one sub-folder per dataset, e.g. DIR/processbench/train.jsonl "
        "(default: the shared datasets folder beside the clone, %(default)s)",
    )
