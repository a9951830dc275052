"""Encoder and embedding cache, with the real bundled all-MiniLM-L6-v2 (offline)."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import replace
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

TEXTS = [
    "The parking brake keeps the vehicle from rolling.",
    "To solve this problem, let's break it down step by step.",
    "Let \\( J \\) be Jim's age when Digimon came out. Therefore, \\[ 28 - x = 2J \\].",
    "def f(x):\n    return x + 1",
    "",
    "   ",
    "Dr. Smith paid $3.50 at https://example.com/a?b=1.",
    "ümlaut, 中文, emoji 🙂 and math ∑ x_i",
    "1. first\n2. second\n- bullet",
    "word " * 400,  # longer than max_length: truncated like sentence-transformers
    "Short.",
    "The answer is 42.",
    "So the total cost is 3 * 4 = 12 dollars.",
    "However, this step incorrectly assumes the ages are equal.",
    "Therefore the final answer is \\boxed{7}.",
    "Why do I have to apply the parking brake fully for parking?",
    "It also helps to reduce the load on the transmission locking mechanism.",
    "a",
    "A B C D E F G",
    "Next, calculate John's age when Digimon came out.",
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(EncoderConfig(cache_dir="", precision="float32"))


def test_shapes_norms_and_dtype(encoder: Encoder) -> None:
    emb = encoder.encode(TEXTS)
    assert emb.shape == (len(TEXTS), encoder.dim) == (len(TEXTS), 384)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=2e-3)
    assert np.array_equal(emb, emb.astype(np.float16).astype(np.float32))  # float16-exact by design
    assert encoder.encode([]).shape == (0, 384)
    assert encoder.device.type == "cpu"


@pytest.mark.slow
def test_matches_sentence_transformers(encoder: Encoder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(resolve_model_path(None)), device="cpu").encode(TEXTS)
    ours = encoder.encode(TEXTS)
    assert (ours * reference).sum(1).min() > 0.9999
    auto = Encoder(EncoderConfig(cache_dir=""))  # bf16 autocast where the CPU has it
    assert (auto.encode(TEXTS) * reference).sum(1).min() > 0.999


@pytest.mark.slow
def test_batching_and_padding_do_not_change_results(encoder: Encoder) -> None:
    tiny = Encoder(EncoderConfig(cache_dir="", precision="float32", batch_tokens=64))
    a = encoder.encode(TEXTS)
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


@pytest.mark.slow
def test_int8_encoder_has_its_own_id_and_stays_close(encoder: Encoder) -> None:
    quantized = Encoder(EncoderConfig(cache_dir="", precision="int8"))
    assert quantized.quantized and not encoder.quantized
    assert quantized.encoder_id == encoder.encoder_id + "-int8"  # its cache entries never mix with float ones
    cosine = (quantized.encode(TEXTS) * encoder.encode(TEXTS)).sum(1)
    assert (
        cosine.min() > 0.8 and cosine.mean() > 0.9
    )  # close, but not the >= 0.99 a default needs (BENCHMARKS)
    with pytest.raises(ValueError, match="CPU only"):
        Encoder(EncoderConfig(cache_dir="", precision="int8", device="meta"))


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


def test_onnx_int8_graph_is_built_once_keyed_and_deterministic(
    tiny_encoder_dir: Path, tmp_path: Path
) -> None:
    from fractal_core.embedding.onnx_encoder import onnx_model_path

    config = EncoderConfig(
        model_path=str(tiny_encoder_dir), cache_dir=str(tmp_path / "a"), precision="onnx-int8"
    )
    quantized = Encoder(config)
    float32 = Encoder(replace(config, precision="float32"))
    assert quantized.encoder_id == encoder_id_for(config) != float32.encoder_id
    assert quantized.encoder_id.startswith("tiny-bert") and quantized.encoder_id.endswith("-onnx-int8")
    graph = onnx_model_path(tmp_path / "a", quantized.encoder_id)
    built = graph.stat().st_mtime_ns
    texts = TEXTS[:12]
    vectors = quantized.encode(texts)
    assert vectors.shape == (len(texts), 32) and vectors.dtype == np.float32
    reference = float32.encode(texts)
    cosine = (
        (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() > 0.99
    # Each encoder's vectors sit under its own id in the one cache file: neither serves the other's.
    assert float32.cache is not None and quantized.cache is not None
    digests = [text_digest(t) for t in texts]
    assert np.array_equal(float32.cache.get_digests(float32.encoder_id, digests)[1], reference)
    found, cached = quantized.cache.get_digests(quantized.encoder_id, digests)
    assert found.all() and np.array_equal(cached, vectors) and not np.array_equal(cached, reference)
    again = Encoder(replace(config, batch_tokens=4095))  # another config, the same graph: not rebuilt
    assert graph.stat().st_mtime_ns == built
    assert np.array_equal(again.encode(texts), vectors)
    elsewhere = Encoder(replace(config, cache_dir=str(tmp_path / "b")))
    assert onnx_model_path(tmp_path / "b", quantized.encoder_id).read_bytes() == graph.read_bytes()
    assert np.array_equal(elsewhere.encode(texts), vectors)
    with pytest.raises(ValueError, match="CPU only"):
        Encoder(replace(config, device="meta"))


def test_onnx_smoothing_and_row_scaling_are_exact_in_float(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort
    from transformers import AutoModel

    from fractal_core.embedding import onnx_encoder

    model = AutoModel.from_pretrained(tiny_encoder_dir, local_files_only=True, attn_implementation="eager")
    exported, rewritten = tmp_path / "float.onnx", tmp_path / "rewritten.onnx"
    onnx_encoder._export_float(model, exported, token_type_ids=True)
    rng = np.random.default_rng(0)
    input_ids = rng.integers(1000, 2000, size=(3, 9)).astype(np.int64)
    mask = np.ones_like(input_ids)
    mask[1, 5:] = 0
    onnx_encoder._smooth_and_scale_rows(
        exported, rewritten, calibration=lambda: [(input_ids, mask)], alpha=0.5
    )
    feeds = {"input_ids": input_ids, "attention_mask": mask}
    before = ort.InferenceSession(str(exported)).run(None, feeds)[0]
    after = ort.InferenceSession(str(rewritten)).run(None, feeds)[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_onnx_int8_encoder_stays_within_the_default_rule(encoder: Encoder, tmp_path: Path) -> None:
    quantized = Encoder(EncoderConfig(cache_dir=str(tmp_path), precision="onnx-int8"))
    assert quantized.encoder_id.endswith("-onnx-int8") and quantized.encoder_id != encoder.encoder_id
    vectors, reference = quantized.encode(TEXTS), encoder.encode(TEXTS)
    cosine = (
        (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() >= 0.99  # the rule a default must keep (BENCHMARKS: min 0.995 over 3,000 sentences)


def test_int8_weights_are_signed_only_where_the_cpu_has_vnni() -> None:
    from fractal_core.embedding.onnx_encoder import int8_weight_type

    assert int8_weight_type("flags\t: fpu sse2 avx2 avx512f avx512_vnni") == "qint8"
    assert int8_weight_type("flags\t: fpu sse2 avx2 avx_vnni") == "qint8"
    # plain AVX2: uint8 x int8 products saturate in 16-bit pair sums, so the weights are unsigned
    assert int8_weight_type("flags\t: fpu sse2 avx2 fma") == "quint8"
    assert int8_weight_type("") == "quint8"
