"""Accounts: password hashes, the one sign-in failure message, backoff, expiring sessions, roles."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from db import accounts
from db.models import LoginFailure, User, UserSession, utcnow
from fractal_core.errors import InputError

PASSWORD = "correct horse battery"


def test_password_is_stored_only_as_an_argon2_hash(engine) -> None:
    accounts.add_user(engine, "ann", "annotator", PASSWORD)
    with engine.connect() as conn:
        [(stored,)] = conn.execute(select(User.password_hash)).all()
        dump = str(conn.exec_driver_sql("SELECT * FROM users").fetchall())
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored and PASSWORD not in dump
    assert accounts.authenticate(engine, "ann", PASSWORD).name == "ann"


def test_wrong_name_and_wrong_password_read_the_same(engine) -> None:
    accounts.add_user(engine, "ann", "annotator", PASSWORD)
    messages = []
    for name, password in (("ann", "wrong password"), ("nobody", PASSWORD)):
        with pytest.raises(accounts.SignInError) as err:
            accounts.authenticate(engine, name, password)
        messages.append(str(err.value))
    assert messages == [accounts.SIGN_IN_FAILED] * 2


def test_disabled_user_cannot_sign_in_and_loses_sessions(engine) -> None:
    accounts.add_user(engine, "boss", "admin", PASSWORD)
    ann = accounts.add_user(engine, "ann", "annotator", PASSWORD)
    token = accounts.start_session(engine, ann)
    assert accounts.session_user(engine, token) == ann
    accounts.set_disabled(engine, "ann")
    assert accounts.session_user(engine, token) is None
    with pytest.raises(accounts.SignInError) as err:
        accounts.authenticate(engine, "ann", PASSWORD)
    assert str(err.value) == accounts.SIGN_IN_FAILED


def test_repeated_failures_are_slowed_down_per_user_and_per_client(engine) -> None:
    accounts.add_user(engine, "ann", "annotator", PASSWORD)
    for _ in range(accounts.FREE_FAILURES):
        with pytest.raises(accounts.SignInError) as err:
            accounts.authenticate(engine, "ann", "nope-nope", client="10.0.0.1")
        assert err.value.retry_after == 0
    # Now even the right password is refused until the wait is over, from any client.
    with pytest.raises(accounts.SignInError) as err:
        accounts.authenticate(engine, "ann", PASSWORD, client="10.0.0.2")
    assert err.value.retry_after > 0 and "try again" in str(err.value)
    # The same client trying another name is slowed down too.
    with pytest.raises(accounts.SignInError) as err:
        accounts.authenticate(engine, "other", "whatever", client="10.0.0.1")
    assert err.value.retry_after > 0
    # Once the wait has passed, the right password works and clears the user's counter.
    with engine.begin() as conn:
        conn.execute(update(LoginFailure).values(last_failure_at=utcnow() - timedelta(hours=1)))
    assert accounts.authenticate(engine, "ann", PASSWORD, client="10.0.0.2").name == "ann"
    with engine.connect() as conn:
        assert conn.execute(select(LoginFailure.key)).scalars().all() == ["client:10.0.0.1"]


def test_backoff_grows_and_is_capped() -> None:
    waits = [accounts.backoff_seconds(n) for n in range(12)]
    assert waits[: accounts.FREE_FAILURES] == [0.0] * accounts.FREE_FAILURES
    assert waits[accounts.FREE_FAILURES : accounts.FREE_FAILURES + 3] == [2.0, 4.0, 8.0]
    assert max(waits) <= accounts.MAX_BACKOFF_S and waits == sorted(waits)


def test_session_token_is_hashed_at_rest_expires_and_signs_out(engine) -> None:
    ann = accounts.add_user(engine, "ann", "annotator", PASSWORD)
    token = accounts.start_session(engine, ann)
    with engine.connect() as conn:
        assert token not in str(conn.exec_driver_sql("SELECT * FROM user_sessions").fetchall())
    assert accounts.session_user(engine, token) == ann
    assert accounts.session_user(engine, token + "x") is None
    assert accounts.session_user(engine, None) is None
    accounts.end_session(engine, token)
    assert accounts.session_user(engine, token) is None
    token2 = accounts.start_session(engine, ann)
    with engine.begin() as conn:
        conn.execute(update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert accounts.session_user(engine, token2) is None


def test_role_changes_apply_to_live_sessions(engine) -> None:
    accounts.add_user(engine, "boss", "admin", PASSWORD)
    ann = accounts.add_user(engine, "ann", "annotator", PASSWORD)
    token = accounts.start_session(engine, ann)
    accounts.set_role(engine, "ann", "reviewer")
    user = accounts.session_user(engine, token)
    assert user is not None and user.role == "reviewer"
    assert accounts.has_role(user, "annotator") and accounts.has_role(user, "reviewer")
    assert not accounts.has_role(user, "admin")


def test_require_role_refuses_lower_roles_and_nobody(engine) -> None:
    ann = accounts.add_user(engine, "ann", "annotator", PASSWORD)
    with pytest.raises(accounts.PermissionDenied, match="admin"):
        accounts.require_role(ann, "admin", "training")
    with pytest.raises(accounts.PermissionDenied, match="sign in"):
        accounts.require_role(None, "annotator")
    assert accounts.require_role(ann, "annotator") == ann


def test_bad_input_is_refused_and_the_last_admin_is_kept(engine) -> None:
    with pytest.raises(InputError, match="password"):
        accounts.add_user(engine, "ann", "annotator", "short")
    with pytest.raises(InputError, match="role"):
        accounts.add_user(engine, "ann", "superuser", PASSWORD)
    with pytest.raises(InputError, match="user name"):
        accounts.add_user(engine, "<img src=x>", "annotator", PASSWORD)
    accounts.add_user(engine, "boss", "admin", PASSWORD)
    with pytest.raises(InputError, match="already exists"):
        accounts.add_user(engine, "BOSS", "annotator", PASSWORD)
    with pytest.raises(InputError, match="last active admin"):
        accounts.set_role(engine, "boss", "annotator")
    with pytest.raises(InputError, match="last active admin"):
        accounts.set_disabled(engine, "boss")
    with pytest.raises(InputError, match="no user"):
        accounts.set_role(engine, "ghost", "admin")
    assert [u.name for u in accounts.list_users(engine)] == ["boss"]


def test_one_time_password_must_be_replaced(engine) -> None:
    once = accounts.new_one_time_password()
    accounts.add_user(engine, "admin", "admin", once, must_change_password=True)
    user = accounts.authenticate(engine, "admin", once)
    assert user.must_change_password
    accounts.set_password(engine, "admin", PASSWORD)
    assert not accounts.authenticate(engine, "admin", PASSWORD).must_change_password
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM users WHERE must_change_password")).scalar() == 0
