"""Review in Chromium on a dataset of a group of criteria: the C key opens the same response judged on the
next criterion, and a label key then labels that criterion only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.app.data import write_jsonl

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # starts the app
LONG = 60_000


def _prepare(db_url: str, home: Path) -> None:
    from db.engine import get_engine
    from db.ingest import ingest_file

    steps = ["First we add two and two.", "That gives four.", "So the answer is four."]
    rows = [
        {
            "id": "q1",
            "sentences": steps,
            "criteria": {"wrong": {"response_label": 0}, "helpful": {"response_label": 1}},
        }
    ]
    ingest_file(get_engine(db_url), write_jsonl(home / "rated.jsonl", rows), "rated")


def _ids(db_url: str) -> dict[str, int]:
    from db import repository as repo
    from db.engine import get_engine

    return {str(d.criterion): d.id for d in repo.list_datasets(get_engine(db_url))}


def _labels(db_url: str) -> dict[str, list[int | None]]:
    from db import repository as repo
    from db.engine import get_engine

    engine = get_engine(db_url)
    out = {}
    for ds in repo.list_datasets(engine):
        rid = repo.response_id_by_external(engine, ds.id, "q1")
        assert rid is not None
        out[str(ds.criterion)] = [s.label for s in repo.get_response(engine, rid).sentences]
    return out


def test_c_switches_criterion_and_labels_go_to_it(app_server_factory, page: Page) -> None:
    srv = app_server_factory(_prepare)
    ids = _ids(srv.db_url)
    page.goto(f"{srv.url}/review?dataset={ids['helpful']}")
    expect(page.locator("#fs-sent-0")).to_be_visible(timeout=LONG)
    expect(page.get_by_role("radio", name="wrong")).to_be_visible(timeout=LONG)  # the Criterion selector
    expect(page.locator(".fs-criterion")).to_have_text("Criterion: helpful", timeout=LONG)
    page.keyboard.press("c")
    page.keyboard.press("1")  # pressed before the other criterion arrived: must not label "helpful"
    expect(page).to_have_url(re.compile(rf"dataset={ids['wrong']}\b"), timeout=LONG)
    expect(page.locator(".fs-criterion")).to_have_text("Criterion: wrong", timeout=LONG)
    expect(page.locator(".fs-status")).to_have_text("All changes saved", timeout=LONG)
    page.keyboard.press("0")
    expect(page.locator(".fs-status")).to_have_text("All changes saved", timeout=LONG)
    assert _labels(srv.db_url) == {"helpful": [None, None, None], "wrong": [0, None, None]}
