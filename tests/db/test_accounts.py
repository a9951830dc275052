"""Accounts: password hashes, the one sign-in failure message, the sign-in slowdown (per user and client, per
client, and under automated attack), one-time passwords, expiring sessions, roles. Time is injected (``now=``):
no test sleeps."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from db import accounts
from db.models import SignInFailure, User, UserSession, utcnow
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


def _fail(engine, name: str, client: str | None, now, password: str = "nope-nope") -> float:
    """One wrong sign-in; returns its ``retry_after`` (0: the password was checked and was wrong)."""
    with pytest.raises(accounts.SignInError) as err:
        accounts.authenticate(engine, name, password, client=client, now=now)
    if err.value.retry_after == 0:
        assert str(err.value) == accounts.SIGN_IN_FAILED
    return err.value.retry_after


def test_repeated_failures_slow_down_that_user_from_that_client(engine) -> None:
    accounts.add_user(engine, "ann", "annotator", PASSWORD)
    t0 = utcnow()
    for _ in range(accounts.FREE_FAILURES):
        assert _fail(engine, "ann", "10.0.0.1", t0) == 0
    # Now even the right password from that client waits; the wait is not a lockout.
    with pytest.raises(accounts.SignInError) as err:
        accounts.authenticate(engine, "ann", PASSWORD, client="10.0.0.1", now=t0)
    assert err.value.retry_after == pytest.approx(2.0) and "try again" in str(err.value)
    later = t0 + timedelta(seconds=3)
    assert accounts.authenticate(engine, "ann", PASSWORD, client="10.0.0.1", now=later).name == "ann"
    with engine.connect() as conn:  # the success cleared the pair's counter
        assert conn.execute(select(SignInFailure)).all() == []


def test_someone_hammering_a_user_cannot_lock_her_out(engine) -> None:
    accounts.add_user(engine, "rita", "reviewer", PASSWORD)
    t = utcnow()
    # 12 wrong passwords for rita from one place, each as soon as its wait allows: a 5-minute wait there now.
    for _ in range(12):
        wait = _fail(engine, "rita", "203.0.113.9", t)  # 0: checked and counted; else refused unchecked
        if wait:
            t += timedelta(seconds=wait)
            assert _fail(engine, "rita", "203.0.113.9", t) == 0
    assert _fail(engine, "rita", "203.0.113.9", t) == accounts.MAX_BACKOFF_S
    # rita from her own machine, while the attacker is still waiting: her password works at once.
    assert accounts.authenticate(engine, "rita", PASSWORD, client="10.0.0.7", now=t).name == "rita"
    # ... and a typo of hers is checked, not blocked by the attacker's failures.
    assert _fail(engine, "rita", "10.0.0.7", t) == 0


def test_one_client_spraying_many_names_is_slowed_down_for_every_name(engine) -> None:
    accounts.add_user(engine, "ann", "annotator", PASSWORD)
    t0 = utcnow()
    for i in range(accounts.CLIENT_FREE_FAILURES):
        assert _fail(engine, f"user{i}", "198.51.100.4", t0) == 0  # each pair is under its own limit
    # The client is now waiting, for a name it never tried too.
    with pytest.raises(accounts.SignInError) as err:
        accounts.authenticate(engine, "ann", PASSWORD, client="198.51.100.4", now=t0)
    assert err.value.retry_after > 0
    # Other clients are not affected.
    assert accounts.authenticate(engine, "ann", PASSWORD, client="198.51.100.5", now=t0).name == "ann"


def test_local_clients_share_one_client_limit(engine) -> None:
    # Streamlit reports this machine (and a proxy on it) without an address: they count as one client, "local".
    accounts.add_user(engine, "ann", "annotator", PASSWORD)
    t0 = utcnow()
    for i in range(accounts.CLIENT_FREE_FAILURES):
        assert _fail(engine, f"name{i % 5}", None, t0) == 0
    assert _fail(engine, "someone-else", None, t0) > 0
    with engine.connect() as conn:
        clients = set(conn.execute(select(SignInFailure.client_key)).scalars())
    assert clients == {accounts.LOCAL_CLIENT}


def test_an_automated_attack_from_many_clients_slows_each_of_them_but_not_the_users_own(engine) -> None:
    accounts.add_user(engine, "rita", "reviewer", PASSWORD)
    t0 = utcnow()
    bots = [f"192.0.2.{i}" for i in range(accounts.AUTOMATED_CLIENTS)]
    for bot in bots:  # one try each: every bot is within its own free failures
        assert _fail(engine, "rita", bot, t0) == 0
    # Many clients failing for one name within a minute: each of them now waits at least the guard time,
    # although none used up its free failures.
    t1 = t0 + timedelta(seconds=1)
    assert _fail(engine, "rita", bots[0], t1) == pytest.approx(accounts.GUARD_WAIT_S - 1)
    # A client that has not failed for rita is checked as usual: her password works.
    assert accounts.authenticate(engine, "rita", PASSWORD, client="10.0.0.7", now=t1).name == "rita"
    # Once the attack stops, its clients are back to the usual limits.
    calm = t0 + accounts.AUTOMATED_WINDOW + timedelta(seconds=accounts.GUARD_WAIT_S)
    assert accounts.authenticate(engine, "rita", PASSWORD, client=bots[1], now=calm).name == "rita"


def test_old_failures_are_forgotten(engine) -> None:
    accounts.add_user(engine, "ann", "annotator", PASSWORD)
    t0 = utcnow()
    for _ in range(8):
        _fail(engine, "ann", "10.0.0.1", t0)
    next_day = t0 + accounts.FORGET_FAILURES_AFTER + timedelta(seconds=1)
    assert _fail(engine, "ann", "10.0.0.2", next_day) == 0  # recording this one drops the old counters
    with engine.connect() as conn:
        assert conn.execute(select(SignInFailure.client_key)).scalars().all() == ["10.0.0.2"]


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
        assert conn.execute(text("SELECT password_expires_at FROM users")).scalar() is None


def test_one_time_password_cannot_be_kept_or_replaced_by_a_weak_one(engine) -> None:
    once = accounts.new_one_time_password()
    accounts.add_user(engine, "admin", "admin", once, must_change_password=True)
    with pytest.raises(InputError, match="different from the one-time password"):
        accounts.set_password(engine, "admin", once)
    with pytest.raises(InputError, match="at least"):
        accounts.set_password(engine, "admin", "short")
    user = accounts.authenticate(engine, "admin", once)  # still the one-time password, still to be replaced
    assert user.must_change_password


def test_unused_one_time_password_expires(engine) -> None:
    t0 = utcnow()
    once = accounts.new_one_time_password()
    accounts.add_user(engine, "admin", "admin", once, must_change_password=True, now=t0)
    almost = t0 + accounts.ONE_TIME_PASSWORD_TTL - timedelta(seconds=1)
    assert accounts.authenticate(engine, "admin", once, now=almost).must_change_password
    with pytest.raises(accounts.SignInError) as err:
        accounts.authenticate(engine, "admin", once, now=t0 + accounts.ONE_TIME_PASSWORD_TTL)
    assert str(err.value) == accounts.ONE_TIME_EXPIRED
    # A wrong password after the expiry still reads like every other failure (nothing is revealed).
    with pytest.raises(accounts.SignInError) as err:
        accounts.authenticate(engine, "admin", "not it at all", now=t0 + accounts.ONE_TIME_PASSWORD_TTL)
    assert str(err.value) == accounts.SIGN_IN_FAILED
    # A chosen password never expires.
    accounts.set_password(engine, "admin", PASSWORD)
    assert accounts.authenticate(engine, "admin", PASSWORD, now=t0 + timedelta(days=400)).name == "admin"


def test_one_time_password_lifetime_is_a_setting(engine, monkeypatch) -> None:
    monkeypatch.setenv(accounts.ONE_TIME_TTL_ENV, "2")
    assert accounts.one_time_password_ttl() == timedelta(hours=2)
    t0 = utcnow()
    once = accounts.new_one_time_password()
    accounts.add_user(engine, "admin", "admin", once, must_change_password=True, now=t0)
    with pytest.raises(accounts.SignInError, match="expired"):
        accounts.authenticate(engine, "admin", once, now=t0 + timedelta(hours=2, seconds=1))
    for bad in ("0", "-1", "soon", "nan", "inf"):
        monkeypatch.setenv(accounts.ONE_TIME_TTL_ENV, bad)
        with pytest.raises(InputError, match=accounts.ONE_TIME_TTL_ENV):
            accounts.one_time_password_ttl()


def test_reset_gives_a_one_time_password_and_ends_sessions(engine) -> None:
    accounts.add_user(engine, "boss", "admin", PASSWORD)
    ann = accounts.add_user(engine, "ann", "annotator", PASSWORD)
    token = accounts.start_session(engine, ann)
    t0 = utcnow()
    once = accounts.reset_password(engine, "ann", one_time_ttl=timedelta(hours=1), now=t0)
    assert accounts.session_user(engine, token) is None
    with pytest.raises(accounts.SignInError):
        accounts.authenticate(engine, "ann", PASSWORD, now=t0)
    assert accounts.authenticate(engine, "ann", once, now=t0).must_change_password
    with pytest.raises(accounts.SignInError, match="expired"):
        accounts.authenticate(engine, "ann", once, now=t0 + timedelta(hours=1))
    with pytest.raises(InputError, match="different"):
        accounts.set_password(engine, "ann", once)
