"""The PostgreSQL guard: without a server the PostgreSQL variants fail in CI and skip on a developer machine."""

from __future__ import annotations

import pytest

from tests import engines


@pytest.mark.parametrize("env", [{"FRACTAL_REQUIRE_PG": "1"}, {"CI": "true"}])
def test_missing_server_fails_when_required(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.delenv(engines.PG_URL_ENV, raising=False)
    monkeypatch.delenv("FRACTAL_REQUIRE_PG", raising=False)
    monkeypatch.delenv("CI", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is required"):
        engines.pg_admin_url()


def test_missing_server_skips_on_a_developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (engines.PG_URL_ENV, "FRACTAL_REQUIRE_PG", "CI"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(pytest.skip.Exception):
        engines.pg_admin_url()
