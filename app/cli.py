"""The ``fractal`` command: library and store commands, plus ``serve`` (web app + worker) and ``worker``.

``fractal serve`` is what ``make run`` runs: it migrates the store, loads the bundled demo dataset into an empty
database and queues its first training job, makes the first admin account when there is none (sign-in on),
starts the worker process and the Streamlit app on 127.0.0.1 (``--host`` to listen elsewhere, refused without
sign-in), prints the URL, and stops both when it is interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from app.score_server import register as register_score_server
from app.settings import (
    AUTH_ENV,
    DEFAULT_PORT,
    ENCODER_ENV,
    LOOPBACK,
    PRECISION_ENV,
    TRUSTED_PROXY_ENV,
    check_header_name,
    is_loopback,
    job_encoder,
    load_settings,
)
from db.cli import register as register_db
from db.connect import shown_url
from db.pairs_cli import register as register_pairs
from db.schema import SchemaOutdatedError
from db.segments_cli import register as register_segments
from db.users_cli import register as register_users
from fractal_core.cli import PRECISIONS, EncoderOpt, checked_encoder
from fractal_core.cli import register as register_core
from fractal_core.errors import InputError

WEB_APP = Path(__file__).resolve().parent / "web.py"
"""What ``streamlit run`` serves: the pages of ``main.py`` plus the session-cookie routes (``app/web.py``)."""


PRECISION_HELP = (
    f"Encoder precision of new embed and train jobs ({', '.join(PRECISIONS)}; default: auto, or "
    f"${PRECISION_ENV}); onnx-int8 embeds ~1.6x faster on a CPU (README, Encoder precision)."
)

app = typer.Typer(
    name="fractal",
    help="FRACTAL Studio: sentence-level scores from response-level labels.",
    no_args_is_help=True,
    add_completion=False,
)


def _register_subcommands() -> None:
    """Mount the library's and the store's commands (idempotent: the test suite calls it more than once)."""
    if getattr(app, "_fractal_registered", False):
        return
    register_core(app)
    register_db(app)
    register_users(app)
    register_segments(app)
    register_pairs(app)
    register_score_server(app)
    app._fractal_registered = True  # type: ignore[attr-defined]


def _ask_admin_password() -> str:
    typer.echo("No user yet: choose a password for the first admin account 'admin' (8+ characters).")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@app.command()
def serve(
    port: int = typer.Option(DEFAULT_PORT, "--port", help="Port of the web app."),
    db: str | None = typer.Option(
        None, "--db", help="SQLAlchemy URL of the store (default: SQLite in FRACTAL_HOME)."
    ),
    demo: bool = typer.Option(
        True, "--demo/--no-demo", help="Load the bundled demo dataset into an empty store."
    ),
    host: str = typer.Option(
        LOOPBACK, "--host", help="Address to listen on (e.g. 0.0.0.0 for a team; needs sign-in)."
    ),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Single user on this machine: no sign-in, listens on 127.0.0.1 only."
    ),
    encoder: EncoderOpt = None,
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
    trusted_proxy_header: str | None = typer.Option(
        None,
        "--trusted-proxy-header",
        help="Behind a reverse proxy: the header in which it passes the browser's address (e.g. "
        f"X-Forwarded-For; its last address is used; or ${TRUSTED_PROXY_ENV}), and X-Forwarded-Proto is "
        "believed. Off by default: set it only when the proxy is the only way to reach the app.",
    ),
) -> None:
    """Start the web app and its worker on one store; Ctrl+C stops both."""
    from app import setup

    encoder, precision = _checked_job_encoder(encoder, precision)
    if trusted_proxy_header is None:
        trusted_proxy_header = os.environ.get(TRUSTED_PROXY_ENV, "").strip() or None
    if trusted_proxy_header is not None:
        try:
            check_header_name(trusted_proxy_header)
        except ValueError as exc:
            typer.echo(f"error: --trusted-proxy-header (or ${TRUSTED_PROXY_ENV}): {exc}", err=True)
            raise typer.Exit(2) from exc

    if no_auth and not is_loopback(host):
        typer.echo(
            f"error: --host {host} would let other machines in without signing in; drop --no-auth "
            "(and add users with `fractal users add`) to serve a team, or keep the default host 127.0.0.1",
            err=True,
        )
        raise typer.Exit(2)
    settings = load_settings(db)
    try:
        message = setup.prepare_store(settings, load_demo=demo)
        if not no_auth:
            admin = setup.ensure_admin(settings, interactive=sys.stdin.isatty(), ask=_ask_admin_password)
            message = "\n".join(m for m in (message, admin) if m)
    except setup.SetupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if message:
        typer.echo(message)
    env = web_env(
        settings.home,
        settings.db_url,
        auth=not no_auth,
        encoder=encoder,
        precision=precision,
        trusted_proxy_header=trusted_proxy_header,
    )
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    worker_cmd = [sys.executable, "-m", "app.cli", "worker", "--db", settings.db_url]
    web_cmd = [
        sys.executable, "-m", "streamlit", "run", str(WEB_APP),
        "--server.port", str(port), "--server.address", host, "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a process manager's stop behaves like Ctrl+C: children are stopped below

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl+C stops, however this process was started: Python leaves SIGINT ignored when it inherits it ignored
    # (a command started with `&` from a script, or under nohup), and then nothing would stop the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    code = 0
    try:
        # Started inside the try: an interrupt at any point still stops whatever was already started.
        procs["worker"] = subprocess.Popen(worker_cmd, env=env)
        procs["web"] = subprocess.Popen(web_cmd, env=env)
        shown = "localhost" if is_loopback(host) else host
        mode = "no sign-in, this machine only" if no_auth else "sign-in required"
        typer.echo(
            f"FRACTAL Studio is running at http://{shown}:{port}  ({mode}; store: {shown_url(settings.db_url)}; "
            "Ctrl+C stops)"
        )
        while True:
            web = procs["web"]
            if web.poll() is not None:
                code = web.returncode or 0
                typer.echo(f"the web app exited (code {code})", err=True)
                break
            if procs["worker"].poll() is not None:
                # A dead worker means jobs silently never run: restart it rather than let "Train" do nothing.
                typer.echo(f"the worker exited (code {procs['worker'].returncode}); restarting it", err=True)
                procs["worker"] = subprocess.Popen(worker_cmd, env=env)
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    raise typer.Exit(code)


def web_env(
    home: Path,
    db_url: str,
    *,
    auth: bool,
    encoder: str | None,
    precision: str,
    trusted_proxy_header: str | None,
) -> dict[str, str]:
    """The environment of the web app and the worker that ``serve`` starts."""
    env = {
        **os.environ,
        "FRACTAL_HOME": str(home),
        "FRACTAL_DB_URL": db_url,
        AUTH_ENV: "on" if auth else "off",
        **({ENCODER_ENV: encoder} if encoder else {}),
        PRECISION_ENV: precision,
        # The web server (uvicorn) would otherwise take any loopback peer's X-Forwarded-For as the client's
        # address; whether a proxy header is believed is decided by --trusted-proxy-header alone.
        "FORWARDED_ALLOW_IPS": "",
    }
    env.pop(TRUSTED_PROXY_ENV, None)
    if trusted_proxy_header:
        env[TRUSTED_PROXY_ENV] = trusted_proxy_header
    return env


def _checked_job_encoder(encoder: str | None, precision: str | None) -> tuple[str | None, str]:
    """The encoder and precision of new jobs (flags, else the environment: ``settings.job_encoder``); an
    unknown encoder or precision exits 2 before anything starts, so `serve` never restarts a worker that
    refuses them."""
    encoder, precision = job_encoder(encoder, precision)
    if encoder or precision != "auto":
        checked_encoder(encoder, precision=precision)
    return encoder, precision


@app.command()
def worker(
    db: str | None = typer.Option(None, "--db", help="SQLAlchemy URL of the store."),
    once: bool = typer.Option(False, "--once", help="Run the queued jobs, then exit."),
    poll: float = typer.Option(1.0, "--poll", help="Seconds between looks at the queue when idle."),
    ray: str | None = typer.Option(
        None, "--ray", help="Embed (embed and score jobs) on a Ray cluster: 'auto' or its address."
    ),
    encoder: EncoderOpt = None,
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
) -> None:
    """Run background jobs (train, score, import, export) from the store until interrupted."""
    from dataclasses import replace

    from app.worker import Worker

    settings = load_settings(db)
    if ray:
        settings = replace(settings, ray_address=ray)
    encoder, precision = _checked_job_encoder(encoder, precision)
    settings = replace(settings, encoder=encoder, precision=precision)
    try:
        runner = Worker(settings)
    except SchemaOutdatedError as exc:  # the message names the upgrade command
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except InputError as exc:  # a store that cannot be opened or does not exist: the worker never creates one
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    runner.run(once=once, poll_seconds=poll)


def main() -> None:
    """Console-script entry point (``fractal``)."""
    _register_subcommands()
    app()


if __name__ == "__main__":
    main()
