"""Bundled demo data: 200 ProcessBench math solutions (Apache-2.0), see README.md next to this file.

The demo's sentence and context-window embeddings ship precomputed beside it (``processbench_demo.emb.npz``,
keyed like the embedding cache: encoder id + text digest), so a first run trains at once instead of embedding
for a minute. A changed encoder has another id: the pack is then ignored and the texts are embedded as usual.
Rebuild it after changing the demo data or the default encoder with ``python -m fractal_core.data.demo``.
The int8 encoder calibrates on :func:`demo_texts` too (shipped, so its graph is the same everywhere).
"""

from __future__ import annotations

from pathlib import Path

_DEMO_FILE = "processbench_demo.jsonl"
_DEMO_PACK = "processbench_demo.emb.npz"


def demo_path() -> Path:
    """Path of the bundled demo JSONL (shared schema: steps, step labels, response label, ``max``)."""
    return Path(__file__).resolve().parent / _DEMO_FILE


def demo_embeddings_path() -> Path:
    """Path of the demo's precomputed embeddings (see :func:`fractal_core.embedding.cache.write_pack`)."""
    return Path(__file__).resolve().parent / _DEMO_PACK


def demo_texts() -> list[str]:
    """Every text an embed or training job embeds for the demo: its sentences, then its context windows."""
    from fractal_core.data.io import read_records
    from fractal_core.data.windows import context_windows

    records = read_records(demo_path())
    windows, _ = context_windows([r.context for r in records])
    return list(dict.fromkeys([s.text for r in records for s in r.spans] + windows))
