"""The store keeps one label per response: a file with several criteria is refused whole (file, line, field),
never stored as its first criterion alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import repository as repo
from db.engine import get_engine
from db.ingest import ingest_file
from fractal_core.errors import InputError
from tests.db.conftest import make_rows, store_digest, write_jsonl


def test_a_file_with_several_criteria_is_refused_and_nothing_is_stored(db_url: str, tmp_path: Path) -> None:
    engine = get_engine(db_url)
    ingest_file(engine, write_jsonl(tmp_path / "f.jsonl", make_rows(3)), "demo")
    before = store_digest(engine, logical=True)
    rows = []
    for row in make_rows(4, prefix="c"):
        label = row.pop("response_label")
        row.pop("aggregation", None)
        row.pop("sentence_labels", None)
        row["criteria"] = {"wrong": {"response_label": label}, "helpful": {"response_label": 1 - label}}
        rows.append(row)
    path = write_jsonl(tmp_path / "criteria.jsonl", rows)
    for dataset in ("demo", "fresh"):
        with pytest.raises(InputError) as err:
            ingest_file(engine, path, dataset)
        assert (err.value.line, err.value.field) == (1, "criteria")
        assert "keeps one label per response" in str(err.value)
    assert store_digest(engine, logical=True) == before
    assert [d.name for d in repo.list_datasets(engine)] == ["demo"]
