"""fractal_core.fitting.bags: whole-set passes in chunks of bags."""

from __future__ import annotations

import torch

from fractal_core.fitting.bags import BagSet


def test_per_sentence_writes_each_chunks_rows_where_the_concatenation_puts_them() -> None:
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 6, (1_000,), generator=g)
    n = int(sizes.sum())
    bags = BagSet(
        sent_emb=torch.randn(n, 8, generator=g).half(),
        bag_index=torch.repeat_interleave(torch.arange(1_000), sizes),
        ctx_emb=torch.randn(1_000, 8, generator=g).half(),
        win_bag=torch.arange(1_000),
        labels=torch.zeros(1_000),
        gold=torch.full((n,), -1),
    )

    def fn(chunk: BagSet) -> torch.Tensor:  # (n, 2): depends on the sentence and its bag's window
        return torch.stack([chunk.sent_emb.sum(1), chunk.ctx_emb[chunk.bag_index].sum(1)], 1)

    out = bags.per_sentence(fn, n_bags=128)  # 8 chunks, the last one partial
    assert out.shape == (n, 2) and out.dtype == torch.float32
    assert torch.equal(out, torch.cat([fn(c) for c in bags.chunks(128)]))
    assert torch.equal(out, fn(bags.select(torch.arange(1_000))))
