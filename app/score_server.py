"""``fractal serve-scores``: a model's step scores over HTTP, for a training loop that wants process rewards.

The model is a saved directory (``--model DIR``) or the active model version of a dataset in a store
(``--dataset NAME``, ``--db URL``), loaded once at start; its id (a digest of its files) and, from a store, its
version are in every answer. Raw text is segmented as the dataset's files were on ingest (``--segment-mode``
overrides; a model directory defaults to sentences).

API (JSON both ways):

- ``GET /health``: ``{"status": "ok", "model": {"id": ...}}``, without a token (for a process manager).
- ``POST /v1/step-scores`` with ``Authorization: Bearer <token>`` and
  ``{"responses": [{"context": "...", "sentences": ["...", ...]} | {"context": "...", "text": "..."}, ...]}``:
  ``{"model": {...}, "results": [{"id", "text", "sentences", "offsets", "sentence_scores", "response_score"}]}``
  in request order (the key names of ``fractal score``'s output). Bad input: 400 with ``{"error", "field"}``
  (e.g. ``responses[2].text``); no or wrong token: 401; a body over the limit: 413.

Requests that arrive together are scored in one forward pass (:class:`ScoreBatcher`: up to ``--max-batch``
responses, waiting at most ``--max-wait-ms`` for company). It listens on 127.0.0.1 unless ``--host`` says
otherwise, and always wants a token: one is generated and printed once at start, or read from ``--token-file``.

This module is the command; the model it serves is loaded by ``app.score_model``, requests are batched by
``app.score_batcher`` and answered by ``app.score_http``.
"""

from __future__ import annotations

import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from app.score_batcher import ScoreBatcher
from app.score_http import HEALTH_PATH, MIN_TOKEN_CHARS, SCORES_PATH, Limits, ScoreServer
from app.score_model import ServedModel, ServeError, load_active_model, load_model_dir
from app.settings import LOOPBACK, is_loopback

DEFAULT_PORT = 8502
"""Port of ``fractal serve-scores`` unless ``--port`` says otherwise (the web app has 8501)."""


def read_token_file(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace dropped); ServeError when unreadable or too short."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ServeError(f"--token-file: {path}: {err}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ServeError(
            f"--token-file: {path}: the token must be one word of at least {MIN_TOKEN_CHARS} characters"
        )
    return token


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def serve_scores_cmd(
    model_dir: Annotated[
        Path | None, typer.Option("--model", help="A directory written by `fractal train`.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Serve this dataset's active model version from the store."),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="SQLAlchemy URL of the store (with --dataset).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (default: this machine only).")] = LOOPBACK,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    token_file: Annotated[
        Path | None,
        typer.Option(help="Read the bearer token from this file (default: a new one, printed once)."),
    ] = None,
    segment_mode: Annotated[
        str | None,
        typer.Option(
            help="sentences | steps for raw text (default: as the dataset's files; else sentences)."
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="Run the encoder and scorer here (default: the model's own; auto = CUDA)."),
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Most responses scored in one forward pass.")] = 64,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a request waits for others to share its forward pass.")
    ] = 5.0,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MiB.")] = 8.0,
) -> None:
    """Serve a model's step scores over HTTP for a training loop (POST /v1/step-scores, bearer token)."""
    from fractal_core.cli import model_on_device

    if (model_dir is None) == (dataset is None):
        raise _fail("give either --model DIR or --dataset NAME (with --db URL)")
    if model_dir is not None and db is not None:
        raise _fail("--db goes with --dataset; --model serves a directory")
    if max_batch < 1 or max_wait_ms < 0 or max_body_mb <= 0 or not 0 <= port <= 65535:
        raise _fail("--max-batch must be >= 1, --max-wait-ms >= 0, --max-body-mb > 0 and --port in 0..65535")
    try:
        token = read_token_file(token_file) if token_file else None
        if model_dir is not None:
            served = load_model_dir(model_dir, segment_mode=segment_mode)
        else:
            assert dataset is not None
            served = load_active_model(db, dataset, segment_mode=segment_mode)
    except ServeError as err:
        raise _fail(str(err)) from None
    if device is not None:
        model_on_device(served.model, device)
    if not is_loopback(host):
        typer.echo(
            f"warning: listening on {host}: any machine that reaches it and holds the token gets scores, "
            "over plain HTTP (put TLS in front of it beyond a trusted network)",
            err=True,
        )
    limits = Limits(max_body_bytes=int(max_body_mb * 1024 * 1024))
    generated = token is None
    token = token or secrets.token_urlsafe(32)
    try:
        server = ScoreServer(
            (host, port),
            served,
            token=token,
            limits=limits,
            max_batch=max_batch,
            max_wait_s=max_wait_ms / 1000,
        )
    except OSError as err:
        raise _fail(f"--host/--port: cannot listen on {host}:{port}: {err.strerror or err}") from None
    # Load the encoder and scorer now: the first request of a training loop should not pay for it.
    _warm_up(server)
    bound = server.server_address[1]
    shown = "localhost" if is_loopback(host) else host
    info = served.info
    what = f"{info['dataset']} v{info['version']}" if info.get("dataset") else str(model_dir)
    typer.echo(
        f"serving step scores of {what} (model {info['id']}, {served.segment_mode}) at "
        f"http://{shown}:{bound}{SCORES_PATH}  (Ctrl+C stops)"
    )
    if generated:
        typer.echo(f"token: {token}")  # shown once; callers send it as "Authorization: Bearer <token>"
    sys.stdout.flush()
    if threading.current_thread() is threading.main_thread():
        # A process manager's SIGTERM stops it like Ctrl+C, and Ctrl+C works even when SIGINT was inherited
        # ignored (a command started with `&` from a script).
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _warm_up(server: ScoreServer) -> None:
    from fractal_core.fitting.step_scores import responses_from_request

    served = server.served
    records = responses_from_request(
        [{"context": "warm-up", "sentences": ["The encoder is loaded."]}],
        segment_mode=served.segment_mode,  # type: ignore[arg-type]
        aggregation=served.model.aggregation_,
    )
    server.batcher.submit(records)


def register(app: typer.Typer) -> None:
    """Add ``serve-scores`` to ``app``."""
    app.command("serve-scores")(serve_scores_cmd)


__all__ = [
    "DEFAULT_PORT",
    "HEALTH_PATH",
    "MIN_TOKEN_CHARS",
    "SCORES_PATH",
    "Limits",
    "ScoreBatcher",
    "ScoreServer",
    "ServeError",
    "ServedModel",
    "load_active_model",
    "load_model_dir",
    "read_token_file",
    "register",
    "serve_scores_cmd",
]
