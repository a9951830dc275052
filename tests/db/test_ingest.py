from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine

from db import repository as repo
from db.engine import get_engine
from db.ingest import ingest_file
from fractal_core.errors import InputError
from tests.db.conftest import delucionqa_valid, make_rows, processbench_valid, store_digest, write_jsonl


def test_real_processbench_and_delucionqa(engine: Engine) -> None:
    seen: list[tuple[int, int | None]] = []
    pb = ingest_file(engine, processbench_valid(), "processbench", progress=lambda d, t: seen.append((d, t)))
    assert (pb.n_responses, pb.n_sentences) == (352, 2710)
    assert pb.n_labels == 1449 + 234  # nulls after the first error are not labels
    assert seen[-1] == (352, 352)
    dq = ingest_file(engine, delucionqa_valid(), "delucionqa", labels_as="gold")
    assert (dq.n_responses, dq.n_sentences) == (216, 935)
    rows = {d.name: d for d in repo.list_datasets(engine)}
    assert rows["delucionqa"].label_kind == "ordinal" and rows["delucionqa"].max_label == 2
    assert rows["delucionqa"].n_gold_responses == 216 and rows["processbench"].n_gold_responses == 0
    first = repo.load_records(engine, pb.dataset_id, include_imported=True)[0]
    source = json.loads(processbench_valid().read_text(encoding="utf-8").splitlines()[0])
    assert first.id == source["id"] and first.sentences == source["sentences"]
    assert first.sentence_labels == source["sentence_labels"]
    assert repo.list_responses(engine, pb.dataset_id, split="valid").total == 352


def test_csv_parquet_and_raw_text(engine: Engine, tmp_path: Path) -> None:
    rows = make_rows(5)
    csv_path = tmp_path / "part.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["id", "context", "sentences", "response_label", "aggregation"])
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    **{k: r[k] for k in writer.fieldnames if k != "sentences"},
                    "sentences": json.dumps(r["sentences"]),
                }
            )
    parquet_path = tmp_path / "part.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"id": f"p{i}", "text": "One thing. Two things.", "response_label": i % 2} for i in range(4)]
        ),
        parquet_path,
    )
    assert ingest_file(engine, csv_path, "mixed").n_responses == 5
    summary = ingest_file(engine, parquet_path, "mixed")
    assert (summary.n_responses, summary.n_sentences) == (4, 8)
    detail = repo.get_response(engine, repo.response_id_by_external(engine, summary.dataset_id, "p1") or -1)
    assert [(s.start, s.end, s.text) for s in detail.sentences] == [
        (0, 10, "One thing."),
        (11, 22, "Two things."),
    ]
    assert detail.sentences[0].label is None


def _bad(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _rows_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


BAD_CASES: dict[str, tuple[Callable[[Path], Path], dict, str]] = {
    # name: (make file, ingest kwargs, expected message fragment)
    "invalid json on line 3": (
        lambda d: _bad(d, "a.jsonl", _rows_bytes(make_rows(2, prefix="n")) + b'{"id": "x", oops\n'),
        {},
        "a.jsonl:3: invalid JSON",
    ),
    "wrong encoding": (
        lambda d: _bad(
            d, "b.jsonl", _rows_bytes(make_rows(1, prefix="n")) + '{"id": "é"}\n'.encode("latin-1")
        ),
        {},
        "b.jsonl:2: not valid UTF-8",
    ),
    "empty file": (lambda d: _bad(d, "c.jsonl", b""), {}, "file is empty"),
    "duplicate id in the file": (
        lambda d: _bad(d, "d.jsonl", _rows_bytes(make_rows(3, prefix="n") + make_rows(1, prefix="n"))),
        {},
        "d.jsonl:4:id: duplicate id",
    ),
    "id already stored (late in the file, after a chunk was written)": (
        lambda d: _bad(d, "e.jsonl", _rows_bytes(make_rows(40, prefix="n") + make_rows(1))),
        {"chunk_size": 8},
        "e.jsonl:41:id: id 'r0' is already stored",
    ),
    "same file twice": (lambda d: _bad(d, "f.jsonl", _rows_bytes(make_rows(6))), {}, "already ingested"),
    "oversize field": (
        lambda d: _bad(d, "g.jsonl", _rows_bytes([{**make_rows(1, prefix="n")[0], "context": "x" * 500}])),
        {"max_field_chars": 100},
        "g.jsonl:1:context",
    ),
    "label outside the aggregation's range": (
        lambda d: _bad(
            d,
            "h.jsonl",
            _rows_bytes([{**make_rows(1, prefix="n")[0], "aggregation": "min", "response_label": 3}]),
        ),
        {},
        "h.jsonl:1:response_label",
    ),
    "label kind unlike the dataset's": (
        lambda d: _bad(
            d,
            "i.jsonl",
            _rows_bytes(
                [{"id": "m", "sentences": ["a.", "b."], "response_label": 0.5, "aggregation": "mean"}]
            ),
        ),
        {},
        "i.jsonl:1:aggregation: aggregation is mean but dataset 'demo' is binary (labels 0 and 1)",
    ),
    "missing file": (lambda d: d / "nope.jsonl", {}, "no such file"),
    "bad dataset name": (
        lambda d: _bad(d, "k.jsonl", _rows_bytes(make_rows(1, prefix="n"))),
        {"dataset": "../x"},
        "invalid dataset name",
    ),
}


# Cases that are only wrong for the dataset "demo" already holding data (or that never reach the file).
DATASET_LEVEL = {
    "id already stored (late in the file, after a chunk was written)",
    "same file twice",
    "label kind unlike the dataset's",
    "missing file",
    "bad dataset name",
}


# Refused after chunks were committed (staged, never visible): the staged rows are removed again, so the store
# holds exactly the rows it held, but SQLite's file bytes differ (pages were written and freed).
AFTER_A_CHUNK = {"id already stored (late in the file, after a chunk was written)"}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_leaves_the_database_byte_for_byte_unchanged(
    case: str, db_url: str, tmp_path: Path
) -> None:
    make, kwargs, message = BAD_CASES[case]
    engine = get_engine(db_url)
    ingest_file(engine, write_jsonl(tmp_path / "f.jsonl", make_rows(6)), "demo")
    logical = case in AFTER_A_CHUNK
    before = store_digest(engine, logical=logical)
    bad = make(tmp_path)
    kwargs = {"dataset": "demo", **kwargs}
    with pytest.raises(InputError) as err:
        ingest_file(engine, bad, kwargs.pop("dataset"), **kwargs)
    assert message in str(err.value)
    assert store_digest(engine, logical=logical) == before
    # A new dataset named in a failed ingest is not left behind either.
    if case not in DATASET_LEVEL:
        with pytest.raises(InputError):
            ingest_file(engine, bad, "fresh", **kwargs)
        assert store_digest(engine, logical=logical) == before
        assert [d.name for d in repo.list_datasets(engine)] == ["demo"]
