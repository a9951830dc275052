"""AppTest of Agreement: no per-hour rate from a handful of labels or minutes, and only people's labels count
(the user who imported a file's labels is not an annotator)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db import repository as repo
from db.models import utcnow
from tests.app.conftest import app_test
from tests.app.data import tiny_records


def _label(store, dataset_id: int, who: str, n: int, value: int = 0) -> None:
    """``who`` labels the first ``n`` sentences of the dataset ``value`` (one action per response), as Review
    would."""
    page = repo.list_responses(store.engine, dataset_id, sort="id", page=0, page_size=100)
    left = n
    for row in page.rows:
        if left <= 0:
            break
        sentences = repo.get_response(store.engine, row.id).sentences[:left]
        repo.record_labels(store.engine, row.id, {s.id: value for s in sentences}, who)
        left -= len(sentences)


def _progress(at) -> dict[str, dict[str, object]]:
    [table] = [d for d in at.dataframe if "per hour" in d.value.columns]
    return {r["annotator"]: r for r in table.value.to_dict("records")}


def test_rates_need_a_sample_and_time(store, monkeypatch) -> None:
    from db.repository import label_events

    ds = store.ingest(tiny_records(16), name="work")
    # bob started half an hour ago (the label history is append-only: its clock is set while he labels)
    half_an_hour_ago = utcnow() - timedelta(minutes=30)
    with monkeypatch.context() as clock:
        clock.setattr(label_events, "utcnow", lambda: half_an_hour_ago)
        _label(store, ds.dataset_id, "bob", 1)
    _label(store, ds.dataset_id, "bob", 30)  # the first sentence again, unchanged: 29 more changes
    _label(store, ds.dataset_id, "ann", 3, value=1)
    _label(store, ds.dataset_id, "cy", 30, value=1)  # 27 changes (ann set 3 of them) in seconds
    at = app_test("views/agreement.py")
    assert not at.exception, at.exception
    rows = _progress(at)
    assert rows["ann"]["per hour"] == "too few"  # 3 labels
    assert rows["cy"]["per hour"] == "too few"  # 27 labels in under a minute
    assert rows["bob"]["label changes"] == 30 and rows["bob"]["per hour"] == "60"  # 30 over 30 minutes


def test_the_importing_user_is_not_an_annotator(store) -> None:
    """Labels that came with a file are recorded under whoever imported it; they are not a person's labels.
    (Needs the store's source vocabulary, in which progress counts labels people set: skipped without it.)"""
    pytest.importorskip("db.sources")
    ds = store.ingest(tiny_records(8, with_labels=True), name="work")  # imported by import:<file name>
    _label(store, ds.dataset_id, "ann", 4, value=1)
    at = app_test("views/agreement.py")
    assert not at.exception, at.exception
    rows = _progress(at)
    assert set(rows) == {"ann"} and rows["ann"]["label changes"] == 4
