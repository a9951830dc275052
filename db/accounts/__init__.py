"""Accounts, roles and sign-in sessions: who may do what in FRACTAL Studio.

- Users have a name, a role (``annotator`` < ``reviewer`` < ``admin``, :data:`db.models.ROLES`) and an
  argon2id password hash (``argon2-cffi``); the password itself is never stored or logged.
- A one-time password (the first admin's, or :func:`reset_password`) works until
  ``FRACTAL_ONE_TIME_PASSWORD_HOURS`` (default 24 h, :func:`one_time_password_ttl`) have passed unused; the
  first sign-in with it must choose a different password that passes the same rules (:func:`set_password`).
- :func:`authenticate` checks a name and password. Every failure gives the same :class:`SignInError` message
  (no hint whether the name or the password was wrong; an unknown name costs a hash check too). Wrong
  passwords slow down the (user name, client) pair that made them, a client trying many names, and, only
  under an automated attack on one name from many clients, each of those clients
  (:func:`db.accounts.throttle.wait_left`); a user's own machine is never held back by failures made
  elsewhere.
- A session is a random token (``secrets.token_urlsafe``) that only the browser holds; the store keeps its
  SHA-256 with an expiry. :func:`session_user` resolves a token to its user on every request, so disabling a
  user or changing a role takes effect at once, and :func:`end_session` signs out.
- :func:`require_role` is the one authorisation check; every action function of the app calls it with the
  signed-in user before changing anything.

One module per concern, every public name re-exported here (``from db import accounts``):

- :mod:`db.accounts.roles`: roles and :func:`require_role`;
- :mod:`db.accounts.users`: users, password hashes and one-time passwords;
- :mod:`db.accounts.throttle`: failed sign-ins per (user name, client) and the waits they impose;
- :mod:`db.accounts.signin`: :func:`authenticate`;
- :mod:`db.accounts.sessions`: session tokens.
"""

from db.accounts.roles import (
    PermissionDenied,
    has_role,
    require_role,
    role_rank,
)
from db.accounts.sessions import (
    SESSION_TTL,
    end_session,
    session_user,
    start_session,
)
from db.accounts.signin import (
    ONE_TIME_EXPIRED,
    SIGN_IN_FAILED,
    SignInError,
    authenticate,
)
from db.accounts.throttle import (
    AUTOMATED_CLIENTS,
    AUTOMATED_WINDOW,
    CLIENT_FREE_FAILURES,
    FORGET_FAILURES_AFTER,
    FREE_FAILURES,
    GUARD_WAIT_S,
    LOCAL_CLIENT,
    MAX_BACKOFF_S,
    backoff_seconds,
    failure_keys,
)
from db.accounts.users import (
    MIN_PASSWORD_CHARS,
    ONE_TIME_PASSWORD_TTL,
    ONE_TIME_TTL_ENV,
    add_user,
    count_users,
    get_user,
    list_users,
    new_one_time_password,
    one_time_password_ttl,
    reset_password,
    set_disabled,
    set_password,
    set_role,
    validate_user_name,
)

__all__ = [
    "AUTOMATED_CLIENTS",
    "AUTOMATED_WINDOW",
    "CLIENT_FREE_FAILURES",
    "FORGET_FAILURES_AFTER",
    "FREE_FAILURES",
    "GUARD_WAIT_S",
    "LOCAL_CLIENT",
    "MAX_BACKOFF_S",
    "MIN_PASSWORD_CHARS",
    "ONE_TIME_EXPIRED",
    "ONE_TIME_PASSWORD_TTL",
    "ONE_TIME_TTL_ENV",
    "PermissionDenied",
    "SESSION_TTL",
    "SIGN_IN_FAILED",
    "SignInError",
    "add_user",
    "authenticate",
    "backoff_seconds",
    "count_users",
    "end_session",
    "failure_keys",
    "get_user",
    "has_role",
    "list_users",
    "new_one_time_password",
    "one_time_password_ttl",
    "require_role",
    "reset_password",
    "role_rank",
    "session_user",
    "set_disabled",
    "set_password",
    "set_role",
    "start_session",
    "validate_user_name",
]
