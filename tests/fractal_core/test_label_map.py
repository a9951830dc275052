"""fractal_core.data.io: response labels written as words are mapped before validation; a value the mapping
does not list is refused with its file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fractal_core.data import io
from fractal_core.errors import InputError

CSV = (
    "id,answer,verdict\n"
    'a,"It is 2. Done.",correct\n'
    'b,"It is\nthree. Done.", wrong \n'  # a quoted newline: row c starts on line 5
    "c,It is 4.,maybe\n"
)


def _csv(tmp_path: Path, text: str = CSV) -> Path:
    path = tmp_path / "verdicts.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_words_become_labels(tmp_path: Path) -> None:
    path = _csv(tmp_path, CSV.replace("maybe", "correct"))
    records = io.read_records(
        path, column_map={"answer": "text", "verdict": "response_label"}, label_map={"correct": 0, "wrong": 1}
    )
    assert [r.response_label for r in records] == [0.0, 1.0, 0.0]


def test_an_unmapped_value_is_refused_with_file_line_and_field(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    with pytest.raises(InputError) as caught:
        list(
            io.iter_records(
                path,
                column_map={"answer": "text", "verdict": "response_label"},
                label_map={"correct": 0, "wrong": 1},
            )
        )
    err = caught.value
    assert (err.line, err.field) == (5, "response_label")
    assert "maybe" in err.reason and "'correct', 'wrong'" in err.reason
    assert str(err).startswith(f"{path}:5:")


def test_without_a_mapping_words_are_still_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        list(io.iter_records(_csv(tmp_path), column_map={"answer": "text", "verdict": "response_label"}))
    assert (caught.value.line, caught.value.field) == (2, "response_label")
