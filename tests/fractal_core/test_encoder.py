"""Encoder and embedding cache, with the real bundled all-MiniLM-L6-v2 (offline)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from fractal_core.embedding.cache import EmbeddingCache, text_digest  # noqa: E402
from fractal_core.embedding.encoder import (  # noqa: E402
    Encoder,
    EncoderConfig,
    compute_encoder_id,
    encoder_id_for,
    get_encoder,
    resolve_model_path,
)
from tests.fractal_core.encoder_texts import TEXTS  # noqa: E402


def test_shapes_norms_and_dtype(encoder: Encoder) -> None:
    emb = encoder.encode(TEXTS)
    assert emb.shape == (len(TEXTS), encoder.dim) == (len(TEXTS), 384)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=2e-3)
    assert np.array_equal(emb, emb.astype(np.float16).astype(np.float32))  # float16-exact by design
    assert encoder.encode([]).shape == (0, 384)
    assert encoder.device.type == "cpu"


@pytest.mark.slow
def test_matches_sentence_transformers(reference_vectors: np.ndarray) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(resolve_model_path(None)), device="cpu").encode(TEXTS)
    ours = reference_vectors  # the float32 encoder's
    assert (ours * reference).sum(1).min() > 0.9999
    auto = Encoder(EncoderConfig(cache_dir=""))  # bf16 autocast where the CPU has it
    assert (auto.encode(TEXTS) * reference).sum(1).min() > 0.999


@pytest.mark.slow
def test_batching_and_padding_do_not_change_results(encoder: Encoder, reference_vectors: np.ndarray) -> None:
    tiny = Encoder(EncoderConfig(cache_dir="", precision="float32", batch_tokens=64))
    a = reference_vectors  # encoder.encode(TEXTS)
    b = tiny.encode(TEXTS)
    assert (a * b).sum(1).min() > 0.9999
    # Order of the input does not matter either.
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    c = encoder.encode([TEXTS[i] for i in perm])
    assert (a[perm] * c).sum(1).min() > 0.9999


def test_duplicates_encoded_once_and_cache_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = Encoder(EncoderConfig(cache_dir=str(tmp_path)))
    calls: list[int] = []
    real_embed = enc._embed

    def counting(texts: list[str], on_done):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return real_embed(texts, on_done)

    monkeypatch.setattr(enc, "_embed", counting)
    texts = ["alpha", "beta", "alpha", "gamma", "beta"]
    first = enc.encode(texts)
    assert calls == [3]
    assert np.array_equal(first[0], first[2]) and np.array_equal(first[1], first[4])
    second = enc.encode(texts + ["delta"])
    assert calls == [3, 1]
    assert np.array_equal(second[:5], first)  # cached copy is bit-identical to the fresh result
    assert enc.cache is not None and enc.cache.count(enc.encoder_id) == 4
    # A new process-level encoder on the same directory reads the same cache.
    other = Encoder(EncoderConfig(cache_dir=str(tmp_path)))
    assert np.array_equal(other.encode(["gamma"])[0], first[3])
    assert (tmp_path / "embeddings.sqlite").is_file()


def test_progress_callback(encoder: Encoder) -> None:
    seen: list[tuple[int, int]] = []
    encoder.encode(["x", "y", "x", "z"], progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))


def test_encode_windows(encoder: Encoder) -> None:
    words = [f"w{i}" for i in range(500)]
    texts = [" ".join(words), "", "short context"]
    emb, owner = encoder.encode_windows(texts, max_words=200, stride_words=150)
    assert owner.dtype == np.int64 and owner.tolist() == [0, 0, 0, 1, 2]
    expected = [
        " ".join(words[0:200]),
        " ".join(words[150:350]),
        " ".join(words[300:500]),
        "",
        "short context",
    ]
    assert np.array_equal(emb, encoder.encode(expected))
    _, owner = encoder.encode_windows([" ".join(words[:200])], max_words=200, stride_words=150)
    assert owner.tolist() == [0]
    with pytest.raises(ValueError):
        encoder.encode_windows(["x"], max_words=10, stride_words=20)


def test_encoder_id_is_stable_and_path_independent(tmp_path: Path, encoder: Encoder) -> None:
    assert encoder_id_for(encoder.config) == encoder.encoder_id
    source = resolve_model_path(None)
    copy = tmp_path / "elsewhere" / source.name
    copy.mkdir(parents=True)
    for item in source.iterdir():
        (copy / item.name).symlink_to(item)
    assert compute_encoder_id(copy, max_length=256) == encoder.encoder_id
    assert encoder.encoder_id.startswith(f"{source.name}-")
    assert compute_encoder_id(source, max_length=128) != encoder.encoder_id
    local = Encoder(EncoderConfig(model_path=str(copy), cache_dir=""))
    assert local.encoder_id == encoder.encoder_id


def test_bad_model_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        Encoder(EncoderConfig(model_path=str(tmp_path), cache_dir=""))


def test_get_encoder_memoises_per_config() -> None:
    config = EncoderConfig(cache_dir="", precision="float32")
    assert get_encoder(config) is get_encoder(EncoderConfig(cache_dir="", precision="float32"))
    assert get_encoder(config) is not get_encoder(
        EncoderConfig(cache_dir="", precision="float32", max_length=128)
    )


# --- cache alone (no model) --------------------------------------------------------------------------------


def test_cache_round_trip_and_misses(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    vectors = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    cache.put("enc-a", ["a", "b", "c"], vectors)
    found, got = cache.get("enc-a", ["c", "missing", "a", "c"])
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(got, vectors[[2, 0, 2]].astype(np.float16).astype(np.float32))
    found, _ = cache.get("enc-b", ["a"])
    assert not found.any()
    with pytest.raises(ValueError, match="dim"):
        cache.put("enc-a", ["d"], np.zeros((1, 4), dtype=np.float32))
    assert cache.count("enc-a") == 3 and cache.count() == 3
    assert len(text_digest("a")) == 32


def _writer(path: str, start: int) -> None:
    cache = EmbeddingCache(path)
    for k in range(10):
        keys = [f"t{start + k * 50 + i}" for i in range(50)]
        cache.put("enc", keys, np.full((50, 4), start + k, dtype=np.float32))


@pytest.mark.slow
def test_cache_is_safe_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    EmbeddingCache(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, start)) for start in (0, 250)]  # overlapping key ranges
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    found, _ = EmbeddingCache(path).get("enc", [f"t{i}" for i in range(750)])
    assert found.all()


def test_pack_round_trip_only_for_its_encoder(tmp_path: Path) -> None:
    from fractal_core.embedding.cache import write_pack

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 8)).astype(np.float16).astype(np.float32)
    write_pack(tmp_path / "p.npz", "enc-a", ["x", "y", "z"], vectors)
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    assert cache.import_pack(tmp_path / "p.npz", "enc-b") == 0
    assert cache.count() == 0
    assert cache.import_pack(tmp_path / "p.npz", "enc-a") == 3
    found, got = cache.get("enc-a", ["z", "x", "w"])
    assert found.tolist() == [True, True, False]
    assert np.array_equal(got, vectors[[2, 0]])
    with pytest.raises(ValueError, match="2 texts for 3 vectors"):
        write_pack(tmp_path / "q.npz", "enc-a", ["x", "y"], vectors)


def test_bundled_demo_pack_covers_the_demo_with_the_default_encoder() -> None:
    from fractal_core.data.demo import demo_embeddings_path, demo_texts

    with np.load(demo_embeddings_path()) as pack:
        assert str(pack["encoder_id"]) == encoder_id_for(EncoderConfig()), (
            "rebuild: python -m fractal_core.data.demo"
        )
        digests = {bytes(d) for d in pack["digests"]}
        assert pack["vectors"].dtype == np.float16
    assert {text_digest(t) for t in demo_texts()} == digests


def _split_archive(tmp_path: Path, folder: str, files: dict[str, bytes], n_parts: int) -> list[Path]:
    """A zip of ``folder/<files>`` cut into ``n_parts`` byte ranges, like the wheels that ship a model in pieces."""
    import zipfile

    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"{folder}/{name}", data)
    blob = whole.read_bytes()
    step = -(-len(blob) // n_parts)
    parts = []
    for i in range(n_parts):
        part = tmp_path / f"{folder}.zip.{i + 1:03d}"
        part.write_bytes(blob[i * step : (i + 1) * step])
        parts.append(part)
    return parts


def test_split_archive_is_joined_checked_and_extracted_once(tmp_path: Path) -> None:
    from fractal_core.embedding.encoder import assemble_split_zip

    files = {"config.json": b'{"hidden_size": 8}', "vocab.txt": b"a\nb\n" * 1000, "desktop.ini": b"x"}
    parts = _split_archive(tmp_path, "enc", files, 3)
    target = assemble_split_zip(parts, tmp_path / "models", "enc")
    assert target == tmp_path / "models" / "enc"
    assert (target / "vocab.txt").read_bytes() == files["vocab.txt"]
    assert not (target / "desktop.ini").exists()
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["enc"]  # no scratch left behind
    stamp = (target / "config.json").stat().st_mtime_ns
    assert assemble_split_zip(parts[::-1], tmp_path / "models", "enc") == target  # already there: untouched
    assert (target / "config.json").stat().st_mtime_ns == stamp


def test_split_archive_in_the_wrong_order_is_refused(tmp_path: Path) -> None:
    from fractal_core.embedding.encoder import assemble_split_zip

    files = {"config.json": b"{}", "model.bin": os.urandom(50_000)}
    parts = _split_archive(tmp_path, "enc", files, 2)
    with pytest.raises(FileNotFoundError, match="reinstall"):
        assemble_split_zip(parts[::-1], tmp_path / "models", "enc")
    assert not (tmp_path / "models" / "enc").exists()


def test_encoders_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fractal_core.embedding import model_files

    assert resolve_model_path("all-MiniLM-L6-v2") == resolve_model_path(None)
    assert encoder_id_for(EncoderConfig(model_path="all-MiniLM-L6-v2")) == encoder_id_for(EncoderConfig())
    with pytest.raises(FileNotFoundError, match="all-mpnet-base-v2"):
        resolve_model_path("no-such-encoder")
    # mpnet by name: whatever the wheels hold is joined into $FRACTAL_HOME/cache/models, once
    files = {"config.json": b'{"model_type": "mpnet"}', "vocab.txt": b"x"}
    parts = _split_archive(tmp_path, "all-mpnet-base-v2", files, 5)
    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(model_files, "_installed_parts", lambda names: parts if len(names) == 5 else [])
    path = resolve_model_path("all-mpnet-base-v2")
    assert path == tmp_path / "home" / "cache" / "models" / "all-mpnet-base-v2"
    assert compute_encoder_id(path, max_length=256).startswith("all-mpnet-base-v2-")
    assert compute_encoder_id(path, max_length=256) != encoder_id_for(EncoderConfig())


def test_missing_encoder_wheels_are_named() -> None:
    from fractal_core.embedding.model_files import _installed_parts

    with pytest.raises(FileNotFoundError, match="make install-encoders"):
        _installed_parts(["fractal-no-such-wheel-part-001"])
