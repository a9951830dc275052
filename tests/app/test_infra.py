"""The browser guard: Chromium missing fails under FRACTAL_REQUIRE_BROWSER=1 (CI) and skips otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app import conftest


def test_missing_chromium_fails_when_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(conftest, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("FRACTAL_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="FRACTAL_REQUIRE_BROWSER=1"):
        conftest._require_chromium()


def test_missing_chromium_skips_on_a_developer_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(conftest, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("FRACTAL_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception):
        conftest._require_chromium()


def test_launch_args_point_at_debian_chromium() -> None:
    assert "--no-sandbox" in conftest.CHROMIUM_ARGS and "--headless" in conftest.CHROMIUM_ARGS
    assert "--disable-background-networking" in conftest.CHROMIUM_ARGS
