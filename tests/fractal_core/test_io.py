"""Shared-schema readers: good files of every format, each bad-input case, real data, atomic writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fractal_core.data.io import (
    iter_records,
    label_kind,
    num_classes,
    read_records,
    read_split_dir,
    write_records_jsonl,
)
from fractal_core.data.records import ResponseRecord
from fractal_core.errors import InputError
from tests.shared_data import shared

GOOD: dict[str, Any] = {
    "id": "a",
    "context": "Q?",
    "sentences": ["One.", "Two."],
    "sentence_labels": [0, 1],
    "response_label": 1,
    "aggregation": "max",
}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def error_of(path: Path, **options: Any) -> InputError:
    with pytest.raises(InputError) as info:
        read_records(path, **options)
    return info.value


# --- good input ------------------------------------------------------------------------------------------


def test_jsonl_good_rows_and_defaults(tmp_path: Path) -> None:
    rows = [
        GOOD,
        {"id": 7, "text": "First sentence. Second one!", "response_label": 0},
        {"id": "c", "sentences": ["x"], "response_label": 0.5, "aggregation": "mean", "meta": {"k": 1}},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    got = list(iter_records(path))
    assert [line for line, _ in got] == [1, 2, 3]
    a, b, c = (r for _, r in got)
    assert a.text == "One. Two." and a.sentences == ["One.", "Two."] and a.sentence_labels == [0, 1]
    assert b.id == "7" and b.context == "" and b.aggregation == "max" and b.meta == {}
    assert b.sentences == ["First sentence.", "Second one!"] and b.sentence_labels is None
    assert all(b.text[s.start : s.end] == s.text for s in b.spans)
    assert c.response_label == 0.5 and c.meta == {"k": 1}


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", ["", GOOD, "  ", {**GOOD, "id": "b"}])
    assert [line for line, _ in iter_records(path)] == [2, 4]


def test_all_null_sentence_labels_become_none(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{**GOOD, "sentence_labels": [None, None]}])
    assert read_records(path)[0].sentence_labels is None


def test_partial_labels_consistent_with_max(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{**GOOD, "sentence_labels": [0, None]}])
    assert read_records(path)[0].sentence_labels == [0, None]


def test_steps_mode_for_raw_text(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "s", "text": "Step 1: add them. Then check.\nStep 2: done.", "response_label": 0}],
    )
    assert read_records(path, segment_mode="steps")[0].sentences == [
        "Step 1: add them. Then check.",
        "Step 2: done.",
    ]
    assert read_records(path)[0].sentences == ["Step 1: add them.", "Then check.", "Step 2: done."]


def test_csv_with_column_map_and_json_lists(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "question", "sentences", "sentence_labels", "label", "aggregation", "meta"])
        writer.writerow(
            ["r1", "Q\nsecond line", json.dumps(["A, with comma.", "B."]), "[0, 1]", "1", "max", ""]
        )
        writer.writerow(["r2", "", "", "", "0.25", "mean", '{"x": 2}'])
    # r1 spans file lines 2-3 (quoted newline); r2 has neither sentences nor text -> error on line 4
    err = error_of(path, column_map={"uid": "id", "question": "context", "label": "response_label"})
    assert (err.line, err.field) == (4, "sentences")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "question", "text", "label", "aggregation"])
        writer.writerow(["r1", "Q", "Hello there. Bye.", "0.5", "mean"])
        writer.writerow(["r2", "", "Only one.", "1", ""])
    got = list(iter_records(path, column_map={"uid": "id", "question": "context", "label": "response_label"}))
    assert [line for line, _ in got] == [2, 3]
    assert got[0][1].sentences == ["Hello there.", "Bye."] and got[0][1].aggregation == "mean"
    assert got[1][1].response_label == 1.0 and got[1][1].aggregation == "max"


def test_csv_sentences_column(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        'id,sentences,sentence_labels,response_label\nx,"[""A."", ""B.""]","[1, 1]",1\n', encoding="utf-8"
    )
    (record,) = read_records(path)
    assert record.sentences == ["A.", "B."] and record.sentence_labels == [1, 1]


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    table = pa.table(
        {
            "id": ["p1", "p2"],
            "sentences": [["A.", "B."], ["C."]],
            "sentence_labels": [[0, None], None],
            "response_label": [1, 0],
            "meta": [json.dumps({"k": 1}), None],
        }
    )
    pq.write_table(table, path)
    got = list(iter_records(path))
    assert [line for line, _ in got] == [1, 2]
    assert got[0][1].sentence_labels == [0, None] and got[0][1].meta == {"k": 1}
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["p1"], "sentences": [["A."]], "response_label": [3.5]}), bad)
    err = error_of(bad)
    assert (err.line, err.field) == (1, "response_label")


def test_write_then_read_is_lossless(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {
                "id": "t",
                "context": "c",
                "text": "  Hi there.\n\nBye now.  ",
                "response_label": 2,
                "sentence_labels": [0, 2],
                "task": "x",
                "meta": {"m": [1]},
            },
            {"id": "u", "sentences": ["a", "b"], "response_label": 0.5, "aggregation": "mean"},
        ],
    )
    records = read_records(src)
    out = tmp_path / "out.jsonl"
    write_records_jsonl(records, out)
    again = read_records(out)
    assert again == records
    assert again[0].spans[1].start == records[0].text.index("Bye")
    assert json.loads(out.read_text().splitlines()[0])["response_label"] == 2  # integral labels stay ints


def test_write_is_atomic_when_iteration_fails(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def broken() -> Any:
        yield ResponseRecord(id="a", context="", text="x", spans=[], response_label=0.0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_records_jsonl(broken(), out)
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_label_kind_and_num_classes() -> None:
    def rec(label: float, agg: str = "max", labels: list[int | None] | None = None) -> ResponseRecord:
        return ResponseRecord(
            id="x",
            context="",
            text="",
            spans=[],
            response_label=label,
            aggregation=agg,  # type: ignore[arg-type]
            sentence_labels=labels,
        )

    assert label_kind([rec(0), rec(1)]) == "binary" and num_classes([rec(1)]) == 2
    assert label_kind([rec(1, "min")]) == "binary"
    assert label_kind([rec(0), rec(3)]) == "ordinal" and num_classes([rec(0), rec(3)]) == 4
    assert num_classes([rec(1, labels=[0, 2, None])]) == 3
    assert label_kind([rec(0.5, "mean")]) == "proportion" and num_classes([rec(0.5, "mean")]) == 2
    with pytest.raises(ValueError):
        label_kind([])
    with pytest.raises(ValueError, match="mix"):
        label_kind([rec(0.5, "mean"), rec(1)])


# --- real shared data --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["processbench", "delucionqa"])
def test_reads_real_shared_data(dataset: str) -> None:
    stats = json.loads((shared(dataset) / "stats.json").read_text())
    splits = read_split_dir(shared(dataset))
    assert set(splits) == {"train", "valid", "test"}
    assert all(r.text[s.start : s.end] == s.text for r in splits["train"] for s in r.spans)
    flat = json.dumps(stats)
    assert str(len(splits["train"])) in flat and str(sum(len(r.spans) for r in splits["train"])) in flat
    assert label_kind(splits["train"]) == ("binary" if dataset == "processbench" else "ordinal")


def test_split_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="train.jsonl"):
        read_split_dir(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        read_split_dir(tmp_path / "missing")
    write_jsonl(tmp_path / "train.jsonl", [GOOD])
    assert set(read_split_dir(tmp_path)) == {"train"}


# --- bad input: one case per rule, each naming file, line and field ---------------------------------------

BAD_JSONL_CASES: list[tuple[str, Any, str | None, str]] = [
    ("syntax", '{"id": "b", ', None, "invalid JSON"),
    ("not_object", "[1, 2]", None, "JSON object"),
    ("missing_id", {k: v for k, v in GOOD.items() if k != "id"}, "id", "missing"),
    ("id_type", {**GOOD, "id": [1]}, "id", "string"),
    ("id_empty", {**GOOD, "id": ""}, "id", "empty"),
    ("missing_label", {k: v for k, v in GOOD.items() if k != "response_label"}, "response_label", "missing"),
    ("no_sentences_or_text", {"id": "b", "response_label": 0}, "sentences", "text"),
    ("sentences_not_list", {**GOOD, "sentences": "One. Two."}, "sentences", "list"),
    ("sentences_empty", {**GOOD, "sentences": [], "sentence_labels": None}, "sentences", "empty"),
    ("sentence_not_string", {**GOOD, "sentences": ["One.", 2]}, "sentences", "item 1"),
    ("sentence_blank", {**GOOD, "sentences": ["One.", "  "]}, "sentences", "item 1 is empty"),
    ("text_not_string", {"id": "b", "text": 5, "response_label": 0}, "text", "string"),
    ("text_empty", {"id": "b", "text": "  \n", "response_label": 0}, "text", "empty"),
    ("context_type", {**GOOD, "context": 3}, "context", "string"),
    ("labels_not_list", {**GOOD, "sentence_labels": "0,1"}, "sentence_labels", "list"),
    ("labels_length", {**GOOD, "sentence_labels": [0, 1, 0]}, "sentence_labels", "3 labels for 2"),
    ("label_item_type", {**GOOD, "sentence_labels": [0, "1"]}, "sentence_labels", "item 1"),
    ("label_item_bool", {**GOOD, "sentence_labels": [False, True]}, "sentence_labels", "item 0"),
    (
        "label_item_negative",
        {**GOOD, "sentence_labels": [0, -1], "response_label": 0},
        "sentence_labels",
        "-1",
    ),
    ("response_label_bool", {**GOOD, "response_label": True}, "response_label", "number"),
    ("response_label_string", {**GOOD, "response_label": "1"}, "response_label", "number"),
    (
        "response_label_nan",
        '{"id": "b", "sentences": ["x"], "response_label": NaN}',
        "response_label",
        "finite",
    ),
    ("unknown_aggregation", {**GOOD, "aggregation": "sum"}, "aggregation", "unknown aggregation"),
    ("max_fractional", {**GOOD, "response_label": 0.5, "sentence_labels": None}, "response_label", "integer"),
    (
        "max_negative",
        {**GOOD, "response_label": -1, "sentence_labels": None},
        "response_label",
        "not an integer in 0..100",
    ),
    (
        "min_ordinal",
        {**GOOD, "aggregation": "min", "response_label": 2, "sentence_labels": None},
        "response_label",
        "binary",
    ),
    (
        "min_sentence_ordinal",
        {**GOOD, "aggregation": "min", "response_label": 0, "sentence_labels": [0, 2]},
        "sentence_labels",
        "outside 0..1",
    ),
    (
        "mean_out_of_range",
        {**GOOD, "aggregation": "mean", "response_label": 1.5, "sentence_labels": None},
        "response_label",
        "[0, 1]",
    ),
    (
        "mean_sentence_ordinal",
        {**GOOD, "aggregation": "mean", "response_label": 0.5, "sentence_labels": [0, 2]},
        "sentence_labels",
        "outside 0..1",
    ),
    ("max_inconsistent", {**GOOD, "response_label": 0}, "response_label", "a known sentence label is 1"),
    ("max_partial_inconsistent", {**GOOD, "sentence_labels": [2, None]}, "response_label", "known"),
    (
        "min_inconsistent",
        {**GOOD, "aggregation": "min", "response_label": 1, "sentence_labels": [1, 0]},
        "response_label",
        "a known sentence label is 0",
    ),
    (
        "min_partial_inconsistent",
        {**GOOD, "aggregation": "min", "response_label": 1, "sentence_labels": [0, None]},
        "response_label",
        "known",
    ),
    ("mean_inconsistent", {**GOOD, "aggregation": "mean", "response_label": 0.4}, "response_label", "mean"),
    (
        "mean_partial_unreachable",
        {**GOOD, "aggregation": "mean", "response_label": 0.0, "sentence_labels": [1, None]},
        "response_label",
        "allow only",
    ),
    ("duplicate_id", {**GOOD}, "id", "duplicate id 'a' (first on line 1)"),
    ("meta_type", {**GOOD, "id": "m", "meta": [1]}, "meta", "object"),
    ("task_type", {**GOOD, "id": "t", "task": 1}, "task", "string"),
    (
        "spans_mismatch",
        {**GOOD, "id": "s", "text": "One. Two.", "spans": [[0, 4], [5, 8]]},
        "spans",
        "item 1",
    ),
]


@pytest.mark.parametrize(
    ("row", "field", "message"), [c[1:] for c in BAD_JSONL_CASES], ids=[c[0] for c in BAD_JSONL_CASES]
)
def test_each_bad_jsonl_row_names_file_line_field(
    tmp_path: Path, row: Any, field: str | None, message: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, row, {**GOOD, "id": "after"}])
    err = error_of(path)
    assert (err.file, err.line, err.field) == (str(path), 2, field)
    assert message in err.reason
    assert str(err).startswith(f"{path}:2")
    assert "\n" not in str(err)


def test_mean_within_tolerance_is_accepted(tmp_path: Path) -> None:
    row = {
        **GOOD,
        "aggregation": "mean",
        "sentences": ["a", "b", "c"],
        "sentence_labels": [1, 0, 0],
        "response_label": 0.3333333,
    }
    assert read_records(write_jsonl(tmp_path / "in.jsonl", [row]))[0].response_label == 0.3333333


def test_oversize_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [GOOD, {**GOOD, "id": "b", "context": "x" * 101}])
    err = error_of(path, max_field_chars=100)
    assert (err.line, err.field) == (2, "context") and "limit is 100" in err.reason
    path = write_jsonl(tmp_path / "in.jsonl", [{**GOOD, "sentences": ["x" * 60, "y" * 60]}])
    assert error_of(path, max_field_chars=100).field == "sentences"


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        json.dumps(GOOD).encode() + b"\n" + b'{"id": "caf\xe9", "sentences": ["x"], "response_label": 0}\n'
    )
    err = error_of(path)
    assert (err.line, err.field) == (2, None) and "UTF-8" in err.reason


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert read_records(path)[0].id == "a"


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_empty_file(tmp_path: Path, content: bytes, suffix: str) -> None:
    path = tmp_path / f"in{suffix}"
    path.write_bytes(content)
    err = error_of(path)
    assert err.reason == "file is empty" and err.file == str(path)


def test_csv_header_only_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,text,response_label\n")
    assert error_of(path).reason == "file is empty"


def test_empty_parquet(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "response_label": pa.array([], pa.int64())}), path
    )
    assert error_of(path).reason == "file is empty"


def test_unreadable_and_unknown_files(tmp_path: Path) -> None:
    assert error_of(tmp_path / "missing.jsonl").reason == "no such file"
    assert "suffix" in error_of(tmp_path / "data.txt").reason
    (tmp_path / "fake.parquet").write_text("not parquet")
    assert "Parquet" in error_of(tmp_path / "fake.parquet").reason
    (tmp_path / "data.txt").write_text(json.dumps(GOOD) + "\n")
    assert read_records(tmp_path / "data.txt", format="jsonl")[0].id == "a"


CSV_CASES: list[tuple[str, str, int, str | None, str]] = [
    ("ragged_row", "id,text,response_label\na,Hi.,1\nb,Hi.\n", 3, None, "2 fields"),
    ("bad_number", "id,text,response_label\na,Hi.,yes\n", 2, "response_label", "number"),
    ("bool_like", "id,text,response_label\na,Hi.,True\n", 2, "response_label", "number"),
    ("bad_sentences_json", "id,sentences,response_label\na,[oops,1\n", 2, "sentences", "invalid JSON"),
    (
        "bad_labels_json",
        'id,text,sentence_labels,response_label\na,Hi.,"[0,,1]",1\n',
        2,
        "sentence_labels",
        "JSON",
    ),
    ("missing_column", "id,text\na,Hi.\n", 2, "response_label", "missing"),
    ("duplicate_id", "id,text,response_label\na,Hi.,1\na,Ho.,1\n", 3, "id", "duplicate"),
    ("unnamed_column", "id,,response_label\na,Hi.,1\n", 1, None, "no name"),
    ("duplicate_column", "id,id,response_label\na,b,1\n", 1, None, "duplicate column"),
]


@pytest.mark.parametrize(
    ("content", "line", "field", "message"), [c[1:] for c in CSV_CASES], ids=[c[0] for c in CSV_CASES]
)
def test_each_bad_csv_row_names_file_line_field(
    tmp_path: Path, content: str, line: int, field: str | None, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    err = error_of(path)
    assert (err.file, err.line, err.field) == (str(path), line, field)
    assert message in err.reason


def test_csv_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,text,response_label\na,Hi.,1\nb,caf\xe9.,0\n")
    err = error_of(path)
    assert err.line == 3 and "UTF-8" in err.reason


def test_bundled_demo_data_reads() -> None:
    from fractal_core.data.demo import demo_path

    path = demo_path()
    assert path.stat().st_size < 400_000
    records = read_records(path)
    assert len(records) == 200 and label_kind(records) == "binary"
    assert {r.response_label for r in records} == {0.0, 1.0}


def test_errors_name_the_column_of_the_offending_value(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    line = '{"id": "a", "sentences": ["x."], "response_label": "high"}'
    jsonl.write_text(line + "\n", encoding="utf-8")
    err = error_of(jsonl)
    assert (err.line, err.field, err.column) == (1, "response_label", line.index('"high"') + 1)
    assert err.reason.endswith(f"(column {err.column})")
    # Renamed columns are found under the user's name.
    line = '{"uid": "a", "sentences": ["x."], "y": 1, "aggregation": "median"}'
    jsonl.write_text(line + "\n", encoding="utf-8")
    err = error_of(jsonl, column_map={"uid": "id", "y": "response_label"})
    assert (err.field, err.column) == ("aggregation", line.index('"median"') + 1)
    # JSON inside a quoted CSV cell: the column of the bad character in the file's line, doubled quotes
    # counted as written (json's own column would be 4, inside the cell).
    csv_path = tmp_path / "in.csv"
    row = 'a,"Hi ""there"". Bye.","[0,,1]",1'
    csv_path.write_text("id,text,sentence_labels,response_label\n" + row + "\n", encoding="utf-8")
    err = error_of(csv_path)
    assert (err.line, err.field, err.column) == (2, "sentence_labels", row.index(",,1") + 2)
    assert err.reason == f"invalid JSON: Expecting value at column {err.column}"
    # A missing field has no column.
    jsonl.write_text('{"id": "a", "sentences": ["x."]}\n', encoding="utf-8")
    assert error_of(jsonl).column is None


# --- input that must never be silently lost or accepted ------------------------------------------------------


def test_a_key_written_twice_is_refused_where_it_repeats(tmp_path: Path) -> None:
    line = '{"id": "x107", "id": "x108", "sentences": ["x."], "response_label": 0}'
    path = write_jsonl(tmp_path / "in.jsonl", [GOOD, line])
    err = error_of(path)
    assert (err.line, err.field, err.column) == (2, "id", line.index('"id"', 5) + 1)
    assert "'id' is written twice" in err.reason
    # Inside a nested object: the top-level field that holds it.
    line = '{"id": "b", "sentences": ["x."], "response_label": 0, "meta": {"k": 1, "k": 2}}'
    err = error_of(write_jsonl(tmp_path / "in.jsonl", [line]))
    assert (err.line, err.field, err.column) == (1, "meta", line.index('{"k"') + 1)
    # JSON inside a CSV cell.
    csv_path = tmp_path / "in.csv"
    csv_path.write_text('id,text,response_label,meta\na,Hi.,1,"{""k"": 1, ""k"": 2}"\n', encoding="utf-8")
    err = error_of(csv_path)
    assert (err.line, err.field) == (2, "meta") and "'k' is written twice" in err.reason


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("sentencelabels", "did you mean `sentence_labels`?"),
        ("Response_Label", "`response_label`"),
        ("notes", "meta"),
    ],
)
def test_an_unknown_field_is_refused_with_the_closest_name(tmp_path: Path, name: str, hint: str) -> None:
    row = {"id": "b", "sentences": ["x.", "y."], "response_label": 1, name: [0, 1]}
    line = json.dumps(row)
    err = error_of(write_jsonl(tmp_path / "in.jsonl", [GOOD, line]))
    assert (err.line, err.field) == (2, name) and hint in err.reason and "unknown field" in err.reason
    assert err.column == line.index(f'"{name}"') + len(name) + 5  # the value after `"name": `
    csv_path = tmp_path / "in.csv"
    csv_path.write_text(f'id,text,response_label,{name}\na,Hi.,1,"[0]"\n', encoding="utf-8")
    err = error_of(csv_path)
    assert (err.line, err.field) == (2, name) and hint in err.reason
    # Extras kept in meta are fine.
    assert read_records(write_jsonl(tmp_path / "ok.jsonl", [{**GOOD, "meta": {name: 1}}]))[0].meta == {
        name: 1
    }


@pytest.mark.parametrize("blank", ["   ", "\t", " \n "])
def test_an_id_of_only_whitespace_is_refused(tmp_path: Path, blank: str) -> None:
    err = error_of(write_jsonl(tmp_path / "in.jsonl", [GOOD, {**GOOD, "id": blank}]))
    assert (err.line, err.field) == (2, "id") and "empty or only spaces" in err.reason


def test_one_cell_size_limit_for_every_format(tmp_path: Path) -> None:
    """A 200,000-character context (over the CSV module's default 131,072) reads alike in every format, and
    one character over the limit is refused alike."""
    from fractal_core.data.records import MAX_FIELD_CHARS

    big = {"id": "a", "context": "c" * 200_000, "text": "Hi.", "response_label": 1}
    too_big = {**big, "id": "b", "context": "c" * (MAX_FIELD_CHARS + 1)}
    for rows, ok in (([big], True), ([big, too_big], False)):
        jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
        csv_path = tmp_path / "in.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(big))
            writer.writeheader()
            writer.writerows(rows)
        parquet = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_pylist(rows), parquet)
        for path, line in ((jsonl, 2), (csv_path, 3), (parquet, 2)):
            if ok:
                assert len(read_records(path)[0].context) == 200_000
            else:
                err = error_of(path)
                assert (err.line, err.field) == (line, "context"), path
                assert f"limit is {MAX_FIELD_CHARS}" in err.reason
