"""Sign-in and roles in the app (AppTest): no page and no data without a session, each role sees only its
pages, and every action function refuses a user whose role does not allow it, changing nothing."""

from __future__ import annotations

from typing import Any

import pytest

from app import actions, review
from db import accounts
from db import repository as repo
from db import team as team_mod
from db.accounts import PermissionDenied
from tests.app import review_driver as drive
from tests.app.conftest import app_test
from tests.app.data import tiny_records

PASSWORD = "a long enough password"
ALL_PAGES = [
    "views/review.py",
    "views/gold.py",
    "views/data.py",
    "views/train.py",
    "views/models.py",
    "views/export.py",
    "views/users.py",
    "views/agreement.py",
    "views/adjudicate.py",
    "views/team.py",
]
ADMIN_ONLY = {
    "views/data.py",
    "views/train.py",
    "views/models.py",
    "views/export.py",
    "views/users.py",
    "views/team.py",
}
REVIEWER = {"views/agreement.py", "views/adjudicate.py"}


@pytest.fixture
def team(store, monkeypatch) -> Any:
    """Sign-in on, a dataset, and one user per role."""
    monkeypatch.setenv("FRACTAL_AUTH", "on")
    store.ingest(tiny_records(6, with_labels=True), name="secretdata")
    for name, role in (("boss", "admin"), ("rita", "reviewer"), ("ann", "annotator")):
        accounts.add_user(store.engine, name, role, PASSWORD)
    return store


def _texts(at: Any) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "info", "warning", "error", "success", "text", "header")
        for e in getattr(at, kind)
    ]
    parts += [h.proto.body for h in at.html]
    parts += [str(s.options) for s in at.selectbox]
    return "\n".join(str(p) for p in parts)


def sign_in(at: Any, name: str, password: str = PASSWORD) -> Any:
    at.text_input(key="signin_name").input(name)
    at.text_input(key="signin_password").input(password)
    at.button(key="signin_submit").click().run()
    return at


@pytest.mark.parametrize("page", ALL_PAGES)
def test_every_page_without_a_session_is_the_sign_in_page_and_shows_no_data(team, page: str) -> None:
    at = app_test()
    assert not at.exception, at.exception
    # Only the sign-in page is registered: no other page can be opened by any URL.
    with pytest.raises(ValueError, match="Known pages: \\[.*signin.py'\\]"):
        at.switch_page(page)
    texts = _texts(at)
    assert "Sign in to FRACTAL Studio" in texts
    assert "secretdata" not in texts and "Question" not in texts
    assert [t.key for t in at.text_input] == ["signin_name", "signin_password"]
    assert not at.sidebar.selectbox  # no dataset picker
    # The page itself, run without the entry file, stops at its own check and reads no data.
    page_run = _run_page(page, token=None)
    assert not page_run.exception and "Sign in to continue." in _texts(page_run)
    assert "secretdata" not in _texts(page_run)


def _run_page(page: str, *, token: str | None) -> Any:
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO

    run = AppTest.from_file(str(REPO / "app" / page), default_timeout=60)
    if token is not None:
        run.session_state["_auth_token"] = token
    run.run()
    return run


def test_wrong_password_and_unknown_user_give_one_message(team) -> None:
    at = sign_in(app_test(), "ann", "not the password")
    assert [e.value for e in at.error] == [accounts.SIGN_IN_FAILED]
    at = sign_in(app_test(), "nobody", PASSWORD)
    assert [e.value for e in at.error] == [accounts.SIGN_IN_FAILED]
    assert "secretdata" not in _texts(at)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("ann", {"views/review.py", "views/gold.py"}),
        ("rita", {"views/review.py", "views/gold.py", *REVIEWER}),
        ("boss", set(ALL_PAGES)),
    ],
)
def test_each_role_reaches_only_its_pages(team, name: str, allowed: set[str]) -> None:
    at = sign_in(app_test(), name)
    assert not at.exception, at.exception
    assert f"Signed in as {name}" in _texts(at)
    titles = {
        "views/review.py": "Review",
        "views/gold.py": "Gold queue",
        "views/data.py": "Data",
        "views/train.py": "Train",
        "views/models.py": "Models",
        "views/export.py": "Export",
        "views/users.py": "Users",
        "views/agreement.py": "Agreement",
        "views/adjudicate.py": "Adjudicate",
        "views/team.py": "Team",
    }
    for page in ALL_PAGES:
        at.switch_page(page)
        if page not in allowed:
            # Routed but hidden from the navigation: a link to it says "not allowed" and shows nothing else.
            at.run()
            assert not at.exception, (page, at.exception)
            assert [e.value for e in at.error][:1] and at.error[0].value.startswith("Not allowed"), page
            assert not at.header and not at.dataframe, page  # nothing of the page itself
            continue
        at.run()
        assert not at.exception, (page, at.exception)
        assert [h.value for h in at.header][:1] == [titles[page]], page


@pytest.mark.parametrize(
    ("page", "who", "needed"),
    [(p, "rita", "admin") for p in sorted(ADMIN_ONLY)] + [(p, "ann", "reviewer") for p in sorted(REVIEWER)],
)
def test_page_check_stops_a_lower_role_even_if_routed_there(team, page: str, who: str, needed: str) -> None:
    # Defence in depth: even if the navigation listed the page, the page's own check stops it.
    at = sign_in(app_test(), who)
    run = _run_page(page, token=at.session_state["_auth_token"])
    assert not run.exception, run.exception
    role = "reviewer" if who == "rita" else "annotator"
    assert [e.value for e in run.error] == [
        f"Not allowed: this page needs the {needed} role; you are signed in as a {role}."
    ]
    assert not run.file_uploader and not run.button and "secretdata" not in _texts(run)


def test_annotator_labels_are_recorded_under_the_signed_in_name(team) -> None:
    at = sign_in(app_test(), "ann")
    assert "annotator_name" not in [t.key for t in at.text_input]
    rid = drive.nav(at).response_id
    drive.label(at, 0, 0)  # label 0: consistent with any response label
    assert not at.exception, at.exception
    mine = [h for h in repo.label_history(team.engine, response_id=rid) if h.source == "human"]
    assert [(h.new_label, h.annotator) for h in mine] == [(0, "ann")]
    drive.press(at, drive.event(at, "undo"))
    assert repo.get_response(team.engine, rid).sentences[0].label_source != "human"


def test_sign_out_ends_the_session(team) -> None:
    at = sign_in(app_test(), "ann")
    token = at.session_state["_auth_token"]
    assert accounts.session_user(team.engine, token) is not None
    at.button(key="sign_out").click().run()
    assert "Sign in to FRACTAL Studio" in _texts(at)
    assert accounts.session_user(team.engine, token) is None


def test_one_time_password_must_be_changed_before_anything_else(team) -> None:
    accounts.add_user(team.engine, "first", "admin", "one-time-pw", must_change_password=True)
    at = sign_in(app_test(), "first", "one-time-pw")
    assert "Choose your password" in _texts(at)
    assert "secretdata" not in _texts(at)
    at.text_input(key="pw_new").input(PASSWORD)
    at.text_input(key="pw_again").input(PASSWORD)
    at.button(key="pw_submit").click().run()
    assert not at.exception, at.exception
    assert [h.value for h in at.header][:1] == ["Review"]
    assert accounts.authenticate(team.engine, "first", PASSWORD).must_change_password is False


def test_admin_adds_a_user_on_the_users_page(team) -> None:
    at = sign_in(app_test(), "boss")
    at.switch_page("views/users.py")
    at.run()
    at.text_input(key="users_new_name").input("newbie")
    at.selectbox(key="users_new_role").set_value("annotator")
    at.text_input(key="users_new_password").input(PASSWORD)
    at.button(key="users_add_submit").click().run()
    assert not at.exception, at.exception
    assert accounts.get_user(team.engine, "newbie") is not None


def _snapshot(engine: Any) -> tuple[Any, ...]:
    datasets = [
        (
            d.name,
            d.n_responses,
            d.gold_target,
            d.active_model_version_id,
            team_mod.team_settings(engine, d.id),
        )
        for d in repo.list_datasets(engine)
    ]
    datasets.append(team_mod.queue(engine, 1, "ann"))  # type: ignore[arg-type]
    jobs = [(j.id, j.state, j.cancel_requested) for j in repo.list_jobs(engine, limit=100)]
    users = accounts.list_users(engine)
    return datasets, jobs, users


def test_every_admin_action_refuses_an_annotator_and_changes_nothing(team, tmp_path) -> None:
    engine = team.engine
    ann = accounts.get_user(engine, "ann")
    assert ann is not None
    dataset = repo.get_dataset(engine, "secretdata")
    assert dataset is not None
    job = repo.create_job(engine, "embed", {"dataset_id": dataset.id})
    mv = repo.create_model_version(engine, dataset.id, method="naive")
    upload = tmp_path / "more.jsonl"
    upload.write_text('{"id": "x", "text": "A. B.", "response_label": 1}\n')
    calls = {
        "set_gold_target": lambda: actions.set_gold_target(engine, ann, dataset.id, 0.5),
        "import_file": lambda: actions.import_file(engine, ann, upload, "other", {}),
        "queue_import": lambda: actions.queue_import(engine, ann, upload, "other", {}),
        "start_training": lambda: actions.start_training(engine, ann, dataset.id, "naive", {}, 0),
        "start_one_pass_training": lambda: actions.start_training(
            engine, ann, dataset.id, "hybrid", {}, 0, scorer="one_pass", train_layers=1
        ),
        "cancel_job": lambda: actions.cancel_job(engine, ann, job.id),
        "activate_model": lambda: actions.activate_model(engine, ann, mv.id),
        "rollback_model": lambda: actions.rollback_model(engine, ann, dataset.id),
        "export_now": lambda: actions.export_now(
            engine, ann, dataset.id, tmp_path / "x.jsonl", format="native", model_version=None
        ),
        "queue_export": lambda: actions.queue_export(
            engine, ann, dataset.id, format="native", model_version=None
        ),
        "add_user": lambda: actions.add_user(engine, ann, "mallory", "admin", PASSWORD),
        "set_role": lambda: actions.set_role(engine, ann, "ann", "admin"),
        "set_disabled": lambda: actions.set_disabled(engine, ann, "boss", True),
        "list_users": lambda: actions.list_users(engine, ann),
        "set_overlap": lambda: actions.set_overlap(engine, ann, dataset.id, 2, 0.5),
        "assign": lambda: actions.assign(engine, ann, dataset.id, ["ann"]),
        "set_guidelines": lambda: actions.set_guidelines(engine, ann, dataset.id, "mine now"),
    }
    before = _snapshot(engine)
    for name, call in calls.items():
        with pytest.raises(PermissionDenied, match="admin"):
            call()
        assert _snapshot(engine) == before, name
    assert not (tmp_path / "x.jsonl").exists()


def test_label_actions_refuse_a_disabled_or_missing_user(team) -> None:
    engine = team.engine
    detail = repo.get_response(engine, repo.list_responses(engine, 1, sort="id").rows[0].id)
    proposal = review.propose(detail, {detail.sentences[0].id: 1})
    boss = accounts.get_user(engine, "boss")
    assert boss is not None
    accounts.set_disabled(engine, "ann")
    ann = accounts.get_user(engine, "ann")
    for actor in (ann, None):
        with pytest.raises(PermissionDenied):
            actions.save_labels(engine, actor, proposal)  # type: ignore[arg-type]
    assert actions.save_labels(engine, boss, proposal).changes[0].annotator == "boss"


def _open_second_response(name: str) -> Any:
    at = sign_in(app_test(), name)
    drive.move(at, 1)  # response r001: label 1, so labelling one sentence is consistent
    return at


def test_stale_save_shows_their_label_and_lets_the_user_keep_or_replace(team) -> None:
    ann = _open_second_response("ann")
    accounts.add_user(team.engine, "bob", "annotator", PASSWORD)
    bob_at = _open_second_response("bob")
    rid = drive.nav(ann).response_id
    assert drive.nav(bob_at).response_id == rid
    drive.label(bob_at, 0, 1)  # bob: sentence 1 is a problem
    assert not bob_at.exception, bob_at.exception
    drive.label(ann, 0, 0)  # ann still sees it unlabelled and says fine
    assert not ann.exception, ann.exception
    conflict = drive.data(ann)["conflict"]
    assert conflict is not None  # the browser shows "Not saved: someone changed these labels…"
    [item] = conflict["items"]
    assert item["text"] == "Sentence 1: bob set 1 (human)"
    first = repo.get_response(team.engine, rid).sentences[0]
    assert (first.label, first.annotator) == (1, "bob")  # nothing of ann's was stored
    # "Replace with mine": the same change again, made knowingly over bob's version.
    replace = drive.event(ann, "set", {first.id: 0})
    replace["versions"] = {str(first.id): item["version"]}
    drive.press(ann, replace)
    assert not ann.exception, ann.exception
    assert drive.data(ann)["conflict"] is None
    first = repo.get_response(team.engine, rid).sentences[0]
    assert (first.label, first.annotator) == (0, "ann")


def test_reviewer_actions_refuse_an_annotator_and_change_nothing(team) -> None:
    engine = team.engine
    ann = accounts.get_user(engine, "ann")
    rid = repo.list_responses(engine, 1, sort="id").rows[0].id
    sid = repo.get_response(engine, rid).sentences[0].id
    before = repo.label_history(engine, response_id=rid)
    for call in (
        lambda: actions.adjudicate(engine, ann, rid, {sid: 1}),  # type: ignore[arg-type]
        lambda: actions.agreement(engine, ann, 1),  # type: ignore[arg-type]
    ):
        with pytest.raises(PermissionDenied, match="reviewer"):
            call()
    assert repo.label_history(engine, response_id=rid) == before
    assert team_mod.disagreements(engine, 1, include_adjudicated=True) == []


# ------------------------------------------------------------------------------------------------ one-time passwords


def test_the_one_time_password_cannot_be_chosen_again(team) -> None:
    accounts.add_user(team.engine, "first", "admin", "one-time-pw", must_change_password=True)
    at = sign_in(app_test(), "first", "one-time-pw")
    at.text_input(key="pw_new").input("one-time-pw")
    at.text_input(key="pw_again").input("one-time-pw")
    at.button(key="pw_submit").click().run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "different from the one-time password" in at.error[0].value
    assert "Choose your password" in _texts(at) and "secretdata" not in _texts(at)
    assert accounts.authenticate(team.engine, "first", "one-time-pw").must_change_password


def test_an_expired_one_time_password_does_not_sign_in(team) -> None:
    from datetime import timedelta

    from db.models import utcnow

    # Made 25 hours ago with the default lifetime of 24 hours: the injected clock is the creation time.
    accounts.add_user(
        team.engine,
        "first",
        "admin",
        "one-time-pw",
        must_change_password=True,
        now=utcnow() - timedelta(hours=25),
    )
    at = sign_in(app_test(), "first", "one-time-pw")
    assert [e.value for e in at.error] == [accounts.ONE_TIME_EXPIRED]
    assert "Sign in to FRACTAL Studio" in _texts(at) and "_auth_token" not in at.session_state


# ------------------------------------------------------------------------------------------------ client address


def test_client_address_comes_from_a_trusted_proxy_header_only() -> None:
    from app.auth import resolve_client

    # No header trusted (the default): the socket's address, whatever the request claims.
    assert resolve_client(None, "198.51.100.2") == "198.51.100.2"
    assert resolve_client(None, None) is None  # this machine: the store counts it as "local"
    # Trusted: the last address, the one the proxy appended (the browser may have sent its own before it).
    assert resolve_client(["6.6.6.6, 203.0.113.5"], None) == "203.0.113.5"
    assert resolve_client(["6.6.6.6", "203.0.113.5"], None) == "203.0.113.5"  # the header sent twice
    assert resolve_client(["2001:db8::7"], "127.0.0.1") == "2001:db8::7"
    # Trusted but absent or not an address (the request did not come through the proxy): the socket's.
    assert resolve_client([], "198.51.100.2") == "198.51.100.2"
    assert resolve_client(["unknown"], None) is None


def test_sign_ins_from_this_machine_count_against_one_client(team) -> None:
    # Streamlit reports this machine (and a proxy on it) without an address: such failures are still counted
    # per client, as "local", so the per-client limit holds for them (the store's tests check the limit).
    from sqlalchemy import select

    from db.models import SignInFailure

    for name in ("nobody", "ann"):
        at = sign_in(app_test(), name, "wrong password")
        assert [e.value for e in at.error] == [accounts.SIGN_IN_FAILED]
    with team.engine.connect() as conn:
        rows = conn.execute(select(SignInFailure.user_key, SignInFailure.client_key)).all()
    assert sorted(rows) == [("ann", accounts.LOCAL_CLIENT), ("nobody", accounts.LOCAL_CLIENT)]


# ------------------------------------------------------------------------------------------------ session cookie


def test_sign_in_hands_the_page_a_one_shot_grant_not_the_session_token(team) -> None:
    from app import session_cookie

    at = sign_in(app_test(), "ann")
    token = at.session_state["_auth_token"]
    scripts = [h.proto.body for h in at.html if "<script>" in h.proto.body]
    assert len(scripts) == 1 and token not in scripts[0] and "document.cookie" not in scripts[0]
    assert session_cookie.SESSION_PATH in scripts[0]
    grant = scripts[0].split('body: "')[1].split('"')[0]
    assert session_cookie.redeem_grant(grant) == token
    assert session_cookie.redeem_grant(grant) is None  # once only
    # Sign-out ends the session in the store and has the server expire the cookie.
    at.button(key="sign_out").click().run()
    assert accounts.session_user(team.engine, token) is None
    scripts = [h.proto.body for h in at.html if "<script>" in h.proto.body]
    assert len(scripts) == 1 and session_cookie.SIGNOUT_PATH in scripts[0]


def _post(path: str, body: bytes, headers: dict[str, str], *, scheme: str = "http") -> tuple[int, list[str]]:
    """POST to the session-cookie routes as Streamlit's server would serve them; (status, Set-Cookie values)."""
    import asyncio
    import concurrent.futures

    from starlette.applications import Starlette

    from app import session_cookie

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8501),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # In a thread of its own: after a Playwright test the main thread may hold a running event loop, where
    # asyncio.run() refuses to start.
    call = Starlette(routes=session_cookie.routes())(scope, receive, send)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, call).result()
    start = next(m for m in sent if m["type"] == "http.response.start")
    cookies = [v.decode() for k, v in start["headers"] if k == b"set-cookie"]
    return start["status"], cookies


def test_the_server_sets_the_session_cookie_httponly_for_a_grant_once(monkeypatch) -> None:
    from app import session_cookie
    from app.settings import TRUSTED_PROXY_ENV

    monkeypatch.delenv(TRUSTED_PROXY_ENV, raising=False)
    ok = {session_cookie.REQUEST_HEADER: "1"}
    token = "t" * 43
    grant = session_cookie.issue_grant(token)
    status, cookies = _post(session_cookie.SESSION_PATH, grant.encode(), ok)
    assert status == 204 and len(cookies) == 1
    attrs = [a.strip().lower() for a in cookies[0].split(";")]
    assert attrs[0] == f"{session_cookie.COOKIE}={token}"
    assert {"httponly", "samesite=strict", "path=/"} <= set(attrs) and "secure" not in attrs
    # The same grant again, an unknown one, or a request without our header: no cookie.
    assert _post(session_cookie.SESSION_PATH, grant.encode(), ok) == (403, [])
    assert _post(session_cookie.SESSION_PATH, b"x" * 43, ok) == (403, [])
    assert _post(session_cookie.SESSION_PATH, session_cookie.issue_grant(token).encode(), {}) == (403, [])
    # Over TLS the cookie is Secure; a proxy's X-Forwarded-Proto counts only when a proxy header is trusted.
    _, cookies = _post(
        session_cookie.SESSION_PATH, session_cookie.issue_grant(token).encode(), ok, scheme="https"
    )
    assert "secure" in [a.strip().lower() for a in cookies[0].split(";")]
    proxied = {**ok, "X-Forwarded-Proto": "https"}
    _, cookies = _post(session_cookie.SESSION_PATH, session_cookie.issue_grant(token).encode(), proxied)
    assert "secure" not in [a.strip().lower() for a in cookies[0].split(";")]
    monkeypatch.setenv(TRUSTED_PROXY_ENV, "X-Forwarded-For")
    _, cookies = _post(session_cookie.SESSION_PATH, session_cookie.issue_grant(token).encode(), proxied)
    assert "secure" in [a.strip().lower() for a in cookies[0].split(";")]
    # Sign-out expires it.
    status, cookies = _post(session_cookie.SIGNOUT_PATH, b"", ok)
    attrs = [a.strip().lower() for a in cookies[0].split(";")]
    assert status == 204 and attrs[0] == f'{session_cookie.COOKIE}=""' and "max-age=0" in attrs


def test_a_grant_expires_unclaimed() -> None:
    from app import session_cookie

    grant = session_cookie.issue_grant("t" * 43, now=1000.0)
    assert session_cookie.redeem_grant(grant, now=1000.0 + session_cookie.GRANT_TTL_S) is None
    grant = session_cookie.issue_grant("t" * 43, now=1000.0)
    assert session_cookie.redeem_grant(grant, now=1000.0 + session_cookie.GRANT_TTL_S - 1) == "t" * 43
