"""``fractal serve-scores`` over HTTP: bearer token, request limits and checks, JSON answers and errors.

The API is described in ``app.score_server``.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.score_batcher import ScoreBatcher
from app.score_model import ServedModel

log = logging.getLogger("fractal.serve_scores")

SCORES_PATH = "/v1/step-scores"
HEALTH_PATH = "/health"
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Limits:
    """What one request may hold."""

    max_body_bytes: int = 8 * 1024 * 1024  # a larger body is refused (413) before it is read
    max_responses: int = 1024  # responses in one request
    max_field_chars: int = 200_000  # characters of one context, text or sentence (and all sentences together)
    timeout_s: float = 120.0  # a request whose batch has not been scored by then gets 503


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
