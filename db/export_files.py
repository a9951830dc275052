"""Writers of an export's rows to its file (JSON Lines, Parquet), counting rows written and left out; each is
the function :func:`fractal_core.data.files.atomic_write` calls with the temporary file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from db.export_read import _BATCH


def _jsonl_writer(rows: Iterator[dict[str, Any] | None], counts: dict[str, int]) -> Any:
    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                if row is None:
                    counts["skipped"] += 1
                    continue
                handle.write(json.dumps(row, ensure_ascii=False))
                handle.write("\n")
                counts["rows"] += 1
            handle.flush()
            os.fsync(handle.fileno())

    return write


def _parquet_writer(rows: Iterator[dict[str, Any] | None], counts: dict[str, int]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("completions", pa.list_(pa.string())),
            ("labels", pa.list_(pa.bool_())),
            ("sources", pa.list_(pa.string())),
            ("annotators", pa.list_(pa.string())),
            ("soft_labels", pa.list_(pa.float64())),
        ]
    )

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as parquet:
            batch: list[dict[str, Any]] = []
            for row in rows:
                if row is None:
                    counts["skipped"] += 1
                    continue
                batch.append(row)
                counts["rows"] += 1
                if len(batch) >= _BATCH:
                    parquet.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            if batch or counts["rows"] == 0:
                parquet.write_table(pa.Table.from_pylist(batch, schema=schema))

    return write
