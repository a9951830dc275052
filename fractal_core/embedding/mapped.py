"""A float16 row matrix in a file, read through one shared memory mapping that keeps few pages resident.

The pages of a file mapping that a process has read stay mapped into it until the kernel needs the memory
back, and they count in its resident size and its peak (``VmRSS`` / ``VmHWM``): a training job's passes over
a 1M x 384 float16 matrix left ~0.8 GB of it resident. Worse, a read fault maps far more than the row it
needs (the kernel maps the file pages around it, whole large folios of the page cache: ~1 MB per randomly
read bag measured on Linux 6.18), so a few minibatches of randomly drawn bags already map most of the file.

Here the rows are written with plain file writes (they go to the page cache, never into the process), and
every gather of rows through the mapping is followed by a drop of its pages from the process
(``madvise(MADV_DONTNEED)``, :meth:`MappedRows.release`): at most one gather's pages are resident at a time.
The next gather maps them again from the page cache (minor faults, no disk read while the cache holds them).
The mapping is shared, so dropping loses nothing: the rows stay in the file.

    rows = MappedRows.create(path, n, d)
    rows.write(0, vectors)        # (k, d) at row 0, any float dtype (stored as float16)
    emb = rows.open()             # (n, d) float16 tensor over the mapping: nothing read yet
    batch = emb[index].float()    # a gather (``BagSet`` does these) ...
    rows.release()                # ... then its pages leave this process
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import torch


class MappedRows:
    """(n, d) float16 rows in a ``.npy`` file, read through a shared mapping of it (see the module doc)."""

    def __init__(self, path: Path, n: int, d: int, offset: int) -> None:
        self.path = path
        self.shape = (n, d)
        self.offset = offset  # bytes of the .npy header before row 0
        self.releases = 0  # drops so far (what a test can watch)
        self._map: mmap.mmap | None = None

    @classmethod
    def create(cls, path: str | Path, n: int, d: int) -> MappedRows:
        """A new file of ``n`` x ``d`` float16 zeros (a sparse file: no disk written until rows are)."""
        path = Path(path)
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
        offset = int(header.offset)
        del header  # its mapping was never read or written: nothing resident
        return cls(path, n, d, offset)

    @property
    def row_bytes(self) -> int:
        return self.shape[1] * 2

    def write(self, lo: int, rows: np.ndarray) -> None:
        """Store ``rows`` (k, d) as rows ``lo..lo+k-1`` with a file write (not through the mapping)."""
        block = np.ascontiguousarray(rows, dtype=np.float16)
        if block.ndim != 2 or block.shape[1] != self.shape[1] or not 0 <= lo <= self.shape[0] - len(block):
            raise ValueError(f"rows {block.shape} at {lo} do not fit a {self.shape} matrix")
        data, at = block.data.cast("B"), self.offset + lo * self.row_bytes
        fd = os.open(self.path, os.O_WRONLY)
        try:
            while data:  # a write may take fewer bytes than given (e.g. Linux's 2 GiB cap per call)
                done = os.pwrite(fd, data, at)
                data, at = data[done:], at + done
        finally:
            os.close(fd)

    def open(self) -> torch.Tensor:
        """The rows as an (n, d) float16 tensor over a shared mapping of the file (nothing is read here)."""
        with self.path.open("r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
        n, d = self.shape
        array = np.ndarray((n, d), dtype=np.float16, buffer=self._map, offset=self.offset)
        return torch.from_numpy(array)

    def release(self) -> None:
        """Drop the mapping's resident pages from this process (they stay in the file and the page cache)."""
        self.releases += 1
        dontneed = getattr(mmap, "MADV_DONTNEED", None)  # madvise: Unix, Python 3.8+
        if self._map is not None and dontneed is not None:
            self._map.madvise(dontneed)


__all__ = ["MappedRows"]
