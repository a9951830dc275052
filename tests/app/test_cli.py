"""`fractal serve` / `fractal worker`: first-run setup, the demo only into an empty store, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app import setup
from app.cli import _register_subcommands, app
from app.settings import load_settings
from db import repository as repo
from tests.app.conftest import REPO, app_env, free_port
from tests.app.data import tiny_records


def test_prepare_store_loads_demo_only_into_an_empty_store(empty_store) -> None:
    settings = load_settings(empty_store.db_url)
    message = setup.prepare_store(settings)
    assert f"created a new store at {empty_store.db_url}" in message and "demo dataset" in message
    [ds] = repo.list_datasets(empty_store.engine)
    assert ds.name == setup.DEMO_DATASET and ds.n_responses > 0
    jobs = repo.list_jobs(empty_store.engine)[::-1]  # oldest first: the order the worker runs them
    assert [(j.kind, j.state, j.payload["dataset_id"]) for j in jobs] == [
        ("embed", "queued", ds.id),
        ("train", "queued", ds.id),
    ]
    # A second start changes nothing: no second demo, no second job.
    assert setup.prepare_store(settings) == ""
    assert len(repo.list_datasets(empty_store.engine)) == 1 and len(repo.list_jobs(empty_store.engine)) == 2


@pytest.mark.slow
def test_demo_embed_job_loads_the_shipped_vectors_instead_of_embedding(store, monkeypatch) -> None:
    from app.jobs import JobContext, run_job
    from fractal_core.data.demo import demo_texts
    from fractal_core.embedding.encoder import get_encoder

    monkeypatch.setattr(
        "fractal_core.embedding.encoder._ENCODERS", {}
    )  # an encoder on this test's (empty) cache

    settings = load_settings(store.db_url)
    setup.prepare_store(settings)
    embed = repo.claim_next_job(store.engine, "test:1", kinds=["embed"])
    assert embed is not None and embed.payload["bundled_embeddings"] is True
    encoder = get_encoder()
    assert encoder.cache is not None and encoder.cache.path.is_relative_to(store.home)  # a fresh cache
    calls: list[int] = []
    original = encoder._embed
    encoder._embed = lambda texts, on_done: calls.append(len(texts)) or original(texts, on_done)  # type: ignore[method-assign]
    try:
        result = run_job(store.engine, settings, embed, JobContext(store.engine, embed.id))
    finally:
        del encoder._embed
    assert calls == []  # every demo sentence and context window came from the shipped pack
    assert encoder.cache.count(encoder.encoder_id) == len(demo_texts())
    assert result["sentences"] > 0
    assert "precomputed demo embeddings" in repo.get_job(store.engine, embed.id).log


def test_prepare_store_leaves_a_users_store_alone(store) -> None:
    store.ingest(tiny_records(3), name="mine")
    assert setup.prepare_store(load_settings(store.db_url)) == ""
    assert [d.name for d in repo.list_datasets(store.engine)] == ["mine"]
    assert repo.list_jobs(store.engine) == []


def test_cli_lists_library_store_and_app_commands() -> None:
    _register_subcommands()
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "worker", "ingest", "export", "train", "db"):
        assert command in result.output


@pytest.mark.slow
def test_worker_once_runs_queued_jobs(store) -> None:
    ds = store.ingest(tiny_records(4))
    job = repo.create_job(store.engine, "export", {"dataset_id": ds.dataset_id, "format": "kto"})
    env = app_env(store.home, store.db_url)
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker", "--db", store.db_url, "--once"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert repo.get_job(store.engine, job.id).state == "succeeded"


@pytest.mark.slow
def test_serve_stops_its_children_on_sigterm(store) -> None:
    port = free_port()
    log = store.home / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--db", store.db_url, "--no-demo"],
            cwd=REPO, env=app_env(store.home, store.db_url), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "running at" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # as a process manager would stop it
        proc.wait(timeout=60)
    finally:
        time.sleep(0.5)
        left = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if left:
            os.killpg(proc.pid, signal.SIGKILL)
    assert left == []


@pytest.mark.slow
def test_serve_starts_app_and_worker_and_stops_both(store) -> None:
    port = free_port()
    env = app_env(store.home, store.db_url)
    log = store.home / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--db", store.db_url, "--no-demo"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            # As a script's `cmd &` starts it, with SIGINT ignored: Ctrl+C must stop it all the same.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "web app never became healthy"
                time.sleep(0.3)
        assert f"running at http://localhost:{port}" in log.read_text()
        # The worker is up too: a queued job gets run.
        ds = store.ingest(tiny_records(3))
        job = repo.create_job(store.engine, "export", {"dataset_id": ds.dataset_id, "format": "native"})
        while repo.get_job(store.engine, job.id).state != "succeeded":
            assert time.monotonic() < deadline + 60, "the worker started by serve never ran the job"
            time.sleep(0.3)
        children = subprocess.run(
            ["pgrep", "-s", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 3  # serve, worker, streamlit
        # Streamlit listens on loopback only unless --host asks otherwise.
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in children]
        web = next(c for c in cmdlines if b"streamlit" in b" ".join(c))
        assert web[web.index(b"--server.address") + 1] == b"127.0.0.1"
        # It serves app/web.py (the pages plus the session-cookie routes), believing no proxy header.
        assert web[web.index(b"run") + 1].endswith(b"web.py")
        web_pid = children[cmdlines.index(web)]
        environ = Path(f"/proc/{web_pid}/environ").read_bytes().split(b"\0")
        assert b"FORWARDED_ALLOW_IPS=" in environ
        assert not any(e.startswith(b"FRACTAL_TRUSTED_PROXY_HEADER=") for e in environ)
        assert "sign-in required" in log.read_text() and "one-time password" in log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        try:
            proc.wait(timeout=60)
        finally:
            # Whatever happened above, leave nothing of this session running.
            time.sleep(0.5)
            left_now = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout
            if left_now.split():
                os.killpg(proc.pid, signal.SIGKILL)
                raise AssertionError(f"serve left processes behind: {left_now.split()}")
    assert proc.returncode == 0


@pytest.mark.slow
def test_worker_refuses_an_outdated_schema_with_the_upgrade_command(empty_store) -> None:
    from db.engine import get_engine
    from db.schema import upgrade

    engine = get_engine(empty_store.db_url, check_schema=False)
    upgrade(engine, "0001")  # an older revision, as left by a previous version of FRACTAL Studio
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker", "--db", empty_store.db_url, "--once"],
        cwd=REPO, env=app_env(empty_store.home, empty_store.db_url), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "fractal db upgrade" in done.stderr


def test_serve_refuses_a_public_host_without_sign_in(store) -> None:
    _register_subcommands()
    result = CliRunner().invoke(app, ["serve", "--no-auth", "--host", "0.0.0.0", "--db", store.db_url])
    assert result.exit_code == 2
    assert "without signing in" in result.output and "fractal users add" in result.output
    assert "running at" not in result.output


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("sqlite:////dev/null", "not an SQLite file"),
        ("postgresql+psycopg://mallory:hunter2@127.0.0.1:1/fractal", "Connection refused"),
        ("file:///etc/passwd", "unknown database kind"),
        ("sqlite:///{home}/no-such-folder/x.db", "does not exist"),
    ],
)
def test_serve_and_worker_refuse_a_store_they_cannot_open_in_one_line(store, url: str, why: str) -> None:
    _register_subcommands()
    url = url.format(home=store.home)
    for args in (["serve", "--no-auth", "--no-demo", "--db", url], ["worker", "--once", "--db", url]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("error: ") and why in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "hunter2" not in result.output
    assert not (store.home / "no-such-folder").exists()


def test_serve_refuses_a_header_name_that_is_not_one(store, monkeypatch) -> None:
    def must_not_start(*args: object, **kwargs: object) -> None:
        raise AssertionError("serve started a process despite a bad --trusted-proxy-header")

    monkeypatch.setattr("app.cli.subprocess.Popen", must_not_start)
    _register_subcommands()
    for bad in ("X-Forwarded-For: 1.2.3.4", "", "X_Forwarded"):
        result = CliRunner().invoke(app, ["serve", "--trusted-proxy-header", bad, "--db", store.db_url])
        assert result.exit_code == 2, (bad, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --trusted-proxy-header"), result.output
    monkeypatch.setenv("FRACTAL_TRUSTED_PROXY_HEADER", "not a header")
    result = CliRunner().invoke(app, ["serve", "--db", store.db_url])
    assert result.exit_code == 2 and "FRACTAL_TRUSTED_PROXY_HEADER" in result.output
    assert "running at" not in result.output


def test_serve_passes_a_trusted_proxy_header_only_when_configured(monkeypatch) -> None:
    from app.cli import web_env
    from app.settings import TRUSTED_PROXY_ENV, trusted_proxy_header

    monkeypatch.setenv(TRUSTED_PROXY_ENV, "X-Real-IP")  # left over in the shell: the flag decides
    common = {"auth": True, "encoder": None, "precision": "auto"}
    off = web_env(Path("/h"), "sqlite://", trusted_proxy_header=None, **common)  # type: ignore[arg-type]
    assert TRUSTED_PROXY_ENV not in off
    # The web server itself believes no X-Forwarded-For either (it would, by default, from loopback peers).
    assert off["FORWARDED_ALLOW_IPS"] == ""
    on = web_env(Path("/h"), "sqlite://", trusted_proxy_header="X-Forwarded-For", **common)  # type: ignore[arg-type]
    assert on[TRUSTED_PROXY_ENV] == "X-Forwarded-For" and on["FORWARDED_ALLOW_IPS"] == ""
    monkeypatch.setenv(TRUSTED_PROXY_ENV, "X-Forwarded-For")
    assert trusted_proxy_header() == "X-Forwarded-For"
    monkeypatch.setenv(TRUSTED_PROXY_ENV, "bad header")
    assert trusted_proxy_header() is None


def test_first_serve_makes_an_admin_with_a_one_time_password(store) -> None:
    from db import accounts

    settings = load_settings(store.db_url)
    setup.prepare_store(settings, load_demo=False)
    message = setup.ensure_admin(settings, interactive=False)
    assert message is not None and "one-time password" in message
    password = message.split("one-time password ")[1].split()[0]
    user = accounts.authenticate(store.engine, "admin", password)
    assert user.role == "admin" and user.must_change_password
    assert setup.ensure_admin(settings, interactive=False) is None  # a store with users is left alone
    assert "valid for 24 h" in message


def test_first_admin_one_time_password_lifetime_comes_from_the_setting(store, monkeypatch) -> None:
    from datetime import timedelta

    from db import accounts
    from db.models import utcnow

    settings = load_settings(store.db_url)
    setup.prepare_store(settings, load_demo=False)
    monkeypatch.setenv("FRACTAL_ONE_TIME_PASSWORD_HOURS", "soon")
    with pytest.raises(setup.SetupError, match="FRACTAL_ONE_TIME_PASSWORD_HOURS"):
        setup.ensure_admin(settings, interactive=False)
    monkeypatch.setenv("FRACTAL_ONE_TIME_PASSWORD_HOURS", "1")
    message = setup.ensure_admin(settings, interactive=False)
    assert message is not None and "valid for 1 h" in message
    password = message.split("one-time password ")[1].split()[0]
    with pytest.raises(accounts.SignInError, match="expired"):
        accounts.authenticate(store.engine, "admin", password, now=utcnow() + timedelta(hours=1, seconds=1))


def test_first_serve_on_a_terminal_asks_for_the_admin_password(store) -> None:
    from db import accounts

    settings = load_settings(store.db_url)
    setup.prepare_store(settings, load_demo=False)
    message = setup.ensure_admin(settings, interactive=True, ask=lambda: "typed at the terminal")
    assert message is not None and "typed at the terminal" not in message
    assert not accounts.authenticate(store.engine, "admin", "typed at the terminal").must_change_password


def test_users_commands_add_list_set_role_disable(store) -> None:
    from db import accounts

    _register_subcommands()
    runner = CliRunner()
    db = ["--db", store.db_url]
    assert store.engine is not None  # the store exists: the users commands never create one
    added = runner.invoke(app, ["users", "add", "ann", "--role", "annotator", *db], input="secret-password\n")
    assert added.exit_code == 0, added.output
    assert "secret-password" not in added.output
    assert accounts.authenticate(store.engine, "ann", "secret-password").role == "annotator"
    runner.invoke(app, ["users", "add", "boss", "--role", "admin", *db], input="boss-password\n")
    assert runner.invoke(app, ["users", "set-role", "ann", "reviewer", *db]).exit_code == 0
    listing = runner.invoke(app, ["users", "list", *db]).output
    assert "ann\treviewer\tactive" in listing and "boss\tadmin\tactive" in listing
    assert runner.invoke(app, ["users", "disable", "ann", *db]).exit_code == 0
    assert "ann\treviewer\tdisabled" in runner.invoke(app, ["users", "list", *db]).output
    for bad in (
        ["users", "add", "x", "--role", "root", *db],
        ["users", "set-role", "ghost", "admin", *db],
        ["users", "disable", "boss", *db],  # the last admin
    ):
        result = runner.invoke(app, bad, input="long-enough-pw\n")
        assert result.exit_code == 2, (bad, result.output)
        assert result.output.startswith("error: ") and "Traceback" not in result.output
    short = runner.invoke(app, ["users", "add", "bob", *db], input="short\n")
    assert short.exit_code == 2 and "8 characters" in short.output
    assert [u.name for u in accounts.list_users(store.engine)] == ["ann", "boss"]


def test_users_passwd_one_time_resets_a_forgotten_password(store, monkeypatch) -> None:
    from db import accounts

    _register_subcommands()
    runner = CliRunner()
    db = ["--db", store.db_url]
    accounts.add_user(store.engine, "boss", "admin", "boss-password")
    ann = accounts.add_user(store.engine, "ann", "annotator", "forgotten-password")
    token = accounts.start_session(store.engine, ann)
    result = runner.invoke(app, ["users", "passwd", "ann", "--one-time", *db])
    assert result.exit_code == 0, result.output
    assert "for 24 h" in result.output
    once = result.output.split("one-time password of ann: ")[1].split()[0]
    assert accounts.session_user(store.engine, token) is None  # the reset ends her sessions
    assert accounts.authenticate(store.engine, "ann", once).must_change_password
    assert "must change password" in runner.invoke(app, ["users", "list", *db]).output
    # The same one-time password is refused as her new one, through the command as anywhere else.
    same = runner.invoke(app, ["users", "passwd", "ann", *db], input=once + "\n")
    assert same.exit_code == 2 and "different from the one-time password" in same.output
    monkeypatch.setenv("FRACTAL_ONE_TIME_PASSWORD_HOURS", "-3")
    bad = runner.invoke(app, ["users", "passwd", "ann", "--one-time", *db])
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and "Traceback" not in bad.output
