"""Rows with several criteria: reading, the refusals (file, line, field), round trips, and the store's refusal."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from fractal_core.data.criteria import criterion_names, criterion_records
from fractal_core.data.io import read_records, write_records_jsonl
from fractal_core.data.records import CriterionLabels, criterion_view
from fractal_core.errors import InputError


def row(i: int = 0, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"r{i}",
        "context": "q",
        "sentences": ["One.", "Two.", "Three."],
        "criteria": {
            "correct": {"response_label": 1, "aggregation": "max", "sentence_labels": [0, 1, None]},
            "grounded": {"response_label": 0.5, "aggregation": "mean", "sentence_labels": [1, 0, None]},
            "helpful": {"response_label": 2},
        },
    }
    base.update(changes)
    return base


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_row_with_criteria_reads_every_criterion_and_mirrors_the_first(tmp_path: Path) -> None:
    [record] = read_records(write(tmp_path / "a.jsonl", [row()]))
    assert record.criteria == {
        "correct": CriterionLabels(1.0, "max", [0, 1, None]),
        "grounded": CriterionLabels(0.5, "mean", [1, 0, None]),
        "helpful": CriterionLabels(2.0, "max", None),
    }
    assert (record.response_label, record.aggregation, record.sentence_labels) == (1.0, "max", [0, 1, None])
    grounded = criterion_view(record, "grounded")
    assert (grounded.response_label, grounded.aggregation, grounded.criteria) == (0.5, "mean", None)
    assert criterion_names([record]) == ["correct", "grounded", "helpful"]
    assert [r.response_label for r in criterion_records([record], "helpful")] == [2.0]
    with pytest.raises(ValueError, match="no criterion 'nope'"):
        criterion_records([record], "nope")


def test_criteria_round_trip_through_the_lossless_writer(tmp_path: Path) -> None:
    records = read_records(write(tmp_path / "a.jsonl", [row(0), row(1)]))
    write_records_jsonl(records, tmp_path / "b.jsonl")
    written = json.loads((tmp_path / "b.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert "response_label" not in written and written["criteria"]["grounded"]["response_label"] == 0.5
    assert read_records(tmp_path / "b.jsonl") == records


def test_criteria_in_a_csv_cell(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "sentences", "criteria"])
        out.writerow(["a", json.dumps(["x.", "y."]), json.dumps({"c": {"response_label": "1"}, "d": {}})])
    with pytest.raises(InputError) as err:
        read_records(path)
    assert (err.value.line, err.value.field) == (2, "criteria")
    assert "criterion 'd', response_label: missing required field" in str(err.value)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "sentences", "criteria"])
        out.writerow(["a", json.dumps(["x.", "y."]), json.dumps({"c": {"response_label": "1"}})])
    [record] = read_records(path)
    assert record.criteria == {"c": CriterionLabels(1.0, "max", None)}


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"response_label": 1}, "response_label", "given per criterion"),
        ({"aggregation": "max"}, "aggregation", "given per criterion"),
        ({"criteria": []}, "criteria", "must be an object of criteria"),
        ({"criteria": {}}, "criteria", "at least one criterion"),
        ({"criteria": {" ": {"response_label": 1}}}, "criteria", "non-empty text"),
        ({"criteria": {"a\x00": {"response_label": 1}}}, "criteria", "NUL character"),
        ({"criteria": {"a": 1}}, "criteria", "criterion 'a': must be an object"),
        ({"criteria": {"a": {"response_label": 1, "label": 1}}}, "criteria", "unknown field 'label'"),
        (
            {"criteria": {"a": {"response_label": True}}},
            "criteria",
            "criterion 'a', response_label: must be a",
        ),
        ({"criteria": {"a": {"response_label": 1, "aggregation": "sum"}}}, "criteria", "unknown aggregation"),
        (
            {"criteria": {"a": {"response_label": 2, "aggregation": "min"}}},
            "criteria",
            "not an integer in 0..1",
        ),
        ({"criteria": {"a": {"response_label": 1.5, "aggregation": "mean"}}}, "criteria", "outside [0, 1]"),
        (
            {"criteria": {"a": {"response_label": 0, "sentence_labels": [0, 1, 0]}}},
            "criteria",
            "criterion 'a', response_label:",
        ),
        ({"criteria": {"a": {"response_label": 1, "sentence_labels": [0, 1]}}}, "criteria", "2 labels for 3"),
    ],
)
def test_bad_criteria_are_refused_naming_file_line_and_field(
    tmp_path: Path, changes: dict[str, Any], field: str, message: str
) -> None:
    path = write(tmp_path / "bad.jsonl", [row(0), row(1, **changes)])
    with pytest.raises(InputError) as err:
        read_records(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 2, field)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "other",
    [
        {"criteria": {"correct": {"response_label": 1}}},  # fewer criteria
        {"criteria": {**row()["criteria"], "correct": {"response_label": 0.5, "aggregation": "mean"}}},
        {"criteria": dict(reversed(list(row()["criteria"].items())))},  # another order
    ],
)
def test_every_row_declares_the_same_criteria(tmp_path: Path, other: dict[str, Any]) -> None:
    path = write(tmp_path / "mixed.jsonl", [row(0), row(1, **other)])
    with pytest.raises(InputError) as err:
        read_records(path)
    assert (err.value.line, err.value.field) == (2, "criteria")
    assert "every row must declare the same criteria" in str(err.value)


def test_a_single_label_row_after_criteria_rows_is_refused(tmp_path: Path) -> None:
    single = {"id": "s", "sentences": ["a."], "response_label": 0}
    with pytest.raises(InputError) as err:
        read_records(write(tmp_path / "mixed.jsonl", [row(0), single]))
    assert (err.value.line, err.value.field) == (2, "criteria")
    assert "no criteria (a single response_label)" in str(err.value)
