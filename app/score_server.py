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
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.settings import LOOPBACK, is_loopback

if TYPE_CHECKING:
    from fractal_core.data.records import ResponseRecord
    from fractal_core.fitting.estimator import FractalModel
    from fractal_core.fitting.step_scores import ScoredResponse

log = logging.getLogger("fractal.serve_scores")

DEFAULT_PORT = 8502
"""Port of ``fractal serve-scores`` unless ``--port`` says otherwise (the web app has 8501)."""
SCORES_PATH = "/v1/step-scores"
HEALTH_PATH = "/health"
MIN_TOKEN_CHARS = 16


class ServeError(ValueError):
    """A model or option that cannot be served: the command prints it on one line and exits 2."""


@dataclass(frozen=True)
class Limits:
    """What one request may hold."""

    max_body_bytes: int = 8 * 1024 * 1024  # a larger body is refused (413) before it is read
    max_responses: int = 1024  # responses in one request
    max_field_chars: int = 200_000  # characters of one context, text or sentence (and all sentences together)
    timeout_s: float = 120.0  # a request whose batch has not been scored by then gets 503


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and what every answer says about it (``info``: id, version, dataset, method, ...)."""

    model: FractalModel
    segment_mode: str
    info: dict[str, Any]


# ------------------------------------------------------------------------------------------ loading a model


def _served(model: FractalModel, directory: Path, segment_mode: str, **where: Any) -> ServedModel:
    from fractal_core.fitting.step_scores import model_digest

    info = {
        "id": model_digest(directory, model.FILES),
        **where,
        "method": model.resolved_method_,
        "aggregation": model.aggregation_,
        "encoder_id": model.encoder_id_,
        "segment_mode": segment_mode,
    }
    return ServedModel(model=model, segment_mode=segment_mode, info=info)


def _check_mode(segment_mode: str) -> str:
    if segment_mode not in ("sentences", "steps"):
        raise ServeError(f"--segment-mode: expected sentences or steps, got {segment_mode!r}")
    return segment_mode


def _load(directory: Path) -> FractalModel:
    from fractal_core.fitting.estimator import FractalModel

    try:
        return FractalModel.load(directory)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # unreadable, newer format, bad weights
        raise ServeError(f"{directory}: cannot load the model: {err}") from None


def load_model_dir(directory: Path, *, segment_mode: str | None = None) -> ServedModel:
    """A directory written by ``fractal train`` (raw text split into sentences unless ``segment_mode``)."""
    if (directory / "finetune.json").is_file():
        raise ServeError(f"{directory}: a fine-tuned scorer; serve-scores serves `fractal train` models")
    if not (directory / "model.json").is_file():
        raise ServeError(f"{directory}: no model.json (train one with `fractal train`)")
    model = _load(directory)
    return _served(model, directory, _check_mode(segment_mode or "sentences"), version=None, dataset=None)


def load_active_model(db_url: str | None, dataset: str, *, segment_mode: str | None = None) -> ServedModel:
    """The active model version of ``dataset`` in the store at ``db_url`` (its files unpacked into the local
    model cache as a worker does); raw text is segmented as the dataset's files were."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.settings import load_settings
    from db import artifacts
    from db import repository as repo
    from db.engine import get_engine
    from db.schema import SchemaOutdatedError

    settings = load_settings(db_url)
    try:
        engine = get_engine(settings.db_url, create=False)  # serving never creates a store
        row = repo.require_dataset(engine, dataset)
        version = repo.active_model_version(engine, row.id)
        if version is None:
            raise ServeError(f"--dataset: {dataset!r} has no active model yet; train one first")
        directory = artifacts.model_dir(engine, version, settings.models_dir)
        modes = repo.segment_modes(engine, row.id)
    except (SchemaOutdatedError, ValueError) as err:  # no such dataset, a foreign or missing model
        raise ServeError(str(err)) from None
    except SQLAlchemyError as err:
        raise ServeError(f"--db: cannot read the store: {' '.join(str(err).split())[:300]}") from None
    if segment_mode is None:
        if len(modes) > 1:
            raise ServeError(
                f"--segment-mode: the files of {dataset!r} were segmented as {' and '.join(modes)}; "
                "say which one new responses get"
            )
        segment_mode = modes[0] if modes else "sentences"
    model = _load(directory)
    return _served(
        model, directory, _check_mode(segment_mode), version=version.version, model_version_id=version.id,
        dataset=row.name,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ batching


@dataclass(eq=False)
class _Pending:
    records: list[ResponseRecord]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[ScoredResponse] | None = None
    error: BaseException | None = None


class ScoreBatcher:
    """Scores the requests that arrive together in one call of ``score``.

    One thread takes the oldest waiting request, then keeps taking requests for up to ``max_wait_s`` or until
    ``max_batch`` responses are gathered (a request is never split: one larger than ``max_batch`` is a batch of
    its own), scores them all at once and hands each request its own results.
    """

    def __init__(
        self,
        score: Callable[[list[ResponseRecord]], list[ScoredResponse]],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
    ) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self._score = score
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._held: _Pending | None = None  # taken from the queue but left for the next batch (too big)
        self._thread = threading.Thread(target=self._loop, name="score-batcher", daemon=True)
        self._thread.start()

    def submit(self, records: list[ResponseRecord], *, timeout_s: float = 120.0) -> list[ScoredResponse]:
        """Score ``records`` in the next batch; raises what scoring raised, or TimeoutError."""
        pending = _Pending(records)
        self._queue.put(pending)
        if not pending.done.wait(timeout_s):
            raise TimeoutError(f"not scored within {timeout_s:g}s")
        if pending.error is not None:
            raise pending.error
        assert pending.results is not None
        return pending.results

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _next(self, timeout: float | None) -> _Pending | None:
        if self._held is not None:
            held, self._held = self._held, None
            return held
        return self._queue.get(timeout=timeout)

    def _loop(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            batch, size = [first], len(first.records)
            deadline = time.monotonic() + self.max_wait_s
            stop = False
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._next(remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if size + len(item.records) > self.max_batch:
                    self._held = item
                    break
                batch.append(item)
                size += len(item.records)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[_Pending]) -> None:
        records = [r for pending in batch for r in pending.records]
        try:
            results = self._score(records)
        except Exception as exc:  # every waiting request gets the failure; the thread lives on
            log.exception("scoring a batch of %d responses failed", len(records))
            for pending in batch:
                pending.error = exc
                pending.done.set()
            return
        start = 0
        for pending in batch:
            pending.results = results[start : start + len(pending.records)]
            start += len(pending.records)
            pending.done.set()


# -------------------------------------------------------------------------------------------------- server


class ScoreServer(ThreadingHTTPServer):
    """The HTTP server: a thread per connection, one :class:`ScoreBatcher` behind them all."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        served: ServedModel,
        *,
        token: str,
        limits: Limits | None = None,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
    ) -> None:
        from fractal_core.fitting.step_scores import score_responses

        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the token must have at least {MIN_TOKEN_CHARS} characters")
        self.served = served
        self.token = token.encode()
        self.limits = limits or Limits()
        super().__init__(address, _Handler)  # binds first: a busy port leaves no batcher thread behind
        model = served.model
        self.batcher = ScoreBatcher(
            lambda records: score_responses(model, records), max_batch=max_batch, max_wait_s=max_wait_s
        )

    def authorised(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries this server's bearer token (constant-time compare)."""
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)

    def server_close(self) -> None:
        super().server_close()
        self.batcher.close()


class _Handler(BaseHTTPRequestHandler):
    server: ScoreServer
    protocol_version = "HTTP/1.1"  # keep-alive: a training loop reuses its connection
    timeout = 60  # seconds a connection may sit idle or trickle a request before it is dropped
    server_version = "fractal-serve-scores"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: dict[str, Any], *, close: bool = False) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="fractal serve-scores"')
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, field: str | None = None, *, close: bool = False) -> None:
        model = self.server.served.info if status != HTTPStatus.UNAUTHORIZED else self._model_id()
        self._send(status, {"error": message, "field": field, "model": model}, close=close)

    def _model_id(self) -> dict[str, Any]:
        return {"id": self.server.served.info["id"]}

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._send(HTTPStatus.OK, {"status": "ok", "model": self._model_id()})
        elif not self.server.authorised(self.headers.get("Authorization")):
            self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page; POST {SCORES_PATH} or GET {HEALTH_PATH}")

    def do_POST(self) -> None:
        # The token is checked before the body is read: a caller without it costs nothing but the headers.
        if not self.server.authorised(self.headers.get("Authorization")):
            self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token", close=True)
            return
        if self.path != SCORES_PATH:
            self._error(HTTPStatus.NOT_FOUND, f"no such page; POST {SCORES_PATH}", close=True)
            return
        body = self._body()
        if body is None:
            return
        self._score(body)

    def _body(self) -> bytes | None:
        limits = self.server.limits
        length = self.headers.get("Content-Length")
        if length is None:
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required", close=True)
            return None
        if not length.strip().isdigit():
            self._error(
                HTTPStatus.BAD_REQUEST, "Content-Length must be a number", "Content-Length", close=True
            )
            return None
        size = int(length)
        if size > limits.max_body_bytes:
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body is {size} bytes; the limit is {limits.max_body_bytes}",
                "body",
                close=True,
            )
            return None
        return self.rfile.read(size)

    def _score(self, body: bytes) -> None:
        from fractal_core.errors import InputError
        from fractal_core.fitting.step_scores import responses_from_request

        served, limits = self.server.served, self.server.limits
        try:
            request = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as err:
            self._error(HTTPStatus.BAD_REQUEST, f"not UTF-8 (byte {err.start + 1})", "body")
            return
        except json.JSONDecodeError as err:
            self._error(HTTPStatus.BAD_REQUEST, f"invalid JSON: {err.msg} at character {err.pos + 1}", "body")
            return
        except RecursionError:
            self._error(HTTPStatus.BAD_REQUEST, "JSON nested too deeply", "body")
            return
        if not isinstance(request, dict):
            self._error(HTTPStatus.BAD_REQUEST, 'must be an object {"responses": [...]}', "body")
            return
        unknown = sorted(set(request) - {"responses"})
        if unknown:
            self._error(HTTPStatus.BAD_REQUEST, "unknown field; the body has only responses", unknown[0])
            return
        if "responses" not in request:
            self._error(HTTPStatus.BAD_REQUEST, "missing required field", "responses")
            return
        try:
            records = responses_from_request(
                request["responses"],
                segment_mode=served.segment_mode,  # type: ignore[arg-type]
                aggregation=served.model.aggregation_,
                max_responses=limits.max_responses,
                max_field_chars=limits.max_field_chars,
            )
        except InputError as err:
            self._error(HTTPStatus.BAD_REQUEST, err.reason, err.field)
            return
        try:
            results = self.server.batcher.submit(records, timeout_s=limits.timeout_s)
        except TimeoutError as err:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"busy: {err}")
            return
        except Exception as exc:  # the traceback is in the server's log; the caller gets one line
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"scoring failed: {type(exc).__name__}: {exc}")
            return
        self._send(HTTPStatus.OK, {"model": served.info, "results": [r.to_dict() for r in results]})


# ---------------------------------------------------------------------------------------------- command


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
    "Limits",
    "ScoreBatcher",
    "ScoreServer",
    "ServeError",
    "ServedModel",
    "load_active_model",
    "load_model_dir",
    "register",
    "serve_scores_cmd",
]
