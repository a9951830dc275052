"""``python -m fractal_core.data.demo``: rebuild the demo's precomputed embeddings with the default encoder."""

from __future__ import annotations

from pathlib import Path

from fractal_core.data.demo import demo_embeddings_path, demo_texts


def build_demo_pack(path: Path | None = None) -> Path:
    """Embed :func:`demo_texts` with the default encoder (no cache) and write the pack."""
    from fractal_core.embedding.cache import write_pack
    from fractal_core.embedding.encoder import Encoder, EncoderConfig

    encoder = Encoder(EncoderConfig(cache_dir=""))
    texts = demo_texts()
    path = path or demo_embeddings_path()
    write_pack(path, encoder.encoder_id, texts, encoder.encode(texts))
    return path


if __name__ == "__main__":
    print(f"wrote {build_demo_pack()}")
