"""Who is signed in to this browser session, and the page-level role check (UI glue over :mod:`db.accounts`).

- With sign-in on (the default), the session token lives in ``st.session_state`` (on the server) and in an
  ``HttpOnly`` cookie that the server sets (:mod:`app.session_cookie`), so a browser reload stays signed in and no
  page script can read the token; the store keeps only the token's hash and checks it (expiry, sign-out,
  disabled user, current role) on every run.
- The browser's address, for the sign-in slowdown, is the socket's, or the trusted proxy header's when one is
  configured (:func:`resolve_client`); without either (this machine) the store counts it as one client,
  ``local``.
- With ``fractal serve --no-auth`` (``FRACTAL_AUTH=off``) there is one local admin and no sign-in; the app then
  serves this machine only (a request from another address gets an error page).

Pages call :func:`require` with the role they need; action functions (:mod:`app.actions`) check the acting user
again with :func:`db.accounts.require_role`, so a crafted request cannot skip a hidden button.
"""

from __future__ import annotations

import ipaddress

import streamlit as st

from app import session_cookie, state
from app.settings import is_loopback
from db import accounts
from db.models import ROLES
from db.rows import UserRow

TOKEN_KEY = "_auth_token"
COOKIE = session_cookie.COOKIE


def auth_enabled() -> bool:
    return state.settings().auth


def local_user() -> UserRow:
    """The single user of ``--no-auth`` mode: an admin named after the sidebar field or the login name."""
    return UserRow(
        id=0,
        name=state.annotator(),
        role="admin",
        disabled=False,
        must_change_password=False,
        created_at=None,
    )


def _token() -> str | None:
    token = st.session_state.get(TOKEN_KEY)
    if token is None and TOKEN_KEY not in st.session_state:
        # A new browser session (e.g. a reload): the cookie set at sign-in, if any. After a sign-out in this
        # session the key holds None, so a stale cookie is not picked up again.
        cookie = st.context.cookies.get(COOKIE)
        token = cookie if isinstance(cookie, str) and session_cookie.TOKEN_CHARS.match(cookie) else None
    return token


def current_user() -> UserRow | None:
    """The signed-in user (re-read from the store on every run), the local admin without sign-in, or None."""
    if not auth_enabled():
        return local_user()
    token = _token()
    user = accounts.session_user(state.engine(), token) if token else None
    if user is None and token:
        st.session_state[TOKEN_KEY] = None  # expired, signed out elsewhere, or disabled: forget it
    return user


def client_allowed() -> bool:
    """Without sign-in only this machine may use the app (``--no-auth`` is for one person at their desk)."""
    if auth_enabled():
        return True
    address = client_address()
    return address is None or is_loopback(address)


def resolve_client(forwarded: list[str] | None, socket_address: str | None) -> str | None:
    """The browser's address for the sign-in slowdown.

    ``forwarded`` holds every value of the trusted proxy header in the request (None when no header is
    trusted). Its LAST address is used: the proxy appends the address it saw, after whatever the browser
    sent. Without a valid one (the request did not come through the proxy), or without a trusted header, the
    socket's address; None for this machine (Streamlit reports loopback as None)."""
    if forwarded is not None:
        last = ",".join(forwarded).split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            pass
    return socket_address


def client_address() -> str | None:
    """The browser's address for this run (see :func:`resolve_client`); None for this machine."""
    address = st.context.ip_address
    trusted = state.settings().trusted_proxy_header
    return resolve_client(
        st.context.headers.get_all(trusted) if trusted else None,
        address if isinstance(address, str) else None,
    )


def _page_script(script: str) -> None:
    # Only our own fixed script text runs (paths and a URL-safe grant, checked): nothing from a user.
    st.html(f"<script>{script}</script>", unsafe_allow_javascript=True)


def sign_in(name: str, password: str) -> UserRow:
    """Check the password (with the store's slowdown, per user and client) and open a session.

    The token stays on the server (this tab's session state); the browser gets a one-shot grant that it swaps
    for the ``HttpOnly`` session cookie on the next run (:func:`sync_cookie`). Raises
    :class:`db.accounts.SignInError` with the one message to show."""
    user = accounts.authenticate(state.engine(), name, password, client=client_address())
    token = accounts.start_session(state.engine(), user)
    st.session_state[TOKEN_KEY] = token
    st.session_state["_set_cookie"] = session_cookie.issue_grant(token)
    return user


def sign_out() -> None:
    """End the session in the store (every tab and the cookie lose it at once), then expire the cookie."""
    accounts.end_session(state.engine(), _token())
    st.session_state[TOKEN_KEY] = None
    st.session_state["_set_cookie"] = ""
    for key in list(st.session_state):
        if key not in (TOKEN_KEY, "_set_cookie"):
            del st.session_state[key]


def sync_cookie() -> None:
    """After a sign-in or sign-out, once, on the next run: have the server set or expire the session cookie."""
    pending = st.session_state.pop("_set_cookie", None)
    if pending:
        _page_script(session_cookie.sign_in_script(pending))
    elif pending is not None:
        _page_script(session_cookie.sign_out_script())


def require(role: str) -> UserRow:
    """The signed-in user if their role allows ``role``; otherwise show why and stop the page (no data)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    user = current_user()
    if user is None:
        st.warning("Sign in to continue.")
        st.stop()
    if not accounts.has_role(user, role):
        st.error(f"Not allowed: this page needs the {role} role; you are signed in as a {user.role}.")
        st.stop()
    assert user is not None
    return user
