"""How a fitted model is written and read back: one JSON description and torch state dicts in a directory,
each written atomically, the format version checked on load. ``FractalModel`` and the fine-tuned scorer both
store themselves through these."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from fractal_core.data.files import atomic_write, atomic_write_text, check_output_dir


def save_model_dir(
    directory: str | Path,
    *,
    meta_file: str,
    meta: Mapping[str, Any],
    states: Mapping[str, Mapping[str, torch.Tensor]],
    files: tuple[str, ...],
) -> Path:
    """Write ``states`` ({file name: state dict}) and then ``meta`` as JSON into ``directory``, each atomically
    (so a reader never sees a description without its weights). ``files``: every entry the directory will
    hold; InputError when the directory or one of them exists as something else."""
    directory = check_output_dir(directory, files)
    directory.mkdir(parents=True, exist_ok=True)
    for name, state in states.items():
        atomic_write(directory / name, _state_writer(state))
    atomic_write_text(directory / meta_file, json.dumps(dict(meta), indent=2, default=float))
    return directory


def _state_writer(state: Mapping[str, torch.Tensor]) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        torch.save(dict(state), tmp)

    return write


def load_meta(directory: str | Path, meta_file: str, *, format_version: int) -> dict[str, Any]:
    """The JSON description in ``directory``; ValueError for a file written by a newer format."""
    directory = Path(directory)
    meta: dict[str, Any] = json.loads((directory / meta_file).read_text(encoding="utf-8"))
    if meta.get("format_version", 0) > format_version:
        raise ValueError(f"{directory}: model format {meta['format_version']} is newer than this library")
    return meta


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict saved by :func:`save_model_dir`, on the CPU (tensors only: nothing is executed)."""
    state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state


__all__ = ["load_meta", "load_state", "save_model_dir"]
