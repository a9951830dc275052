"""Fixtures for the app tests: a Streamlit server (and worker) on a free port over a temp store, and Chromium.

Playwright cannot download browsers here, so pytest-playwright is pointed at Debian's /usr/bin/chromium. When
FRACTAL_REQUIRE_BROWSER=1 (CI) a missing Chromium fails the browser tests instead of skipping them.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.engines import database_url

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("FRACTAL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_TIMEOUT_S = 90.0


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    msg = f"{CHROMIUM} not found (apt-get install -y chromium)"
    if os.environ.get("FRACTAL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FRACTAL_REQUIRE_BROWSER=1 but {msg}", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(autouse=True)
def _browser_guard(request: pytest.FixtureRequest) -> None:
    """Every ``@pytest.mark.browser`` test needs Chromium: fail in CI, skip on a developer machine."""
    if request.node.get_closest_marker("browser") is not None:
        _require_chromium()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright hook: launch Debian's Chromium headless, without network side channels."""
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": CHROMIUM_ARGS,
        "headless": True,
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_env(home: Path, db_url: str) -> dict[str, str]:
    """Environment for app processes under test: isolated store, offline models, no telemetry."""
    env = dict(os.environ)
    env.update(
        FRACTAL_HOME=str(home),
        FRACTAL_DB_URL=db_url,
        FRACTAL_ANNOTATOR="tester",
        FRACTAL_AUTH="off",  # single-user mode unless a test signs people in (app_server_factory(auth=True))
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONPATH=str(REPO),
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        # Two cores shared with others: keep torch from oversubscribing them.
        OMP_NUM_THREADS="1",
    )
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    # Our processes run in their own session, so the group id is the pid: this ends only what we started.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@dataclass
class AppServer:
    """A running ``streamlit run app/web.py`` (the app as ``fractal serve`` runs it: the pages of
    ``app/main.py`` plus the session-cookie routes), plus optionally a worker, over an isolated store."""

    home: Path
    db_url: str
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    auth: bool = False  # sign-in required (FRACTAL_AUTH=on), as `fractal serve` without --no-auth

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppServer:
        self.env = app_env(self.home, self.db_url)
        if self.auth:
            self.env["FRACTAL_AUTH"] = "on"
        self.port = free_port()
        log = open(self.home / "streamlit.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.server = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "web.py"),
                "--server.port", str(self.port), "--server.address", "127.0.0.1", "--server.headless", "true",
                "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
            ],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        assert self.server is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"streamlit not healthy after {SERVER_START_TIMEOUT_S}s:\n{self.log()}")

    def start_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.home / "worker.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--db", self.db_url, *extra],
            cwd=REPO, env=self.env or app_env(self.home, self.db_url), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        return self.worker

    def kill_worker(self) -> None:
        """SIGKILL the worker: simulates a crash (no cleanup code runs)."""
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(timeout=15)

    def log(self) -> str:
        parts = []
        for name in ("streamlit.log", "worker.log"):
            p = self.home / name
            if p.exists():
                parts.append(f"--- {name}\n" + p.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in (self.worker, self.server):
            if proc is not None:
                _stop(proc)


@pytest.fixture
def app_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def app_server_factory(tmp_path: Path) -> Iterator[Any]:
    """Call with an optional ``prepare(db_url)`` to seed the store before the server starts."""
    servers: list[AppServer] = []

    def make(prepare: Any = None, *, auth: bool = False) -> AppServer:
        home = tmp_path / f"srv{len(servers)}"
        home.mkdir()
        db_url = f"sqlite:///{home / 'fractal.sqlite'}"
        if prepare is not None:
            prepare(db_url, home)
        _created_as_serve_does(db_url)  # the server is started as `fractal serve` starts it: on a store
        srv = AppServer(home=home, db_url=db_url, auth=auth)
        servers.append(srv)
        return srv.start()

    yield make
    for srv in servers:
        srv.stop()


# ------------------------------------------------------------------------------------------------ AppTest


@dataclass
class Store:
    """An isolated store for in-process tests: FRACTAL_HOME and FRACTAL_DB_URL point at a temp dir."""

    home: Path
    db_url: str

    @functools.cached_property
    def engine(self) -> Any:
        from db.engine import get_engine

        return get_engine(self.db_url)

    def ingest(self, records: list[dict[str, Any]], name: str = "tiny", **options: Any) -> Any:
        from db.ingest import ingest_file
        from tests.app.data import write_jsonl

        path = write_jsonl(self.home / f"{name}-{len(list(self.home.iterdir()))}.jsonl", records)
        return ingest_file(self.engine, path, name, **options)

    def run_jobs(self) -> None:
        """Run every queued job in this process, as the worker would."""
        from app.settings import load_settings
        from app.worker import Worker

        Worker(load_settings(self.db_url)).run(once=True)


@contextmanager
def make_store(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, empty: bool = False
) -> Iterator[Store]:
    """An isolated store on ``kind`` (``sqlite`` or ``postgresql``, see :mod:`tests.engines`): a copy of an empty
    store at the newest revision, or with ``empty`` a database with no store in it yet (the first ``get_engine``
    or ``fractal serve`` creates it)."""
    import streamlit as st

    home = tmp_path / "home"
    home.mkdir()
    with database_url(kind, home, store=not empty) as url:
        monkeypatch.setenv("FRACTAL_HOME", str(home))
        monkeypatch.setenv("FRACTAL_DB_URL", url)
        monkeypatch.setenv("FRACTAL_ANNOTATOR", "tester")
        monkeypatch.setenv("FRACTAL_AUTH", "off")  # single-user mode; tests of sign-in and roles turn it on
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        # The app caches settings and the engine per process; each test has its own store.
        st.cache_resource.clear()
        st.cache_data.clear()
        try:
            yield Store(home, url)
        finally:
            st.cache_resource.clear()
            st.cache_data.clear()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    with make_store("sqlite", tmp_path, monkeypatch) as made:
        yield made


@pytest.fixture
def empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """Like ``store``, but its database holds no store yet: for what happens on a first start or to an old one."""
    with make_store("sqlite", tmp_path, monkeypatch, empty=True) as made:
        yield made


def _created_as_serve_does(url: str | None = None) -> None:
    """Create the store at ``url`` (default ``FRACTAL_DB_URL``) when it does not exist yet, as ``fractal serve``
    does before it starts the app: pages never create one (a store at an older revision is left for the page to
    refuse)."""
    from db.engine import get_engine
    from db.schema import current_revision, upgrade

    engine = get_engine(url or os.environ["FRACTAL_DB_URL"], check_schema=False, create=True)
    try:
        if current_revision(engine) is None:
            upgrade(engine)
    finally:
        engine.dispose()


def app_test(page: str | None = None, timeout: float = 60) -> Any:
    """An AppTest of the entry file, run once and optionally switched to ``page`` (``"views/x.py"``)."""
    from streamlit.testing.v1 import AppTest

    _created_as_serve_does()
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=timeout)
    at.run()
    if page is not None:
        at.switch_page(page)
        at.run()
    return at
