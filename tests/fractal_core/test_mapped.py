"""fractal_core.embedding.mapped: rows written to a file, read through a mapping that keeps few pages resident."""

from __future__ import annotations

import functools
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fractal_core.embedding.mapped import MappedRows
from fractal_core.fitting.bags import BagSet

PER_BAG = 5


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Gathers on one torch thread: two wait on each other on a busy 2-core machine (seconds per pass)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _file_rss_kb() -> int:
    """This process's resident file-backed kB (Linux /proc/self/status): during a pass, only the matrix's
    mapping changes it."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@functools.cache
def _rows_data(n: int, d: int) -> np.ndarray:
    """Random float16 rows, drawn once per shape for the module (read-only: tests share them)."""
    data = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32).astype(np.float16)
    data.flags.writeable = False
    return data


def _filled(path: Path, n: int, d: int) -> tuple[MappedRows, np.ndarray]:
    data = _rows_data(n, d)
    rows = MappedRows.create(path, n, d)
    for lo in range(0, n, 7_000):  # uneven blocks, the last one partial
        rows.write(lo, data[lo : lo + 7_000])
    return rows, data


def _bags(rows: MappedRows, emb: torch.Tensor) -> BagSet:
    n = int(emb.shape[0])
    n_bags = n // PER_BAG
    return BagSet(
        sent_emb=emb,
        bag_index=torch.arange(n_bags).repeat_interleave(PER_BAG),
        ctx_emb=torch.zeros(n_bags, emb.shape[1], dtype=torch.float16),
        win_bag=torch.arange(n_bags),
        labels=torch.zeros(n_bags),
        gold=torch.full((n,), -1),
        sent_pages=rows,
    )


def test_rows_written_with_file_writes_read_back_through_the_mapping(tmp_path: Path) -> None:
    rows, data = _filled(tmp_path / "m.npy", 20_000, 16)
    emb = rows.open()
    assert emb.dtype == torch.float16 and emb.shape == (20_000, 16)
    assert torch.equal(emb, torch.tensor(data))  # a copy: the shared rows are read-only
    # The file is a plain .npy: anything that reads one reads the same rows.
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy", mmap_mode="r"), data)
    with pytest.raises(ValueError, match="do not fit"):
        rows.write(19_999, data[:2])
    with pytest.raises(ValueError, match="do not fit"):
        rows.write(0, data[:2, :8])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/self/status (Linux)")
@pytest.mark.parametrize("release", [True, False])
@pytest.mark.parametrize("order", ["chunks", "shuffled minibatches"])
def test_passes_over_the_rows_do_not_keep_the_file_resident(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release: bool, order: str
) -> None:
    """A whole pass, in chunks of bags (as scoring and validation read) or in shuffled minibatches (as training
    does), leaves no more than a gather's pages resident at any point between gathers; without the drops (the
    control) the whole file ends up resident, so the check can fail."""
    n, d, chunk_bags, batch_bags = 80_000, 384, 200, 64  # a 61 MB file; chunks of 1,000 rows
    rows, data = _filled(tmp_path / "m.npy", n, d)
    bags = _bags(rows, rows.open())
    if not release:
        monkeypatch.setattr(MappedRows, "release", lambda self: None)

    def one_pass() -> Iterator[BagSet]:
        if order == "chunks":
            yield from bags.chunks(chunk_bags)
        else:
            shuffled = torch.randperm(bags.n_bags, generator=torch.Generator().manual_seed(0))
            for lo in range(0, bags.n_bags, batch_bags):
                yield bags.select(shuffled[lo : lo + batch_bags])

    for _ in one_pass():  # a first pass maps in the library code it runs (file pages too)
        pass
    rows._map.madvise(mmap.MADV_DONTNEED)  # type: ignore[union-attr]  # the control's too
    before = _file_rss_kb()
    peak, seen = 0, 0
    for batch in one_pass():
        seen += batch.n_sentences
        peak = max(peak, _file_rss_kb() - before)
    assert seen == n
    file_kb = n * d * 2 // 1024
    if release:
        assert peak <= 4_096  # kB: what the kernel maps around a fault (large folios) + the code run
    else:
        assert peak >= 0.9 * file_kb


def test_every_gather_of_rows_drops_the_pages_it_mapped(tmp_path: Path) -> None:
    rows, data = _filled(tmp_path / "m.npy", 10_000, 8)
    bags = _bags(rows, rows.open())
    part = bags.bag_range(100, 600)  # a view: its gathers go through the same mapping
    assert part.sent_pages is rows
    batch = part.select(torch.tensor([0, 7, 499]))
    assert rows.releases == 1
    want = np.concatenate([data[(100 + b) * PER_BAG : (101 + b) * PER_BAG] for b in (0, 7, 499)])
    assert torch.equal(batch.sent_emb, torch.from_numpy(want).float())
    assert batch.sent_pages is None  # a float32 minibatch in memory: it no longer reads the mapping
    bags.with_cosine_target()  # in chunks of pairs: one drop per chunk
    assert rows.releases == 2
    bags.with_correlation_pairs()
    assert rows.releases == 3
