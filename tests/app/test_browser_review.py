"""The Review component in Chromium: labels typed as fast as the browser allows survive an immediate reload
(all stored, in order, with who set them), a contradiction blocks every other key until answered, and a stale
save is refused with the other person's label."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.app.data import write_jsonl

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # starts the app
LONG = 60_000
N = 20


def _long_response(home: Path) -> Path:
    steps = [f"Step {i + 1}: we add {i} and {i + 1} to get {2 * i + 1}." for i in range(N)]
    rec = {"id": "long-1", "sentences": steps, "response_label": 0, "aggregation": "max"}
    rec2 = {"id": "long-2", "sentences": steps[:3], "response_label": 0, "aggregation": "max"}
    return write_jsonl(home / "long.jsonl", [rec, rec2])


def _prepare(db_url: str, home: Path) -> None:
    from db.engine import get_engine
    from db.ingest import ingest_file

    ingest_file(get_engine(db_url), _long_response(home), "long")


def _history(db_url: str, external_id: str = "long-1"):
    from db import repository as repo
    from db.engine import get_engine

    engine = get_engine(db_url)
    ds = repo.list_datasets(engine)[0]
    rid = next(
        r.id for r in repo.list_responses(engine, ds.id, sort="id").rows if r.external_id == external_id
    )
    detail = repo.get_response(engine, rid)
    position = {s.id: s.position for s in detail.sentences}
    events = sorted(repo.label_history(engine, response_id=rid), key=lambda h: h.event_id)
    return [(position[h.sentence_id], h.new_label, h.annotator, h.source) for h in events], detail


def _open(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#fs-sent-0")).to_be_visible(timeout=LONG)
    expect(page.locator(".fs-status")).to_have_text("All changes saved", timeout=LONG)


def test_twenty_fast_labels_then_an_immediate_reload_are_all_stored_in_order(
    app_server_factory, page: Page
) -> None:
    srv = app_server_factory(_prepare)
    _open(page, f"{srv.url}/?dataset=1&response=1&i=0")
    for _ in range(N):
        page.keyboard.press("0")  # label the sentence fine; the cursor moves on
    # Recoloured in the browser at once, before any answer from the server.
    expect(page.locator(f"#fs-sent-{N - 1} .fs-gold-0")).to_have_count(1)
    page.reload()
    deadline = time.monotonic() + 60
    history: list = []
    while time.monotonic() < deadline:
        history, _ = _history(srv.db_url)
        if len(history) >= N:
            break
        time.sleep(0.5)
    assert history == [(i, 0, "tester", "human") for i in range(N)]
    # After the reload the page shows them as saved, and nothing is pending.
    expect(page.locator(".fs-status")).to_have_text("All changes saved", timeout=LONG)
    expect(page.locator("#fs-row-19")).to_have_attribute("data-state", "saved", timeout=LONG)


def test_contradiction_blocks_other_keys_and_applies_to_its_own_change(
    app_server_factory, page: Page
) -> None:
    srv = app_server_factory(_prepare)
    _open(page, f"{srv.url}/?dataset=1&response=1&i=0")
    page.keyboard.press("1")  # a problem in a response labelled 0 (max): contradiction
    modal = page.locator(".fs-modal")
    expect(modal).to_contain_text("Store it anyway?", timeout=LONG)
    for key in ("j", "0", "x", "n", "s"):  # blocked while the question is open
        page.keyboard.press(key)
    expect(modal).to_be_visible()
    page.keyboard.press("Escape")
    expect(modal).to_be_hidden()
    expect(page.locator("#fs-sent-0 .fs-gold")).to_have_count(0)  # cancelled: the change is gone
    page.keyboard.press("k")  # back to sentence 1 (the cursor had moved on after the label)
    page.keyboard.press("1")
    expect(modal).to_contain_text("Store it anyway?", timeout=LONG)
    page.keyboard.press("y")
    expect(page.locator(".fs-status")).to_have_text("All changes saved", timeout=LONG)
    history, _ = _history(srv.db_url)
    assert history == [(0, 1, "tester", "human")]


def test_stale_save_is_refused_and_shows_the_other_persons_label(app_server_factory, page: Page) -> None:
    srv = app_server_factory(_prepare)
    _open(page, f"{srv.url}/?dataset=1&response=1&i=0")
    from db import repository as repo
    from db.engine import get_engine

    _, detail = _history(srv.db_url)
    # Bob labels sentence 2 after this page was read; the page still shows it unlabelled.
    repo.record_labels(get_engine(srv.db_url), detail.id, {detail.sentences[1].id: 1}, "<b>bob</b>")
    page.keyboard.press("j")
    page.keyboard.press("0")
    modal = page.locator(".fs-modal")
    expect(modal).to_contain_text("someone changed these labels", timeout=LONG)
    expect(modal).to_contain_text("<b>bob</b> set 1")  # names are text, never markup
    page.keyboard.press("Escape")  # keep theirs
    expect(modal).to_be_hidden()
    history, _ = _history(srv.db_url)
    assert [h for h in history if h[2] == "tester"] == []


def test_help_and_raw_score_keys(app_server_factory, page: Page) -> None:
    srv = app_server_factory(_prepare)
    _open(page, f"{srv.url}/review?dataset=1")  # /review opens Review
    help_box = page.locator(".fs-help")
    expect(help_box).to_be_hidden()
    page.keyboard.press("?")
    expect(help_box).to_be_visible()
    expect(help_box).to_contain_text(re.compile("rest are fine"))
    page.keyboard.press("?")
    expect(help_box).to_be_hidden()
