"""On-disk embedding cache keyed by (encoder id, sha256 of the text), values stored as float16.

Storage choice: one SQLite file (``embeddings.sqlite``) in WAL mode.

- Why SQLite: two processes (the app's worker and a CLI run) can read and write it at the same time; WAL lets
  readers proceed while one writer commits, ``busy_timeout`` makes a second writer wait instead of failing, and
  every bulk ``put`` is one transaction, so a crash never leaves a half-written vector. Append-only shards with
  atomic renames would need their own compaction and index; SQLite already is both.
- Compactness: a ``WITHOUT ROWID`` table clustered on (encoder number, 32-byte digest) holding the raw float16
  bytes (768 bytes for a 384-d vector), and encoder ids stored once in a side table.
- Speed: lookups go in chunks of up to 500 keys per ``IN (...)`` query and inserts through ``executemany`` in one
  transaction; 30k vectors take well under a second either way (see BENCHMARKS.md, ``## Encoding``).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_CHUNK = 500  # below SQLite's default limit of 999 bound parameters per statement
_SCHEMA = """
CREATE TABLE IF NOT EXISTS encoders (num INTEGER PRIMARY KEY, encoder_id TEXT UNIQUE NOT NULL, dim INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    enc INTEGER NOT NULL, digest BLOB NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (enc, digest)
) WITHOUT ROWID;
"""


def text_digest(text: str) -> bytes:
    """The 32-byte SHA-256 of the UTF-8 text: the cache key (with the encoder id)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """Float16 embeddings on disk, shared safely between threads and processes.

    Args:
        path: the SQLite file (created with its parent directory when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection guarded by a lock: callers may encode from worker threads (the app's job runner).
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable across application crashes
        self._conn.executescript(_SCHEMA)
        self._encoders: dict[str, tuple[int, int]] = {}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get(self, encoder_id: str, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Look texts up.

        Returns:
            ``(found, vectors)``: a bool mask ``(n,)`` and float32 vectors ``(n_found, dim)`` for the found texts,
            in input order.
        """
        digests = [text_digest(t) for t in texts]
        return self.get_digests(encoder_id, digests)

    def get_digests(self, encoder_id: str, digests: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Same as :meth:`get` with precomputed :func:`text_digest` keys."""
        found = np.zeros(len(digests), dtype=bool)
        with self._lock:
            enc = self._encoder_num(encoder_id, create=False)
            if enc is None:
                return found, np.zeros((0, 0), dtype=np.float32)
            num, dim = enc
            hits: dict[bytes, bytes] = {}
            unique = list(dict.fromkeys(digests))
            for i in range(0, len(unique), _CHUNK):
                chunk = unique[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT digest, vec FROM embeddings WHERE enc = ? AND digest IN ({marks})", (num, *chunk)
                )
                hits.update(rows)
        blobs = []
        for i, digest in enumerate(digests):
            blob = hits.get(digest)
            if blob is not None:
                found[i] = True
                blobs.append(blob)
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), dim)
        return found, vectors.astype(np.float32)

    def put(self, encoder_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors`` ``(n, dim)`` for ``texts`` (as float16); existing entries are kept."""
        self.put_digests(encoder_id, [text_digest(t) for t in texts], vectors)

    def put_digests(self, encoder_id: str, digests: Sequence[bytes], vectors: np.ndarray) -> None:
        """Same as :meth:`put` with precomputed :func:`text_digest` keys."""
        if len(digests) != len(vectors):
            raise ValueError(f"{len(digests)} keys for {len(vectors)} vectors")
        if not len(digests):
            return
        half = np.ascontiguousarray(vectors, dtype=np.float16)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                num, dim = self._encoder_num(encoder_id, create=True, dim=half.shape[1])  # type: ignore[misc]
                if dim != half.shape[1]:
                    raise ValueError(f"encoder {encoder_id} has dim {dim} in the cache, got {half.shape[1]}")
                self._conn.executemany(
                    "INSERT OR IGNORE INTO embeddings (enc, digest, vec) VALUES (?, ?, ?)",
                    ((num, d, row.tobytes()) for d, row in zip(digests, half, strict=True)),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                self._encoders.pop(encoder_id, None)  # its row may have been rolled back too
                raise

    def import_pack(self, path: str | Path, encoder_id: str) -> int:
        """Copy the vectors of a pack file written by :func:`write_pack` into the cache, when the pack was made by
        ``encoder_id``; returns how many vectors it held (0 for another encoder: those texts get embedded)."""
        with np.load(path, allow_pickle=False) as pack:
            if str(pack["encoder_id"]) != encoder_id:
                return 0
            digests = [bytes(row) for row in pack["digests"]]  # (n, 32) uint8 -> keys
            vectors = pack["vectors"]  # (n, dim) float16
        self.put_digests(encoder_id, digests, vectors)
        return len(digests)

    def count(self, encoder_id: str | None = None) -> int:
        """Number of stored vectors (for one encoder, or all)."""
        with self._lock:
            if encoder_id is None:
                return int(self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            enc = self._encoder_num(encoder_id, create=False)
            if enc is None:
                return 0
            query = "SELECT COUNT(*) FROM embeddings WHERE enc = ?"
            return int(self._conn.execute(query, (enc[0],)).fetchone()[0])

    def _encoder_num(self, encoder_id: str, *, create: bool, dim: int = 0) -> tuple[int, int] | None:
        if encoder_id in self._encoders:
            return self._encoders[encoder_id]
        row = self._conn.execute(
            "SELECT num, dim FROM encoders WHERE encoder_id = ?", (encoder_id,)
        ).fetchone()
        if row is None:
            if not create:
                return None
            self._conn.execute(
                "INSERT OR IGNORE INTO encoders (encoder_id, dim) VALUES (?, ?)", (encoder_id, dim)
            )
            row = self._conn.execute(
                "SELECT num, dim FROM encoders WHERE encoder_id = ?", (encoder_id,)
            ).fetchone()
        self._encoders[encoder_id] = (int(row[0]), int(row[1]))
        return self._encoders[encoder_id]


def write_pack(path: str | Path, encoder_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
    """Write ``vectors`` ``(n, dim)`` for ``texts`` as a portable pack (``.npz``: encoder id, 32-byte digests,
    float16 vectors) that :meth:`EmbeddingCache.import_pack` loads; used to ship precomputed embeddings."""
    if len(texts) != len(vectors):
        raise ValueError(f"{len(texts)} texts for {len(vectors)} vectors")
    digests = np.frombuffer(b"".join(text_digest(t) for t in texts), dtype=np.uint8).reshape(len(texts), 32)
    with open(path, "wb") as handle:
        np.savez_compressed(
            handle, encoder_id=np.array(encoder_id), digests=digests, vectors=vectors.astype(np.float16)
        )
