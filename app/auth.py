"""Who is signed in to this browser session, and the page-level role check (UI glue over :mod:`db.accounts`).

- With sign-in on (the default), the session token lives in ``st.session_state`` and in a cookie, so a browser
  reload stays signed in; the store keeps only the token's hash and checks it (expiry, sign-out, disabled
  user, current role) on every run.
- With ``fractal serve --no-auth`` (``FRACTAL_AUTH=off``) there is one local admin and no sign-in; the app then
  serves this machine only (a request from another address gets an error page).

Pages call :func:`require` with the role they need; action functions (:mod:`app.actions`) check the acting user
again with :func:`db.accounts.require_role`, so a crafted request cannot skip a hidden button.
"""

from __future__ import annotations

import re

import streamlit as st

from app import state
from app.settings import is_loopback
from db import accounts
from db.models import ROLES
from db.rows import UserRow

TOKEN_KEY = "_auth_token"
COOKIE = "fractal_session"
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]{20,128}$")


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
        token = cookie if isinstance(cookie, str) and _TOKEN_CHARS.match(cookie) else None
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


def client_address() -> str | None:
    """The browser's address; None for this machine (Streamlit reports loopback as None)."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None


def _set_cookie(token: str | None) -> None:
    # The token is URL-safe base64 (checked), so it is inlined safely; SameSite=Strict keeps it off other sites.
    if token is None:
        script = f"document.cookie = '{COOKIE}=; Max-Age=0; Path=/; SameSite=Strict';"
    else:
        assert _TOKEN_CHARS.match(token)
        max_age = int(accounts.SESSION_TTL.total_seconds())
        script = f"document.cookie = '{COOKIE}={token}; Max-Age={max_age}; Path=/; SameSite=Strict';"
    st.html(f"<script>{script}</script>", unsafe_allow_javascript=True)


def sign_in(name: str, password: str) -> UserRow:
    """Check the password (with the store's backoff, per user and per client address) and open a session.

    Raises :class:`db.accounts.SignInError` with the one message to show."""
    user = accounts.authenticate(state.engine(), name, password, client=client_address())
    token = accounts.start_session(state.engine(), user)
    st.session_state[TOKEN_KEY] = token
    st.session_state["_set_cookie"] = token
    return user


def sign_out() -> None:
    accounts.end_session(state.engine(), _token())
    st.session_state[TOKEN_KEY] = None
    st.session_state["_set_cookie"] = ""
    for key in list(st.session_state):
        if key not in (TOKEN_KEY, "_set_cookie"):
            del st.session_state[key]


def sync_cookie() -> None:
    """Write or clear the session cookie after a sign-in or sign-out (once, on the next run)."""
    pending = st.session_state.pop("_set_cookie", None)
    if pending is not None:
        _set_cookie(pending or None)


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
