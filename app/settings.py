"""Where the app keeps its state, read from the environment so the UI, the worker and the CLI agree.

``FRACTAL_HOME`` (default ``./.fractal``) holds the SQLite file and model artifacts; ``FRACTAL_DB_URL``
overrides the database (any SQLAlchemy URL). ``fractal serve --db URL`` sets the variable for the processes it
starts, which is how the Streamlit process and the worker share one store. ``FRACTAL_ENCODER`` (set by
``fractal serve --encoder`` / ``fractal worker --encoder``) names the sentence encoder new embed and train jobs use:
an encoder name (``fractal_core.embedding.encoder.ENCODERS``) or a local Hugging Face directory; unset, the bundled MiniLM.
``FRACTAL_ENCODER_PRECISION`` (``fractal serve/worker --precision``) is their encoder precision (``auto``,
``float32``, ``bfloat16``, ``onnx-int8``, ...; ``fractal_core.embedding.encoder.EncoderConfig.precision``). A score job keeps
the encoder and precision its model was trained with.

``FRACTAL_TRUSTED_PROXY_HEADER`` (``fractal serve --trusted-proxy-header X-Forwarded-For``; unset by default)
names the request header in which a reverse proxy in front of the app passes the browser's address: only then is
that header believed (its last address, the one the proxy itself added), for the sign-in slowdown and the
``Secure`` flag of the session cookie. ``FRACTAL_ONE_TIME_PASSWORD_HOURS`` is how long an unused one-time
password works (default 24; read by :func:`db.accounts.one_time_password_ttl`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from db.engine import resolve_url

DEFAULT_PORT = 8501
"""Port ``fractal serve`` uses when none is given (Streamlit's own default)."""
LOOPBACK = "127.0.0.1"
"""Where ``fractal serve`` listens unless ``--host`` says otherwise."""
ENCODER_ENV = "FRACTAL_ENCODER"
"""The sentence encoder of new embed and train jobs (a name or a local directory; unset: the bundled one)."""
PRECISION_ENV = "FRACTAL_ENCODER_PRECISION"
"""The encoder precision of new embed and train jobs (unset: ``auto``)."""
AUTH_ENV = "FRACTAL_AUTH"
"""``off`` (set by ``fractal serve --no-auth``) runs the app as one local admin without sign-in; anything else,
or unset, requires signing in."""
TRUSTED_PROXY_ENV = "FRACTAL_TRUSTED_PROXY_HEADER"
"""The header a trusted reverse proxy puts the browser's address in (unset: no header is believed)."""
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def check_header_name(name: str) -> str:
    """``name`` if it is a plain HTTP header name (letters, digits, '-'); ValueError otherwise."""
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a header name (letters, digits and '-', e.g. X-Forwarded-For)")
    return name


def trusted_proxy_header() -> str | None:
    """The configured trusted proxy header (``FRACTAL_TRUSTED_PROXY_HEADER``), or None: nothing is trusted.

    A value that is not a header name is ignored (``fractal serve`` refuses it before anything starts)."""
    name = os.environ.get(TRUSTED_PROXY_ENV, "").strip()
    return name if name and _HEADER_NAME.match(name) else None


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (a host to listen on, or a client's address) is this machine only."""
    import ipaddress

    if address in ("localhost", "::1"):
        return True
    try:
        return ipaddress.ip_address(str(address)).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AppSettings:
    """Resolved locations for one process."""

    home: Path  # directory for the SQLite file, the local model cache and export files
    db_url: str  # SQLAlchemy URL of the store
    annotator: str  # the local user's name without sign-in (FRACTAL_ANNOTATOR, else the login name)
    ray_address: str | None = None  # embed/score jobs embed on this Ray cluster ("auto" or an address)
    auth: bool = True  # sign-in required (False only with FRACTAL_AUTH=off, i.e. `fractal serve --no-auth`)
    encoder: str | None = None  # FRACTAL_ENCODER: encoder name or local directory of new jobs (None: bundled)
    precision: str = "auto"  # FRACTAL_ENCODER_PRECISION: the encoder precision of new jobs
    trusted_proxy_header: str | None = None  # FRACTAL_TRUSTED_PROXY_HEADER (None: no proxy header believed)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"


def job_encoder(encoder: str | None = None, precision: str | None = None) -> tuple[str | None, str]:
    """The encoder and precision of new embed and train jobs: the given flags, else ``FRACTAL_ENCODER`` /
    ``FRACTAL_ENCODER_PRECISION`` (``None``: the bundled encoder; ``"auto"``: its default precision)."""
    encoder = encoder or os.environ.get(ENCODER_ENV, "").strip() or None
    return encoder, precision or os.environ.get(PRECISION_ENV, "").strip() or "auto"


def load_settings(db_url: str | None = None) -> AppSettings:
    """Settings from the environment; ``db_url`` (a CLI flag) wins over ``FRACTAL_DB_URL``.

    Nothing is created here except the home directory, so a read-only listing never writes elsewhere.
    """
    home = Path(os.environ.get("FRACTAL_HOME", ".fractal")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    # The store's own resolution (flag, else FRACTAL_DB_URL, else FRACTAL_HOME/fractal.db), so the app, the
    # worker and the `fractal ingest/export` commands open the same database.
    url = resolve_url(db_url)
    annotator = os.environ.get("FRACTAL_ANNOTATOR") or os.environ.get("USER") or "annotator"
    ray_address = os.environ.get("FRACTAL_RAY") or None
    auth = os.environ.get(AUTH_ENV, "on").strip().lower() != "off"
    encoder, precision = job_encoder()
    return AppSettings(
        home=home,
        db_url=url,
        annotator=annotator,
        ray_address=ray_address,
        auth=auth,
        encoder=encoder,
        precision=precision,
        trusted_proxy_header=trusted_proxy_header(),
    )
