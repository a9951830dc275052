"""Model artifacts kept in the store, keyed by the store's identity and the model version's id.

A trained model's files (whatever :meth:`fractal_core.FractalModel.save` writes) go into ``model_files`` in the
same database as its scores, so every worker of a shared store (several machines on one PostgreSQL) loads
the same model, and two stores that share a ``FRACTAL_HOME`` never overwrite each other's models. A version's
``artifact_path`` is the URI ``store:<store id>/model-version/<id>``; workers unpack it into a local cache
``<cache root>/<store id>/<model version id>/`` (verified against the stored sha256 each time) and refuse a URI
or a cache directory that names another store. Versions trained before this existed keep a local directory
path, which is still read.

:func:`purge_failed` is what a worker runs when it starts: the scores and files of failed versions and local
cache directories of this store that no ready version owns are removed (a killed job leaves them behind).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from sqlalchemy import CursorResult, Engine, Select, delete, insert, select
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import ModelFile, ModelVersion, ResponseScore, SentenceScore, StoreInfo
from db.rows import ModelVersionRow
from fractal_core.data.files import atomic_write_bytes, atomic_write_text

URI_PREFIX = "store:"
MARKER = "store.json"  # in each cache directory: which store and version it holds


class ForeignModelError(ValueError):
    """A model that belongs to another store (its URI or its cache directory names another store id)."""


def store_id(engine: Engine) -> str:
    """The store's identity (a UUID written when its schema was created)."""
    found = run_read(engine, lambda s: s.scalar(select(StoreInfo.value).where(StoreInfo.key == "store_id")))
    if not found:
        raise RuntimeError("the store has no store_id; run `fractal db upgrade`")
    return str(found)


def artifact_uri(engine: Engine, model_version_id: int) -> str:
    return f"{URI_PREFIX}{store_id(engine)}/model-version/{model_version_id}"


def save_model_files(engine: Engine, model_version_id: int, directory: Path) -> str:
    """Store every regular file of ``directory`` as the files of ``model_version_id``; returns its URI."""
    rows = []
    for path in sorted(p for p in Path(directory).iterdir() if p.is_file()):
        data = path.read_bytes()
        rows.append(
            {
                "model_version_id": model_version_id,
                "name": path.name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "data": data,
            }
        )

    def work(session: Session) -> None:
        session.execute(delete(ModelFile).where(ModelFile.model_version_id == model_version_id))
        if rows:
            session.execute(insert(ModelFile), rows)

    run_write(engine, work)
    return artifact_uri(engine, model_version_id)


def _parse_uri(uri: str) -> tuple[str, int]:
    body = uri[len(URI_PREFIX) :]
    owner, _, rest = body.partition("/model-version/")
    if not owner or not rest.isdigit():
        raise ValueError(f"not a model artifact URI: {uri!r}")
    return owner, int(rest)


def model_dir(engine: Engine, version: ModelVersionRow, cache_root: Path) -> Path:
    """A local directory holding ``version``'s model files, ready for ``FractalModel.load``.

    Raises :class:`ForeignModelError` when the version's URI or its cache directory belongs to another store,
    and ValueError when the version has no artifact at all.
    """
    path = version.artifact_path
    if not path:
        raise ValueError(f"model version {version.version} has no saved model")
    if not path.startswith(URI_PREFIX):  # trained before models were kept in the store
        return Path(path)
    owner, model_version_id = _parse_uri(path)
    here = store_id(engine)
    if owner != here or model_version_id != version.id:
        raise ForeignModelError(
            f"model version {version.version} points at {path}, which belongs to another store (this store is "
            f"{here}); retrain it here"
        )
    files = run_read(
        engine,
        lambda s: [
            (f.name, f.sha256)
            for f in s.scalars(select(ModelFile).where(ModelFile.model_version_id == version.id))
        ],
    )
    if not files:
        raise ValueError(f"model version {version.version}: its files are not in the store")
    target = Path(cache_root) / here / str(version.id)
    marker = target / MARKER
    if marker.is_file():
        mark = json.loads(marker.read_text())
        if (mark.get("store_id"), mark.get("model_version_id")) != (here, version.id):
            raise ForeignModelError(f"{target} holds model version {mark} of another store")
    target.mkdir(parents=True, exist_ok=True)  # our cache folder: atomic writes never make folders
    for name, sha in files:
        local = target / name
        if local.is_file() and hashlib.sha256(local.read_bytes()).hexdigest() == sha:
            continue
        query = select(ModelFile.data).where(ModelFile.model_version_id == version.id, ModelFile.name == name)
        atomic_write_bytes(local, bytes(_read_blob(engine, query)))
    atomic_write_text(marker, json.dumps({"store_id": here, "model_version_id": version.id}) + "\n")
    return target


def _read_blob(engine: Engine, query: Select[bytes]) -> bytes:
    def work(session: Session) -> bytes:
        data = session.scalar(query)
        if data is None:
            raise ValueError("a model file vanished from the store while it was being read")
        return data

    return run_read(engine, work)


def purge_failed(engine: Engine, cache_root: Path) -> dict[str, int]:
    """Remove what failed (or killed) training runs left: scores and stored files of failed versions, their
    legacy artifact directories under ``cache_root``, and this store's cache directories no ready version owns.
    Returns counts of what was removed."""

    def work(session: Session) -> tuple[int, int, int, list[str]]:
        failed = select(ModelVersion.id).where(ModelVersion.status == "failed")

        def removed(table: type[SentenceScore] | type[ResponseScore] | type[ModelFile]) -> int:
            result = session.execute(delete(table).where(table.model_version_id.in_(failed)))
            return int(result.rowcount) if isinstance(result, CursorResult) else 0

        n_sentence, n_response, n_files = removed(SentenceScore), removed(ResponseScore), removed(ModelFile)
        legacy = [
            p
            for p in session.scalars(
                select(ModelVersion.artifact_path).where(
                    ModelVersion.status == "failed", ModelVersion.artifact_path.is_not(None)
                )
            )
            if p and not p.startswith(URI_PREFIX)
        ]
        return n_sentence, n_response, n_files, legacy

    n_sentence, n_response, n_files, legacy = run_write(engine, work)
    root = Path(cache_root).resolve()
    removed_dirs = 0
    for path in legacy:
        candidate = Path(path).resolve()
        if candidate.is_dir() and root in candidate.parents:
            shutil.rmtree(candidate, ignore_errors=True)
            removed_dirs += 1
    here = store_id(engine)
    ours = root / here
    if ours.is_dir():
        live = set(
            run_read(
                engine,
                lambda s: [
                    str(i) for i in s.scalars(select(ModelVersion.id).where(ModelVersion.status != "failed"))
                ],
            )
        )
        for child in ours.iterdir():
            if child.is_dir() and child.name not in live:
                shutil.rmtree(child, ignore_errors=True)
                removed_dirs += 1
    return {
        "sentence_scores": n_sentence,
        "response_scores": n_response,
        "model_files": n_files,
        "directories": removed_dirs,
    }
