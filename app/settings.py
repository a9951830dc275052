"""Where the app keeps its state, read from the environment so the UI, the worker and the CLI agree.

``FRACTAL_HOME`` (default ``./.fractal``) holds the SQLite file and model artifacts; ``FRACTAL_DB_URL``
overrides the database (any SQLAlchemy URL). ``fractal serve --db URL`` sets the variable for the processes it
starts, which is how the Streamlit process and the worker share one store. ``FRACTAL_ENCODER`` (set by
``fractal serve --encoder`` / ``fractal worker --encoder``) names the sentence encoder new embed and train jobs use:
an encoder name (``fractal_core.embedding.encoder.ENCODERS``) or a local Hugging Face directory; unset, the bundled MiniLM.
``FRACTAL_ENCODER_PRECISION`` (``fractal serve/worker --precision``) is their encoder precision (``auto``,
``float32``, ``bfloat16``, ``onnx-int8``, ...; ``fractal_core.embedding.encoder.EncoderConfig.precision``). A score job keeps
the encoder and precision its model was trained with.
"""

from __future__ import annotations

import os
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
    )
