"""Columns outside the schema: refused by default (a typo must fail), kept in meta or left out on request."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fractal_core.data.extras import RESERVED_META_KEYS, check_mode, extra_columns
from fractal_core.data.io import iter_records, read_records, record_from_mapping
from fractal_core.data.rows import column_names
from fractal_core.errors import InputError

CSV = (
    "id,text,response_label,model,notes\n"
    "a,Hi. There.,1,gpt-x,checked twice\n"
    'b,Yo.,0,"gpt,y",\n'  # an empty cell is a missing value: not written to meta
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def error_of(path: Path, **options) -> InputError:
    with pytest.raises(InputError) as info:
        read_records(path, **options)
    return info.value


def test_csv_extras_are_refused_by_default_naming_line_column_and_field(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", CSV)
    err = error_of(path)
    assert (err.file, err.line, err.field) == (str(path), 2, "model")
    assert "unknown field" in err.reason and "meta" in err.reason
    assert err.column == len("a,Hi. There.,1,") + 1  # the model cell
    assert error_of(path, extra_columns="refuse").field == "model"


def test_csv_extras_kept_in_meta_as_written(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", CSV)
    seen: set[str] = set()
    records = [r for _, r in iter_records(path, extra_columns="meta", seen_extras=seen)]
    assert [r.meta for r in records] == [{"model": "gpt-x", "notes": "checked twice"}, {"model": "gpt,y"}]
    assert seen == {"model", "notes"}
    assert [r.text for r in records] == ["Hi. There.", "Yo."]


def test_csv_extras_left_out_but_named(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", CSV)
    seen: set[str] = set()
    records = [r for _, r in iter_records(path, extra_columns="drop", seen_extras=seen)]
    assert [r.meta for r in records] == [{}, {}] and seen == {"model", "notes"}


def test_jsonl_typo_still_refused_under_refuse_and_kept_or_dropped_on_request(tmp_path: Path) -> None:
    row = {"id": "a", "sentences": ["x.", "y."], "response_label": 1, "sentencelabels": [0, 1]}
    path = write_jsonl(tmp_path / "in.jsonl", [{**row, "id": "first", "sentencelabels": None}, row])
    err = error_of(path)
    assert (err.line, err.field) == (1, "sentencelabels") and "did you mean `sentence_labels`?" in err.reason
    kept = read_records(path, extra_columns="meta")
    assert kept[1].meta == {"sentencelabels": [0, 1]} and kept[1].sentence_labels is None
    assert kept[0].meta == {"sentencelabels": None}  # JSON null kept as written
    assert [r.meta for r in read_records(path, extra_columns="drop")] == [{}, {}]


def test_extras_join_the_rows_own_meta_but_never_overwrite_it(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "Hi.", "response_label": 0, "meta": {"k": 1}, "model": "m"}]
    assert read_records(write_jsonl(tmp_path / "ok.jsonl", rows), extra_columns="meta")[0].meta == {
        "k": 1,
        "model": "m",
    }
    line = json.dumps({**rows[0], "k": 2})
    err = error_of(write(tmp_path / "clash.jsonl", line + "\n"), extra_columns="meta")
    assert (err.line, err.field) == (1, "k") and "overwrite meta.k" in err.reason
    assert err.column == line.index('"k": 2') + len('"k": ') + 1
    # The same in CSV, where meta is JSON text in its cell; under drop the clashing column is just left out.
    path = write(tmp_path / "clash.csv", 'id,text,response_label,meta,k\na,Hi.,0,"{""k"": 1}",2\n')
    err = error_of(path, extra_columns="meta")
    assert (err.line, err.field) == (2, "k") and "overwrite" in err.reason
    assert read_records(path, extra_columns="drop")[0].meta == {"k": 1}


@pytest.mark.parametrize("key", sorted(RESERVED_META_KEYS))
def test_a_column_cannot_write_a_reserved_meta_key(tmp_path: Path, key: str) -> None:
    # A native export's provenance block (its split is read on ingest) never comes from a column.
    line = json.dumps({"id": "a", "text": "Hi.", "response_label": 0, key: {"split": "test"}})
    err = error_of(write(tmp_path / "in.jsonl", line + "\n"), extra_columns="meta")
    assert (err.line, err.field) == (1, key) and "reserved" in err.reason
    path = write(tmp_path / "in.csv", f"id,text,response_label,{key}\na,Hi.,0,x\n")
    err = error_of(path, extra_columns="meta")
    assert (err.line, err.field, err.column) == (2, key, len("a,Hi.,0,") + 1)
    assert read_records(path, extra_columns="drop")[0].meta == {}
    # Inside the row's own meta it is data like any other (the store decides what it reads of it).
    rows = [{"id": "a", "text": "Hi.", "response_label": 0, "meta": {key: {"split": "test"}}}]
    assert read_records(write_jsonl(tmp_path / "m.jsonl", rows))[0].meta == {key: {"split": "test"}}


def test_a_column_displaced_by_the_mapping_is_an_extra_column(tmp_path: Path) -> None:
    # `response` is mapped to text, so the file's own `text` column is not read as the field.
    path = write(tmp_path / "in.csv", "id,response,text,response_label\na,Mapped one.,Other one.,1\n")
    err = error_of(path, column_map={"response": "text"})
    assert (err.line, err.field) == (2, "text") and "another column is mapped" in err.reason
    assert err.column == len("a,Mapped one.,") + 1  # the `text` cell, not the mapped `response` cell
    [kept] = read_records(path, column_map={"response": "text"}, extra_columns="meta")
    assert kept.text == "Mapped one." and kept.meta == {"text": "Other one."}
    [dropped] = read_records(path, column_map={"response": "text"}, extra_columns="drop")
    assert dropped.text == "Mapped one." and dropped.meta == {}
    assert extra_columns(
        ["id", "response", "text", "y", "model"], {"response": "text", "y": "response_label"}
    ) == [
        "text",
        "model",
    ]


def test_parquet_extras_become_json(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    table = pa.table(
        {
            "id": ["a", "b"],
            "text": ["Hi.", "Yo."],
            "response_label": [1, 0],
            "at": [dt.datetime(2026, 1, 2, 3, 4, 5), None],
            "price": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.00")], pa.decimal128(5, 2)),
            "score": [0.5, float("nan")],
            "tags": [["x", "y"], []],
        }
    )
    pq.write_table(table, path)
    assert error_of(path).field == "at"
    records = read_records(path, extra_columns="meta")
    assert records[0].meta == {"at": "2026-01-02T03:04:05", "price": "1.50", "score": 0.5, "tags": ["x", "y"]}
    assert records[1].meta == {"price": "2.00", "score": None, "tags": []}  # null cell: missing; NaN: null
    assert [r.meta for r in read_records(path, extra_columns="drop")] == [{}, {}]
    binary = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": ["Hi."], "response_label": [1], "blob": [b"\x00"]}), binary)
    err = error_of(binary, extra_columns="meta")
    assert (err.line, err.field) == (1, "blob") and "cannot be kept in meta" in err.reason


def test_extra_values_are_checked_like_meta(tmp_path: Path) -> None:
    line = json.dumps({"id": "a", "text": "Hi.", "response_label": 0, "note": "bad\u0000"})
    err = error_of(write(tmp_path / "nul.jsonl", line + "\n"), extra_columns="meta")
    assert (err.line, err.field) == (1, "note") and "NUL" in err.reason
    big = json.dumps({"id": "a", "text": "Hi.", "response_label": 0, "note": "x" * 50})
    err = error_of(write(tmp_path / "big.jsonl", big + "\n"), extra_columns="meta", max_field_chars=40)
    assert err.field == "meta" and "limit is 40" in err.reason
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    line = json.dumps({"id": "a", "text": "Hi.", "response_label": 0, "deep": deep})
    err = error_of(write(tmp_path / "deep.jsonl", line + "\n"), extra_columns="meta")
    assert err.field == "deep" and "nested too deeply" in err.reason


def test_bad_mode_and_bad_map_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", CSV)
    with pytest.raises(InputError, match="unknown extra-columns mode 'keep'") as info:
        read_records(path, extra_columns="keep")  # type: ignore[arg-type]
    assert info.value.field == "extra_columns"
    with pytest.raises(InputError, match="not a field") as info:
        read_records(path, column_map={"model": "modle"})
    assert info.value.field == "column_map"
    assert check_mode("drop") == "drop"


def test_mappings_follow_the_same_rule() -> None:
    item = {"id": "a", "text": "Hi.", "response_label": 0, "model": "m"}
    with pytest.raises(InputError, match="unknown field") as info:
        record_from_mapping(item)
    assert info.value.field == "model"
    assert record_from_mapping(item, extra_columns="meta").meta == {"model": "m"}
    assert record_from_mapping(item, extra_columns="drop").meta == {}


def test_column_names_of_each_format(tmp_path: Path) -> None:
    assert column_names(write(tmp_path / "a.csv", "\n id , text\n"), "a.csv", "csv") == ["id", "text"]
    rows = [{"id": "a", "x": 1}, {"id": "b", "y": 2, "x": 3}]
    assert column_names(write_jsonl(tmp_path / "a.jsonl", rows), "a.jsonl", "jsonl") == ["id", "x", "y"]
    assert column_names(tmp_path / "a.jsonl", "a.jsonl", "jsonl", max_rows=1) == ["id", "x"]
    pq.write_table(pa.table({"id": ["a"], "z": [1]}), tmp_path / "a.parquet")
    assert column_names(tmp_path / "a.parquet", "a.parquet", "parquet") == ["id", "z"]
    with pytest.raises(InputError, match="not a readable Parquet file"):
        column_names(write(tmp_path / "b.parquet", "nope"), "b.parquet", "parquet")
