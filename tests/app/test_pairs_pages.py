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


def test_export_page_writes_the_pairs(store, tmp_path) -> None:
    from app.settings import load_settings

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    app_test()
    ingest_pairs(store.engine, path, "prefs", imported_by="tester")
    at = app_test("views/export.py")
    assert not at.exception, at.exception
    at.button(key="export_pairs_prepare").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    out = load_settings(store.db_url).exports_dir / "prefs-pairs.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3"]
    assert rows[0]["chosen"] == "It is 2. Done." and rows[0]["rejected_scores"] is None  # no model yet
    assert rows[0]["preference_annotator"] == "tester"


def test_pairs_page_shows_a_pair_side_by_side_and_opens_review(store, tmp_path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    app_test()
    ingest_pairs(store.engine, path, "prefs", imported_by="tester")
    at = app_test("views/pairs.py")
    assert not at.exception, at.exception
    titles = "\n".join(h.proto.body for h in at.html)
    assert "Chosen <code>p0:b</code>" in titles and "Rejected <code>p0:a</code>" in titles
    shown = "\n".join(m.value for m in at.markdown)
    assert "It is 5." in shown and "It is 2." in shown
    assert sum("Not scored yet" in c.value for c in at.caption) == 2
    at.number_input(key="pairs_index").set_value(2).run()
    assert "p1:a" in "\n".join(h.proto.body for h in at.html)
    at.button(key="pairs_open_rejected").click().run()
    assert not at.exception, at.exception
    assert any(m.value == "none" for m in at.metric)  # Review shows the pair's unlabelled response


@pytest.mark.slow
def test_pairs_page_colours_a_trained_pair(store, tmp_path) -> None:
    from db import repository as repo
    from tests.app.data import FAST_TRAIN

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    app_test()
    summary = ingest_pairs(store.engine, path, "prefs", imported_by="tester")
    repo.create_job(
        store.engine,
        "train",
        {"dataset_id": summary.dataset_id, "method": "fractal", "config": FAST_TRAIN, "seed": 0},
    )
    store.run_jobs()
    at = app_test("views/pairs.py")
    assert not at.exception, at.exception
    assert not any("Not scored yet" in c.value for c in at.caption)
