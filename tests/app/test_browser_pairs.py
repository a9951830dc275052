"""The Pairs page in Chromium: both responses of a pair side by side, labelled with Review's keys without leaving
the page (H / L between the sides); labels are stored as the person's, the colours change once they are, and a
reload shows them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # starts the app
LONG = 60_000
ACTIVE = re.compile(r"\bfs-side-active\b")
FOCUS = re.compile(r"\bfs-focus\b")
ROWS = [
    {
        "id": "p0",
        "context": "What is 3 + 2?",
        "a_text": "First we add. It is 6. Done.",
        "b_text": "First we add. It is 5. Done.",
        "preferred": "b",
    }
]


def _prepare(db_url: str, home: Path) -> None:
    import numpy as np

    from db import repository as repo
    from db.engine import get_engine
    from db.pairs_ingest import ingest_pairs
    from fractal_core.mil.semantics import ResponseSummaries

    path = home / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    engine = get_engine(db_url)
    dataset_id = ingest_pairs(engine, path, "prefs", imported_by="tester").dataset_id
    responses = [r.id for r in repo.list_responses(engine, dataset_id).rows]
    ids = [s.id for r in responses for s in repo.get_response(engine, r).sentences]
    mv = repo.create_model_version(engine, dataset_id, method="hand")
    repo.store_scores(engine, mv.id, ids, np.full(len(ids), 0.3))
    b = len(responses)
    summaries = ResponseSummaries(np.full(b, 0.3), np.full(b, 0.5), np.zeros(b), np.full(b, -1, np.int8))
    repo.store_response_summaries(engine, mv.id, responses, summaries)
    repo.activate_model_version(engine, repo.finish_model_version(engine, mv.id).id)


def _labels(db_url: str) -> dict[str, list[tuple[int | None, str | None, str | None]]]:
    from db import repository as repo
    from db.engine import get_engine

    engine = get_engine(db_url)
    ds = repo.list_datasets(engine)[0]
    out = {}
    for row in repo.list_responses(engine, ds.id).rows:
        detail = repo.get_response(engine, row.id)
        out[detail.external_id] = [(s.label, s.label_source, s.annotator) for s in detail.sentences]
    return out


def test_keys_label_both_sides_and_the_colours_follow(app_server_factory, page: Page) -> None:
    srv = app_server_factory(_prepare)
    page.goto(f"{srv.url}/pairs?dataset=1")
    chosen_first, rejected_first = page.locator("#fs-side0-0"), page.locator("#fs-side1-0")
    expect(chosen_first).to_be_visible(timeout=LONG)
    status = page.locator(".fs-status")
    expect(status).to_have_text("All changes saved", timeout=LONG)
    expect(page.locator(".fs-side-0")).to_have_class(ACTIVE)
    expect(chosen_first).to_have_class(FOCUS, timeout=LONG)  # the cursor starts on the chosen response
    other = page.locator("#fs-side1-2")
    colour_before = other.get_attribute("title")
    assert colour_before and colour_before.startswith("P(problem | preference, labels)")

    page.keyboard.press("l")  # to the rejected side: the cursor moves there
    expect(page.locator(".fs-side-1")).to_have_class(ACTIVE)
    expect(rejected_first).to_have_class(FOCUS)
    expect(chosen_first).not_to_have_class(FOCUS)
    page.keyboard.press("1")  # the rejected response's first sentence is the problem
    expect(rejected_first.locator(".fs-gold-1")).to_have_count(1)
    expect(status).to_have_text("All changes saved", timeout=LONG)
    # Stored, and the pair recoloured given it: the loss is explained, the rest of the loser falls.
    expect(rejected_first).to_have_attribute("title", "P(problem | preference, labels) 1.00", timeout=LONG)
    expect(other).not_to_have_attribute("title", colour_before, timeout=LONG)

    page.keyboard.press("h")  # back to the chosen side, where its cursor was
    page.keyboard.press("0")
    expect(chosen_first.locator(".fs-gold-0")).to_have_count(1)
    expect(status).to_have_text("All changes saved", timeout=LONG)
    expect(page.locator("#fs-row-0")).to_have_attribute("data-state", "saved", timeout=LONG)
    stored = _labels(srv.db_url)
    assert stored["p0:a"][0] == (1, "human", "tester") and stored["p0:b"][0] == (0, "human", "tester")
    assert [s[0] for s in stored["p0:a"][1:] + stored["p0:b"][1:]] == [None] * 4

    page.keyboard.press("?")
    expect(page.locator(".fs-help")).to_contain_text("rejected (right)")
    page.reload()
    expect(page.locator("#fs-side1-0 .fs-gold-1")).to_have_count(1, timeout=LONG)
    expect(page.locator("#fs-side0-0 .fs-gold-0")).to_have_count(1)
    expect(status).to_have_text("All changes saved", timeout=LONG)
