"""Files on disk: which format a file name means, and the one way every output file is written.

Formats: :data:`SUFFIX_FORMATS` maps a suffix to ``jsonl`` / ``csv`` / ``parquet`` (``.json`` and ``.ndjson``
are read as JSON Lines, ``.pq`` as Parquet); :func:`format_of` applies it. Every reader, ingest and upload
decides the format here, so they cannot disagree.

Output: :func:`atomic_write` writes to a temporary file next to the target and renames it over the target
only when the target is a regular file or does not exist yet, in a folder that exists (a missing folder is
refused, never created: callers that own a folder, such as a cache, make it first). Directories, devices, FIFOs, sockets and
anything else are refused with an :class:`~fractal_core.errors.InputError` before anything is written (so
commands exit with code 2), as is a target whose directory cannot hold a new file (``/proc``, read-only, ...).
A new file gets the mode the umask allows (``0666 & ~umask``, like ``open()``), a replaced one keeps its mode.
:func:`check_output_file` and :func:`check_output_dir` make the same checks up front, so a command can refuse
its output path before hours of work.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from fractal_core.errors import InputError

FileFormat = Literal["jsonl", "csv", "parquet"]
FILE_FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")

SUFFIX_FORMATS: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
FORMAT_SUFFIXES: dict[str, str] = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}
"""The canonical suffix of each format (for files we name ourselves)."""


def format_of(path: str | Path) -> FileFormat | None:
    """The format a file name's suffix means (case-insensitive), or None for an unknown suffix."""
    return SUFFIX_FORMATS.get(Path(path).suffix.lower())


def require_format(path: str | Path, format: str | None = None) -> FileFormat:
    """``format`` when given (checked), else the format of ``path``'s suffix; InputError otherwise."""
    if format is not None:
        if format not in FILE_FORMATS:
            raise InputError(f"unknown format {format!r}; use jsonl, csv or parquet", field="format")
        return format  # type: ignore[return-value]
    found = format_of(path)
    if found is None:
        raise InputError(
            f"cannot tell the format from the suffix {Path(path).suffix!r}; use .jsonl, .csv or .parquet "
            "(or pass the format explicitly)",
            file=str(path),
        )
    return found


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (changing it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_file(path: str | Path) -> Path:
    """Refuse (InputError naming the path) an output path that is not a regular file or a new name in an
    existing folder we can write to. Symlinks are followed: a link to a regular file is replaced."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise InputError(f"cannot write here: {err.strerror or err}", file=str(path)) from err
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InputError(f"{_kind(st.st_mode)}, not a file that can be replaced", file=str(path))
    parent = path.parent
    # A missing folder is refused, never made: a typo in a path must not leave new folders behind.
    if not parent.exists():
        raise InputError(f"the folder {parent} does not exist (create it first)", file=str(path))
    if not parent.is_dir():
        raise InputError(f"{parent} is not a directory", file=str(path))
    # Try it: permission bits say nothing for root, nor for /proc, read-only mounts or full quotas.
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as err:
        raise InputError(f"cannot create a file in {parent}: {err.strerror or err}", file=str(path)) from err
    os.close(fd)
    os.unlink(probe)
    return path


def check_output_dir(path: str | Path, entries: Iterable[str] = ()) -> Path:
    """Refuse an output directory that exists as something else, is new in a folder that does not exist, or
    whose ``entries`` (files it will hold) exist as something other than regular files. The directory itself
    may be new (its writer makes it)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("exists and is not a directory", file=str(path))
    if not path.exists():
        check_output_file(path)  # a new name in a writable, existing folder
        return path
    for entry in entries:
        check_output_file(path / entry)
    return path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file next to ``path``, then rename it onto ``path``.

    Raises InputError (and writes nothing) when ``path`` is not a regular file or a new name; on any error,
    including one raised by ``write``, the temporary file is removed and the old file is left untouched.
    """
    path = check_output_file(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise InputError(f"cannot write here: {err.strerror or err}", file=str(path)) from err
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        check_output_file(path)  # it may have changed while we wrote
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text (newlines written as given)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> Path:
    """:func:`atomic_write` of an iterable of text lines (each without its newline), streamed."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="\n") as handle:
            for line in lines:
                handle.write(line)
                handle.write("\n")

    return atomic_write(path, write)
