"""The session cookie, set by the server: ``HttpOnly``, ``SameSite=Strict``, and ``Secure`` over TLS.

A Streamlit script cannot set response headers, so the cookie is set by two small routes of ours that
``app/web.py`` mounts on Streamlit's own server (``st.App(routes=...)``):

1. The sign-in page checks the password and opens a session (:mod:`db.accounts`). The session token stays in
   that tab's server-side session state; the browser is handed a *grant* instead: a random one-shot value that
   this process keeps in memory for :data:`GRANT_TTL_S` seconds, mapped to the token.
2. The page posts the grant to :data:`SESSION_PATH`; the route swaps it for the token and answers with
   ``Set-Cookie``. A grant works once, so the value the page script saw is worthless afterwards, and no page
   script ever sees the token (the cookie is ``HttpOnly``).

On a reload Streamlit passes the cookie to the app with the WebSocket handshake, and :mod:`app.auth` checks
its token against the store on every run. Sign-out ends the session in the store (every tab and the cookie
lose it at once) and posts to :data:`SIGNOUT_PATH`, whose answer expires the cookie in the browser.

Both routes accept only a POST that carries :data:`REQUEST_HEADER`: a form on another site cannot send a
custom header, and a script on another site would need a CORS preflight, which is never answered.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.settings import trusted_proxy_header
from db.accounts import SESSION_TTL

COOKIE = "fractal_session"
SESSION_PATH = "/fractal/session"
"""Swaps a grant for the session cookie (POST, the grant as the body)."""
SIGNOUT_PATH = "/fractal/signout"
"""Expires the session cookie (POST)."""
REQUEST_HEADER = "X-Fractal-Request"
GRANT_TTL_S = 60.0
"""How long a grant may wait to be swapped (the page posts it as soon as it is shown)."""
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
"""What a session token or a grant looks like (URL-safe base64): anything else is refused unread."""

_grants: dict[str, tuple[str, float]] = {}
_lock = threading.Lock()


def issue_grant(token: str, *, now: float | None = None) -> str:
    """A one-shot grant for the session ``token``, valid for :data:`GRANT_TTL_S` seconds from ``now``
    (``time.monotonic()``; injected by tests)."""
    if not TOKEN_CHARS.match(token):
        raise ValueError("not a session token")
    now = time.monotonic() if now is None else now
    grant = secrets.token_urlsafe(32)
    with _lock:
        for key in [k for k, (_, expires) in _grants.items() if expires <= now]:
            del _grants[key]  # unclaimed grants (the page was closed first) do not pile up
        _grants[grant] = (token, now + GRANT_TTL_S)
    return grant


def redeem_grant(grant: str, *, now: float | None = None) -> str | None:
    """The session token of ``grant`` if it is known and unexpired; the grant is used up either way."""
    now = time.monotonic() if now is None else now
    with _lock:
        found = _grants.pop(grant, None)
    if found is None or found[1] <= now:
        return None
    return found[0]


def served_over_tls(scheme: str, forwarded_proto: list[str] | None) -> bool:
    """Whether the browser reached us over https: our own TLS, or the proxy's last ``X-Forwarded-Proto``.

    ``forwarded_proto`` is None unless a trusted proxy header is configured (``--trusted-proxy-header``): only
    then is there a proxy whose word counts (it terminates TLS and is the way in)."""
    if scheme == "https":
        return True
    if not forwarded_proto:
        return False
    return ",".join(forwarded_proto).split(",")[-1].strip().lower() == "https"


def _secure(request: Request) -> bool:
    proto = request.headers.getlist("x-forwarded-proto") if trusted_proxy_header() else None
    return served_over_tls(request.url.scheme, proto)


SAMESITE: Literal["strict"] = "strict"


def _no_store(status: int, text: str = "") -> Response:
    return Response(text or None, status_code=status, headers={"Cache-Control": "no-store"})


async def _session(request: Request) -> Response:
    if request.headers.get(REQUEST_HEADER) != "1":
        return _no_store(403, "missing request header")
    body = (await request.body())[:200].decode("ascii", errors="replace").strip()
    token = redeem_grant(body) if TOKEN_CHARS.match(body) else None
    if token is None:
        return _no_store(403, "unknown or expired grant")
    secure = _secure(request)
    response = _no_store(204)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
        secure=secure,
        httponly=True,
        samesite=SAMESITE,
    )
    return response


async def _signout(request: Request) -> Response:
    if request.headers.get(REQUEST_HEADER) != "1":
        return _no_store(403, "missing request header")
    secure = _secure(request)
    response = _no_store(204)
    response.delete_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite=SAMESITE)
    return response


def routes() -> list[Route]:
    """The two routes, for ``st.App(routes=...)``."""
    return [
        Route(SESSION_PATH, _session, methods=["POST"]),
        Route(SIGNOUT_PATH, _signout, methods=["POST"]),
    ]


def sign_in_script(grant: str) -> str:
    """The page script that swaps ``grant`` for the cookie (the grant is URL-safe base64: inlined safely)."""
    if not TOKEN_CHARS.match(grant):
        raise ValueError("not a grant")
    return _post(SESSION_PATH, grant)


def sign_out_script() -> str:
    """The page script that has the server expire the cookie."""
    return _post(SIGNOUT_PATH, "")


def _post(path: str, body: str) -> str:
    return (
        f'fetch("{path}", {{method: "POST", body: "{body}", credentials: "same-origin", '
        f'cache: "no-store", headers: {{"{REQUEST_HEADER}": "1"}}}});'
    )
