"""Fixtures for the whole test tree."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_main_module() -> Iterator[None]:
    """Streamlit's AppTest installs the page script as ``sys.modules["__main__"]`` and leaves it there; a process
    started later with the ``spawn`` method would then re-run that script (``app/main.py``) before its target.
    Each test gets back the ``__main__`` it started with."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
