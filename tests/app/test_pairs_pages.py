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


def test_data_page_uploads_pairs_and_refuses_a_bad_row(store) -> None:
    from db import repository as repo

    at = app_test("views/data.py")
    at.toggle(key="pairs_mode").set_value(True).run()
    assert not at.exception, at.exception
    bad = [*ROWS[:1], {**ROWS[1], "preferred": "c"}]
    at.file_uploader[0].upload(
        "bad.jsonl", "".join(json.dumps(r) + "\n" for r in bad).encode(), "application/jsonl"
    )
    at.run()
    assert any("Line 2, field preferred" in e.value for e in at.error), [e.value for e in at.error]
    assert not [b for b in at.button if b.key == "pairs_import"]
    at.file_uploader[0].upload(
        "prefs.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS).encode(), "application/jsonl"
    )
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.text_input(key="pairs_dataset").set_value("prefs").run()
    at.button(key="pairs_import").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [ds] = repo.list_datasets(store.engine)
    assert ds.name == "prefs" and ds.n_responses == 8
    from db.pairs_read import load_pairs

    pairs = load_pairs(store.engine, ds.id)
    assert (
        len(pairs) == 4
        and {p.annotator for p in pairs} == {"tester"}
        and {p.source for p in pairs} == {"imported"}
    )
