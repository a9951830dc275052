"""Where the read-only shared datasets live: $FRACTAL_SHARED_DATA, else ../shared/data beside the repository."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    candidates = [
        os.environ.get("FRACTAL_SHARED_DATA"),
        Path(__file__).resolve().parents[2] / "shared" / "data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "processbench").is_dir():
            return Path(candidate)
    raise FileNotFoundError(
        "shared datasets not found: set FRACTAL_SHARED_DATA to the folder holding "
        "processbench/ and delucionqa/"
    )


SHARED_DATA = shared_data_dir()
