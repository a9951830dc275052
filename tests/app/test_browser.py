"""End to end in Debian's Chromium: upload, review, keyboard correction, reload, train, new scores; XSS inertness.

Each test starts ``streamlit run app/web.py`` (and the worker when needed) on a free port over a temp store.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.app.data import tiny_records, write_jsonl
from tests.app.xss_payloads import LATEX_PAYLOADS, XSS_PAYLOADS

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # starts the app and a worker
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
    expect(page.locator(".fs-help-btn")).to_be_visible()  # the keys' help (?)

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
    expect(page.locator(".fs-status")).to_have_text(
        "All changes saved", timeout=LONG
    )  # stored before the reload
    response_url = page.url
    assert "response=" in response_url

    # Reload: the same response comes back with the stored label.
    page.reload()
    _settle(page)
    expect(page.locator(f"#fs-sent-1 .fs-gold-{label}")).to_have_count(1, timeout=LONG)
    assert page.url == response_url

    # Retrain with the correction as gold: one gold sentence is no evidence that version 2 is not worse, so it
    # waits for a person, who activates it with one click.
    page.goto(f"{srv.url}/train")
    _settle(page)
    page.get_by_test_id("stSelectbox").nth(2).click()
    page.get_by_role("option", name=re.compile("Quick look")).click()
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text(re.compile(r"Done: model version 2 is waiting"))).to_be_visible(timeout=3 * LONG)
    page.get_by_role("button", name="Activate version 2").click()
    expect(page.get_by_text(re.compile(r"Done: model version 2 is active"))).to_be_visible(timeout=LONG)

    # Export the native JSONL: the correction is in it, with who made it.
    page.goto(f"{srv.url}/export")
    _settle(page)
    page.get_by_role("button", name="Prepare download").click()
    with page.expect_download(timeout=LONG) as info:
        page.get_by_role("button", name=re.compile("Download")).click()
    exported = Path(info.value.path()).read_text()
    assert '"annotator": "tester"' in exported and '"source": "human"' in exported
    assert dialogs == []


# Every element inside a rendered response or context: our spans/divs or allow-listed MathML, and no attribute
# that can run code, load something or restyle the page.
_MARKUP_PROBLEMS_JS = """root => {
  const ok = new Set(["div", "span", "math", "mrow", "mi", "mn", "mo", "ms", "mspace", "mtext", "msub", "msup",
    "msubsup", "mfrac", "msqrt", "mroot", "mstyle", "merror", "mpadded", "mphantom", "menclose", "munder", "mover",
    "munderover", "mtable", "mtr", "mtd", "mlabeledtr", "mmultiscripts", "mprescripts", "none"]);
  const bad = [];
  for (const el of root.querySelectorAll("*")) {
    if (!ok.has(el.localName)) bad.push(el.localName);
    for (const a of el.attributes) {
      if (/^on|^href$|^src$|^style$|xlink/i.test(a.name) || /javascript/i.test(a.value) && a.name !== "title")
        bad.push(el.localName + "@" + a.name);
    }
  }
  return bad;
}"""
# The text a reader sees, with each rendered formula counted as its source (kept in its title).
_SOURCE_TEXT_JS = """root => {
  const c = root.cloneNode(true);
  c.querySelectorAll(".fs-math").forEach(m => m.replaceWith(m.title));
  return c.textContent;
}"""


def test_xss_payloads_render_inert_in_chromium(app_server_factory, page: Page) -> None:
    payloads = XSS_PAYLOADS + LATEX_PAYLOADS
    sentences = [f"Step {i}: {p}" for i, p in enumerate(payloads)]

    def prepare(db_url: str, home: Path) -> None:
        from db.engine import get_engine
        from db.ingest import ingest_file

        rec = {
            "id": "<b id='pwned'>x</b>",
            "context": XSS_PAYLOADS[0] + " " + XSS_PAYLOADS[5] + " " + LATEX_PAYLOADS[0] + " $x^2$",
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
        # Comments and guidelines are user text as well.
        from db import team

        for payload in XSS_PAYLOADS:
            team.add_note(engine, rid, XSS_PAYLOADS[2], payload, "unsure")
        team.set_guidelines(engine, summary.dataset_id, "\n\n".join(XSS_PAYLOADS + LATEX_PAYLOADS))

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
            # Every payload is visible inside the highlighted response: as literal text, or a formula that
            # renders as MathML (whose source is one hover away).
            text = page.locator(".fs-response").evaluate(_SOURCE_TEXT_JS)
            for payload in payloads:
                assert payload in text, payload
            assert XSS_PAYLOADS[0] in page.locator(".fs-context").inner_text()
            assert LATEX_PAYLOADS[0] in page.locator(".fs-context").inner_text()  # \href stays source text
            expect(page.locator(".fs-context math")).to_have_count(1)  # $x^2$
            assert page.locator(".fs-response math").count() >= 3  # the harmless formulas render
            for box in (".fs-response", ".fs-context"):
                assert page.locator(box).evaluate(_MARKUP_PROBLEMS_JS) == []
            # Open the guidelines and the comments: every payload shows as text, nothing runs.
            for title in ("Guidelines", "Comments and flags"):
                page.get_by_text(title, exact=True).click()
            expect(page.get_by_text(XSS_PAYLOADS[3]).first).to_be_visible(timeout=LONG)
        expect(page.locator("#pwned, .pwned")).to_have_count(0)
        expect(page.locator(".katex")).to_have_count(0)  # Streamlit's own Markdown math never sees user text
        expect(page.locator("a[href^='javascript']")).to_have_count(0)
        expect(page.locator("iframe[src^='javascript'], details[ontoggle], svg[onload]")).to_have_count(0)
    assert dialogs == []


RTL_SENTENCES = [
    "First we read the question.",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645.",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd.",
    "Then we answer in English.",
]


def test_demo_review_renders_math_fits_the_list_and_isolates_rtl(app_server_factory, page: Page) -> None:
    def prepare(db_url: str, home: Path) -> None:
        from db.engine import get_engine
        from db.ingest import ingest_file
        from fractal_core.data.demo import demo_path

        engine = get_engine(db_url)
        ingest_file(engine, demo_path(), "demo")
        rec = {"id": "rtl-1", "sentences": RTL_SENTENCES, "response_label": 0, "aggregation": "max"}
        ingest_file(engine, write_jsonl(home / "rtl.jsonl", [rec]), "rtl")

    srv = app_server_factory(prepare)
    page.goto(f"{srv.url}/?dataset=1")
    _settle(page)
    # The demo (ProcessBench math) shows formulas as MathML in the context and the sentences, not as LaTeX.
    expect(page.locator(".fs-response math").first).to_be_visible(timeout=LONG)
    expect(page.locator(".fs-context math").first).to_be_visible()
    assert "\\(" not in page.locator(".fs-response").inner_text()
    # The list fits its column: no horizontal scrolling to reach the gold column.
    scroller = page.locator("[data-testid=stDataFrame] .dvn-scroller").first
    expect(scroller).to_be_visible(timeout=LONG)
    width, visible = scroller.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert width <= visible, (width, visible)

    # Right-to-left sentences: each number stays just before (left of) its own sentence in this LTR response.
    page.goto(f"{srv.url}/?dataset=2")
    _settle(page)
    expect(page.locator("#fs-sent-3")).to_be_visible(timeout=LONG)
    for i in range(len(RTL_SENTENCES)):
        # The first line box of the sentence text (a wrapped sentence has several).
        number_right, text_left = page.locator(f"#fs-sent-{i}").evaluate(
            "e => [e.querySelector('.fs-idx').getBoundingClientRect().right,"
            " e.querySelector('.fs-txt').getClientRects()[0].left]"
        )
        assert number_right <= text_left + 1, (i, number_right, text_left)


def test_review_updates_when_a_training_job_finishes(app_server_factory, page: Page) -> None:
    from tests.app.data import FAST_TRAIN

    def prepare(db_url: str, home: Path) -> None:
        from db.engine import get_engine
        from db.ingest import ingest_file

        ingest_file(get_engine(db_url), write_jsonl(home / "tiny.jsonl", tiny_records(8)), "tiny")

    srv = app_server_factory(prepare)
    page.goto(f"{srv.url}/")
    _settle(page)
    expect(page.get_by_text(re.compile("not scored yet"))).to_be_visible(timeout=LONG)
    expect(page.locator(".fs-response .fs-none").first).to_be_visible(timeout=LONG)
    url = page.url

    # A job trains and activates a version while the page stays open (no reload, no click).
    from app.settings import load_settings
    from app.worker import Worker
    from db import repository as repo
    from db.engine import get_engine

    engine = get_engine(srv.db_url)
    dataset = repo.list_datasets(engine)[0]
    repo.create_job(engine, "train", {"dataset_id": dataset.id, "method": "fractal", "config": FAST_TRAIN})
    Worker(load_settings(srv.db_url)).run(once=True)
    assert repo.active_model_version_id(engine, dataset.id) is not None

    expect(page.locator(".fs-response .fs-none")).to_have_count(0, timeout=LONG)
    expect(page.locator("#fs-sent-0")).to_have_class(re.compile(r"\bfs-s\d\b"))
    expect(page.get_by_text(re.compile("scores from the active model"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"Job \d+ \(train\)"))).to_have_count(0)
    assert page.url == url
