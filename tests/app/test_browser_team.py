"""Two signed-in people in two browser contexts (Chromium): a stale save is refused with the other person's
label and replaced knowingly; an overlap response keeps both annotators' labels apart; a reviewer adjudicates;
a reload stays signed in (cookie) and sign-out ends it; the session cookie is HttpOnly, set by the server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.app.data import tiny_records, write_jsonl
from tests.app.test_browser import LONG, _press, _settle

pytestmark = pytest.mark.browser
PASSWORD = "a long enough password"


def _prepare(db_url: str, home: Path) -> None:
    from db import accounts, team
    from db import repository as repo
    from db.engine import get_engine
    from db.ingest import ingest_file

    engine = get_engine(db_url)
    ingest_file(engine, write_jsonl(home / "solo.jsonl", tiny_records(4)), "solo")  # nobody assigned
    work = ingest_file(engine, write_jsonl(home / "work.jsonl", tiny_records(4)), "work")
    for name, role in (("ann", "annotator"), ("bob", "annotator"), ("rita", "reviewer")):
        accounts.add_user(engine, name, role, PASSWORD)
    team.set_overlap(engine, work.dataset_id, 2, 1.0)
    team.assign(engine, work.dataset_id, ["ann", "bob"])
    assert repo.get_dataset(engine, "solo") is not None


def _sign_in(browser: Browser, url: str, name: str) -> Page:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    _settle(page)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {name}")).to_be_visible(timeout=LONG)
    _settle(page)
    # The page asks the server for the session cookie right after signing in: a test that opens another URL
    # next must wait for it, as a person clicking on would (a goto before it lands on the sign-in page).
    _wait_for_cookie(page, True)
    return page


def _label_first_sentence(page: Page, key: str) -> None:
    _press(page, key, lambda t: expect(page.locator("#fs-sent-0 .fs-gold")).to_have_count(1, timeout=t))
    expect(page.locator(".fs-status")).to_have_text(
        "All changes saved", timeout=LONG
    )  # stored, not just drawn


def _store(db_url: str) -> Any:
    from db.engine import get_engine

    return get_engine(db_url)


def test_stale_save_is_refused_and_replaced_knowingly(app_server_factory, browser: Browser) -> None:
    from db import repository as repo

    srv = app_server_factory(_prepare, auth=True)
    ann = _sign_in(browser, f"{srv.url}/?dataset=1", "ann")
    bob = _sign_in(browser, f"{srv.url}/?dataset=1", "bob")
    for page in (ann, bob):  # both open r001 (labelled 1): any first-sentence label is consistent
        _press(page, "s", lambda t, p=page: expect(p.get_by_text("2 / 4").first).to_be_visible(timeout=t))
        _settle(page)
    _label_first_sentence(bob, "1")
    expect(ann.locator(".fs-status")).to_have_text("All changes saved", timeout=LONG)
    ann.locator("body").press("0")  # ann's page still shows the sentence unlabelled
    modal = ann.locator(".fs-modal")
    expect(modal).to_contain_text("Not saved: someone changed these labels", timeout=LONG)
    expect(modal).to_contain_text("Sentence 1: bob set 1 (human)")
    engine = _store(srv.db_url)
    rid = repo.response_id_by_external(engine, 1, "r001")
    assert rid is not None
    first = repo.get_response(engine, rid).sentences[0]
    assert (first.label, first.annotator) == (1, "bob")
    ann.locator("body").press("y")  # replace with mine
    expect(ann.locator(".fs-status")).to_have_text("All changes saved", timeout=LONG)
    expect(ann.locator("#fs-sent-0 .fs-gold-0")).to_have_count(1, timeout=LONG)
    first = repo.get_response(engine, rid).sentences[0]
    assert (first.label, first.annotator) == (0, "ann")
    # A reload stays signed in (the session cookie); signing out ends the session.
    ann.reload()
    _settle(ann)
    expect(ann.get_by_text("Signed in as ann")).to_be_visible(timeout=LONG)
    ann.get_by_role("button", name="Sign out").click()
    expect(ann.get_by_role("button", name="Sign in")).to_be_visible(timeout=LONG)
    ann.reload()
    _settle(ann)
    expect(ann.get_by_role("button", name="Sign in")).to_be_visible(timeout=LONG)


def test_overlap_labels_apart_then_reviewer_adjudicates(app_server_factory, browser: Browser) -> None:
    from db import repository as repo
    from db import team

    srv = app_server_factory(_prepare, auth=True)
    ann = _sign_in(browser, f"{srv.url}/?dataset=2", "ann")
    bob = _sign_in(browser, f"{srv.url}/?dataset=2", "bob")
    expect(ann.get_by_text(re.compile("Overlap response"))).to_be_visible(timeout=LONG)
    _label_first_sentence(ann, "0")  # r000 is labelled 0: "fine" is consistent
    # The keys are the component's: pressed once its script runs (it writes the status line).
    expect(bob.locator(".fs-status")).to_have_text("All changes saved", timeout=LONG)
    bob.locator("body").press("1")  # "problem" contradicts the response label: the page asks first
    expect(bob.locator(".fs-modal")).to_contain_text("Store it anyway?", timeout=LONG)
    bob.locator("body").press("y")
    expect(bob.locator("#fs-sent-0 .fs-gold-1")).to_have_count(1, timeout=LONG)
    expect(bob.locator(".fs-status")).to_have_text("All changes saved", timeout=LONG)
    _settle(ann)
    expect(ann.locator("#fs-sent-0 .fs-gold-0")).to_have_count(1)  # each sees their own label
    engine = _store(srv.db_url)
    rid = repo.response_id_by_external(engine, 2, "r000")
    assert rid is not None
    by = team.annotations_by_annotator(engine, rid)
    assert sorted(by) == ["ann", "bob"] and {v for labels in by.values() for v in labels.values()} == {0, 1}
    assert repo.get_response(engine, rid).sentences[0].label is None  # gold untouched

    rita = _sign_in(browser, f"{srv.url}/?dataset=2", "rita")
    rita.goto(f"{srv.url}/adjudicate?dataset=2")  # a new browser session: signed in by the cookie
    _settle(rita)
    expect(rita.get_by_text("Response r000")).to_be_visible(timeout=LONG)
    # ann said 0 and bob 1 on the first sentence: a tie is not preselected, the reviewer decides it.
    rita.get_by_role("radiogroup", name="Gold label of sentence 1").get_by_role(
        "radio", name="0", exact=True
    ).click()
    _settle(rita)
    rita.get_by_role("button", name="Set gold labels").click()
    expect(rita.get_by_text(re.compile("Adjudicated r000"))).to_be_visible(timeout=LONG)
    first = repo.get_response(engine, rid).sentences[0]
    assert first.label_source == "adjudicated" and first.annotator == "rita"
    assert team.adjudicated_labels(engine, [rid])[rid]["reviewer"] == "rita"


def _session_cookie(page: Page) -> dict[str, Any] | None:
    return next((c for c in page.context.cookies() if c["name"] == "fractal_session"), None)


def _wait_for_cookie(page: Page, present: bool) -> dict[str, Any] | None:
    """The session cookie once it is (or is no longer) set: the page posts for it right after (signing) in
    or out, so poll the browser's cookie jar for a while rather than race it."""
    for _ in range(300):
        cookie = _session_cookie(page)
        if (cookie is not None) == present:
            return cookie
        page.wait_for_timeout(100)
    raise AssertionError(f"session cookie {'never set' if present else 'still set'}")


def test_the_session_cookie_is_httponly_and_keeps_a_reload_signed_in(
    app_server_factory, browser: Browser
) -> None:
    from db import accounts

    srv = app_server_factory(_prepare, auth=True)
    ann = _sign_in(browser, f"{srv.url}/?dataset=1", "ann")
    cookie = _wait_for_cookie(ann, present=True)
    assert cookie is not None
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain http on 127.0.0.1; over TLS the server adds Secure
    assert "fractal_session" not in ann.evaluate("document.cookie")
    engine = _store(srv.db_url)
    user = accounts.session_user(engine, cookie["value"])
    assert user is not None and user.name == "ann"
    # A reload is a new Streamlit session: signed in by the cookie, which page scripts still cannot read.
    ann.reload()
    _settle(ann)
    expect(ann.get_by_text("Signed in as ann")).to_be_visible(timeout=LONG)
    expect(ann.locator("#fs-sent-0")).to_be_visible(timeout=LONG)  # the app works: the review page is there
    assert "fractal_session" not in ann.evaluate("document.cookie")
    # Sign-out ends the session in the store and the server expires the cookie.
    ann.get_by_role("button", name="Sign out").click()
    expect(ann.get_by_role("button", name="Sign in")).to_be_visible(timeout=LONG)
    assert accounts.session_user(engine, cookie["value"]) is None
    assert _wait_for_cookie(ann, present=False) is None
    ann.reload()
    _settle(ann)
    expect(ann.get_by_role("button", name="Sign in")).to_be_visible(timeout=LONG)
