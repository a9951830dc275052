"""The model ``fractal serve-scores`` serves: a saved directory or a store's active version, loaded at start.

Its ``info`` (id: a digest of its files; version and dataset from a store; method, aggregation, encoder and
segment mode) goes into every answer of the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fractal_core.fitting.estimator import FractalModel


class ServeError(ValueError):
    """A model or option that cannot be served: the command prints it on one line and exits 2."""


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and what every answer says about it (``info``: id, version, dataset, method, ...)."""

    model: FractalModel
    segment_mode: str
    info: dict[str, Any]


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
