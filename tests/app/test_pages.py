"""AppTest: every page renders without an exception, on an empty store and on a store with data."""

from __future__ import annotations

import pytest

from tests.app.conftest import app_test
from tests.app.data import tiny_records

PAGES = [
    "views/review.py",
    "views/gold.py",
    "views/data.py",
    "views/train.py",
    "views/models.py",
    "views/export.py",
]


def _texts(at) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "info", "warning", "error", "success", "text")
        for e in getattr(at, kind)
    ]
    parts += [h.proto.body for h in at.html]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_page_on_empty_store(store, page: str) -> None:
    at = app_test(page)
    assert not at.exception, at.exception
    assert not at.error
    if page != "views/data.py":
        assert "Upload" in _texts(at) or "upload" in _texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_page_with_data(store, page: str) -> None:
    store.ingest(tiny_records(12, with_labels=True))
    at = app_test(page)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_outdated_schema_shows_the_upgrade_command(empty_store) -> None:
    from db.engine import get_engine
    from db.schema import upgrade

    upgrade(get_engine(empty_store.db_url, check_schema=False), "0001")
    at = app_test()
    assert not at.exception
    [error] = at.error
    assert "fractal db upgrade" in error.value.replace("\\", "")
