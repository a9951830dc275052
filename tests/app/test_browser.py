"""End to end in Debian's Chromium: upload, review, keyboard correction, reload, train, new scores; XSS inertness.

Each test starts ``streamlit run app/main.py`` (and the worker when needed) on a free port over a temp store.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.app.data import tiny_records, write_jsonl
from tests.app.xss_payloads import XSS_PAYLOADS

pytestmark = pytest.mark.browser
LONG = 60_000  # ms: a training job on two shared cores


def _settle(page: Page) -> None:
    """Wait until Streamlit finished the current run (its status widget shows while a script runs)."""
    page.wait_for_load_state("networkidle")
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=LONG)


def _press(page: Page, key: str, done, attempts: int = 3) -> None:
    """Press a shortcut and wait for its effect; re-press only if the first press was not picked up
    (Streamlit registers shortcut listeners after rendering the button)."""
    for attempt in range(attempts):
        page.locator("body").press(key)
        try:
            done(10_000)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def test_upload_review_correct_reload_train(app_server_factory, page: Page, tmp_path: Path) -> None:
    srv = app_server_factory()
    srv.start_worker()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # Upload a file on the Data page.
    data = write_jsonl(tmp_path / "tiny.jsonl", tiny_records(12))
    page.goto(f"{srv.url}/data")
    page.locator("input[type=file]").set_input_files(str(data))
    expect(page.get_by_text("Preview")).to_be_visible(timeout=LONG)
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text("Imported 12 responses")).to_be_visible(timeout=LONG)

    # Train with the quick preset and watch the job reach done.
    page.goto(f"{srv.url}/train")
    _settle(page)
    page.get_by_test_id("stSelectbox").nth(2).click()  # Settings (after the dataset picker and Method)
    page.get_by_role("option", name=re.compile("Quick look")).click()
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_test_id("stProgress").first).to_be_visible(timeout=LONG)
    expect(page.get_by_text(re.compile(r"Done: model version 1 is active"))).to_be_visible(timeout=3 * LONG)

    # Review: sentences are highlighted with the new version's scores (a colour bin, not "not scored").
    page.goto(f"{srv.url}/")
    _settle(page)
    first = page.locator("#fs-sent-0")
    expect(first).to_have_class(re.compile(r"\bfs-s\d\b"), timeout=LONG)
    expect(page.locator(".fs-response .fs-none")).to_have_count(0)
    expect(page.get_by_text("Keyboard", exact=True)).to_be_visible()

    # Correct sentence 2 with the keyboard: J moves the cursor, then the label key matching the response label
    # (always consistent with a max bag).
    label = page.get_by_test_id("stMetricValue").first.inner_text().strip()
    assert label in ("0", "1")
    _press(
        page,
        "j",
        lambda t: expect(page.locator("#fs-sent-1")).to_have_class(re.compile("fs-focus"), timeout=t),
    )
    _press(page, label, lambda t: expect(page.locator("#fs-sent-1 .fs-gold")).to_have_count(1, timeout=t))
    expect(page.locator(f"#fs-sent-1 .fs-gold-{label}")).to_have_count(1)
    response_url = page.url
    assert "response=" in response_url

    # Reload: the same response comes back with the stored label.
    page.reload()
    _settle(page)
    expect(page.locator(f"#fs-sent-1 .fs-gold-{label}")).to_have_count(1, timeout=LONG)
    assert page.url == response_url

    # Retrain with the correction as gold: a second version becomes active.
    page.goto(f"{srv.url}/train")
    _settle(page)
    page.get_by_test_id("stSelectbox").nth(2).click()
    page.get_by_role("option", name=re.compile("Quick look")).click()
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text(re.compile(r"Done: model version 2 is active"))).to_be_visible(timeout=3 * LONG)

    # Export the native JSONL: the correction is in it, with who made it.
    page.goto(f"{srv.url}/export")
    _settle(page)
    page.get_by_role("button", name="Prepare download").click()
    with page.expect_download(timeout=LONG) as info:
        page.get_by_role("button", name=re.compile("Download")).click()
    exported = Path(info.value.path()).read_text()
    assert '"annotator": "tester"' in exported and '"source": "gold"' in exported
    assert dialogs == []


def test_xss_payloads_render_inert_in_chromium(app_server_factory, page: Page) -> None:
    sentences = [f"Step {i}: {p}" for i, p in enumerate(XSS_PAYLOADS)]

    def prepare(db_url: str, home: Path) -> None:
        from db.engine import get_engine
        from db.ingest import ingest_file

        rec = {
            "id": "<b id='pwned'>x</b>",
            "context": XSS_PAYLOADS[0] + " " + XSS_PAYLOADS[5],
            "sentences": sentences,
            "response_label": 1,
            "aggregation": "max",
        }
        path = write_jsonl(home / "xss.jsonl", [rec])
        engine = get_engine(db_url)
        summary = ingest_file(engine, path, "xss")
        # Annotator names are user text too: one label by a hostile name.
        from db import repository as repo

        rid = repo.list_responses(engine, summary.dataset_id, sort="id").rows[0].id
        sentence = repo.get_response(engine, rid).sentences[1]
        repo.record_label(engine, sentence.id, 1, XSS_PAYLOADS[1])

    srv = app_server_factory(prepare)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for path in (
        "/?who=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%20class%3Dpwned%3E",
        "/gold",
        "/data",
        "/models",
    ):
        page.goto(f"{srv.url}{path}")
        _settle(page)
        if path.startswith("/?"):
            expect(page.locator(".fs-response")).to_have_count(1, timeout=LONG)
            # Every payload is visible as literal text inside the highlighted response.
            text = page.locator(".fs-response").inner_text()
            for payload in XSS_PAYLOADS:
                assert payload in text, payload
            assert XSS_PAYLOADS[0] in page.locator(".fs-context").inner_text()
            expect(page.locator(".fs-response *:not(span)")).to_have_count(0)
        expect(page.locator("#pwned, .pwned")).to_have_count(0)
        expect(page.locator(".katex")).to_have_count(0)  # LaTeX stays text
        expect(page.locator("a[href^='javascript']")).to_have_count(0)
        expect(page.locator("iframe[src^='javascript'], details[ontoggle], svg[onload]")).to_have_count(0)
    assert dialogs == []
