"""AppTest: every page renders on a dataset of preference pairs (responses without a label of their own)."""

from __future__ import annotations

import json

import pytest

from db.pairs_ingest import ingest_pairs
from tests.app.conftest import app_test
from tests.app.test_pages import PAGES

ROWS = [
    {
        "id": f"p{i}",
        "context": f"What is {i} + 2?",
        "a_text": f"It is {i + 5}. Done.",
        "b_text": f"It is {i + 2}. Done.",
        "preferred": "b",
    }
    for i in range(4)
]


@pytest.mark.parametrize("page", PAGES)
def test_page_with_a_pairs_dataset(store, tmp_path, page: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    app_test()  # creates the store as `fractal serve` does
    ingest_pairs(store.engine, path, "prefs", imported_by="tester")
    at = app_test(page)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    if page == "views/review.py":
        assert any(m.value == "none" for m in at.metric), "the response label of an unlabelled response"
