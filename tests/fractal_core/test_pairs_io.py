"""Pairs files: both layouts, every format, and bad rows refused with file, line and field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from fractal_core.data.pairs import iter_pairs, pair_table, read_pairs
from fractal_core.errors import InputError


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {
        "id": "p1",
        "context": "2 + 2?",
        "a_sentences": ["2 + 2 = 5.", "So 5."],
        "b_text": "2 + 2 = 4. So the answer is 4.",
        "b_id": "good",
        "preferred": "b",
        "strength": 0.5,
    },
    {
        "id": "p2",
        "context": "2 + 2?",
        "chosen_id": "good",
        "chosen_text": "2 + 2 = 4. So the answer is 4.",
        "rejected_sentences": ["It is 3."],
        "rejected_response_label": 1,
    },
]


def test_both_layouts_read_and_share_a_response(tmp_path: Path) -> None:
    pairs = read_pairs(_jsonl(tmp_path / "p.jsonl", ROWS))
    assert [p.id for p in pairs] == ["p1", "p2"]
    first = pairs[0]
    assert first.chosen.id == "good" and first.rejected.id == "p1:a" and first.strength == 0.5
    assert first.chosen.sentences == ["2 + 2 = 4.", "So the answer is 4."]  # raw text segmented
    assert math.isnan(first.chosen.response_label)
    assert pairs[1].rejected.response_label == 1.0 and pairs[1].strength == 1.0
    responses, table = pair_table(pairs)
    assert [r.id for r in responses] == ["good", "p1:a", "p2:rejected"]
    assert table == [(0, 1, 0.5), (0, 2, 1.0)]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tabular_formats(tmp_path: Path, fmt: str) -> None:
    rows = [
        {
            "id": "p1",
            "context": "q",
            "a_sentences": json.dumps(["x is y.", "z."]),
            "b_text": "w is v.",
            "preferred": "a",
            "strength": "0.25",
        },
    ]
    path = tmp_path / f"p.{fmt}"
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    (pair,) = read_pairs(path)
    assert pair.chosen.sentences == ["x is y.", "z."] and pair.rejected.text == "w is v."
    assert pair.strength == 0.25


@pytest.mark.parametrize(
    ("row", "field", "why"),
    [
        ({"preferred": "c"}, "preferred", 'must be "a" or "b"'),
        ({"strength": 1.5}, "strength", "[0, 1]"),
        ({"b_text": ""}, "b_text", "empty"),
        ({"a_response_label": "x"}, "a_response_label", "number"),
        ({"colour": 1}, "colour", "unknown field"),
        ({"chosen_text": "x."}, "preferred", "mixes"),
        ({"b_id": "p1:a"}, "b_id", "different responses"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, row: dict, field: str, why: str) -> None:
    good = {"id": "p1", "a_text": "One. Two.", "b_text": "Three.", "preferred": "a"}
    path = _jsonl(tmp_path / "p.jsonl", [dict(good, id="p0"), {**good, **row}])
    with pytest.raises(InputError) as err:
        read_pairs(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 2, field)
    assert why in err.value.reason


def test_a_response_id_reused_for_another_text_is_refused(tmp_path: Path) -> None:
    rows = [
        {"id": "p1", "a_id": "r", "a_text": "One.", "b_text": "Two.", "preferred": "a"},
        {"id": "p2", "a_id": "r", "a_text": "Other.", "b_text": "Two.", "preferred": "a"},
    ]
    with pytest.raises(InputError, match="another text"):
        list(iter_pairs(_jsonl(tmp_path / "p.jsonl", rows)))


def test_duplicate_pair_ids_and_empty_files(tmp_path: Path) -> None:
    row = {"id": "p1", "a_text": "One.", "b_text": "Two.", "preferred": "a"}
    with pytest.raises(InputError, match="duplicate pair id"):
        read_pairs(_jsonl(tmp_path / "p.jsonl", [row, row]))
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_pairs(tmp_path / "e.jsonl")
