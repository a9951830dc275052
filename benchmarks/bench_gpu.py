"""The GPU path end to end: encode, train and score on ``cuda`` against this machine's CPU, same data and run.

Usage (ready for a GPU machine; BENCHMARKS.md records what it printed):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_gpu.py [--data ../shared/data/processbench] [--n 2000]

Without a CUDA device it says so and measures nothing (exit code 0). With one it reports, for the first ``--n``
responses of train.jsonl (and valid.jsonl for early stopping):

- encode: sentences/s of the default encoder (cache disabled) on the GPU (bf16 autocast where the GPU supports
  it, the encoder's ``precision="auto"``) and on the CPU, and the minimum cosine between the two;
- train: seconds for ``FractalModel("fractal").fit`` with ``device="cuda"`` and ``device="cpu"`` on the same
  embeddings (the cache is filled first, so this is training alone; the scorer trains in float32: its matrices
  are small and the objectives' log-space segment reductions are where reduced precision is not safe);
- score: sentences/s of ``predict`` on the GPU and the CPU, and the largest difference between their scores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from data_option import DATA as SHARED_DATA  # noqa: E402

DATA = SHARED_DATA / "processbench"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--n", type=int, default=2000, help="responses of train.jsonl")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}")
    if not torch.cuda.is_available():
        print(
            f"no GPU found (torch.cuda.is_available() is False, CUDA build: {torch.version.cuda}); nothing measured"
        )
        return
    print(f"GPU: {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}")

    from fractal_core.data.io import read_records
    from fractal_core.embedding.encoder import Encoder, EncoderConfig
    from fractal_core.fitting.config import TrainConfig
    from fractal_core.fitting.estimator import FractalModel

    train = read_records(args.data / "train.jsonl")[: args.n]
    valid = read_records(args.data / "valid.jsonl") if (args.data / "valid.jsonl").exists() else None
    sentences = [s.text for r in train for s in r.spans]

    def timed_encode(device: str) -> tuple[float, np.ndarray]:
        encoder = Encoder(EncoderConfig(cache_dir="", device=device))
        encoder.encode(sentences[:64])
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = encoder.encode(sentences)
        return time.perf_counter() - started, out

    t_gpu, e_gpu = timed_encode("cuda")
    t_cpu, e_cpu = timed_encode("cpu")
    cos = (e_gpu * e_cpu).sum(1)
    print(
        f"encode {len(sentences)} sentences: cuda {len(sentences) / t_gpu:.0f}/s, cpu {len(sentences) / t_cpu:.0f}/s "
        f"({t_cpu / t_gpu:.1f}x); min cosine {cos.min():.5f}"
    )

    with tempfile.TemporaryDirectory() as cache:
        os.environ["FRACTAL_HOME"] = (
            cache  # a private cache, filled once, so training times are training only
        )
        FractalModel("bagloss", config=TrainConfig(max_epochs=1)).fit(train, valid=valid)
        scores = {}
        for device in ("cuda", "cpu"):
            model = FractalModel("fractal", config=TrainConfig(device=device), seed=0)
            started = time.perf_counter()
            model.fit(train, valid=valid)
            t_train = time.perf_counter() - started
            started = time.perf_counter()
            scores[device] = np.concatenate(model.predict(train))
            t_score = time.perf_counter() - started
            print(
                f"{device}: train 'fractal' {t_train:.1f} s ({model.resolved_method_}), "
                f"score {len(scores[device]) / t_score:.0f} sentences/s"
            )
        print(
            f"largest |cuda - cpu| score difference (separately trained, same seed): "
            f"{np.abs(scores['cuda'] - scores['cpu']).max():.4f}"
        )


if __name__ == "__main__":
    main()
