"""Embedding on a local Ray instance with two workers equals the single process (slow: starts Ray)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ray = pytest.importorskip("ray")

from fractal_core.embedding.cache import EmbeddingCache  # noqa: E402
from fractal_core.embedding.encoder import Encoder, EncoderConfig, encoder_id_for  # noqa: E402
from fractal_core.experimental.distributed import ray_embed  # noqa: E402

TEXTS = [f"Step {i}: the total is {i * 7} apples, so {i} boxes hold them." for i in range(40)]
TEXTS += ["", "Short.", TEXTS[3], "A much longer sentence " * 20]


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc): Ray's local cluster and its workers are started from here."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        started = _descendants(os.getpid())
        ray.shutdown()
        # Actor processes can outlive shutdown for a while (re-parented to init): wait a little, ask them to stop,
        # then kill what is left. A zombie (an exited child not yet reaped) counts as gone.
        deadline = time.monotonic() + 5
        while (alive := {p for p in started if _running(p)}) and time.monotonic() < deadline:
            time.sleep(0.2)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 3
            while (alive := {p for p in alive if _running(p)}) and time.monotonic() < deadline:
                time.sleep(0.1)


@pytest.mark.slow
def test_two_ray_workers_embed_like_one_process(local_ray: None, tmp_path: Path) -> None:
    # The default precision (bf16 autocast where the CPU has native bf16): there a vector depends on which texts
    # share its batch, so the workers must get the single process's own batches. The reference runs on one
    # thread like each worker, so the same kernels see the same batches and the vectors are equal bit for bit.
    # A budget of 256 tokens cuts the texts into four batches: both workers get some (the default budget holds
    # all of them in one batch, and only one worker would be started).
    import torch

    config = EncoderConfig(cache_dir=str(tmp_path), batch_tokens=256)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = Encoder(EncoderConfig(cache_dir="", batch_tokens=256)).encode(TEXTS)
    finally:
        torch.set_num_threads(threads)
    seen: list[tuple[int, int]] = []
    got = ray_embed(TEXTS, config=config, workers=2, progress=lambda d, t: seen.append((d, t)))
    assert got.shape == reference.shape
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
    assert ((got * reference).sum(1) / norms).min() >= 0.9999
    assert np.array_equal(got, reference)
    assert np.array_equal(got[3], got[len(TEXTS) - 2])  # duplicates are embedded once and agree
    unique = len(set(TEXTS))
    assert seen[0] == (0, unique) and seen[-1] == (unique, unique)
    assert len(seen) == 1 + 4  # the look-up, then one report per batch
    # Every batch reached the cache under the encoder's id: a rerun embeds nothing and returns the same.
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    assert cache.count(encoder_id_for(config)) == unique
    again: list[tuple[int, int]] = []
    assert np.array_equal(ray_embed(TEXTS, config=config, progress=lambda d, t: again.append((d, t))), got)
    assert again == [(unique, unique)]
    assert ray_embed([], config=config).shape == (0, reference.shape[1])


@pytest.mark.slow
def test_cli_embed_and_score_on_ray(local_ray: None, tmp_path: Path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from fractal_core.cli import register

    app = typer.Typer()
    register(app)
    rows = [
        {
            "id": f"r{i}",
            "context": f"Question {i}: how many apples are in {i} boxes?",
            "sentences": [f"Each box holds {i} apples.", f"So there are {i * i} apples.", "Done."],
            "response_label": i % 2,
        }
        for i in range(8)
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    runner = CliRunner()
    env = {"FRACTAL_HOME": str(tmp_path / "home")}
    embedded = runner.invoke(app, ["embed", str(data), "--ray", "auto"], env=env)
    assert embedded.exit_code == 0, embedded.output
    assert "on Ray (auto)" in embedded.output
    trained = runner.invoke(
        app,
        ["train", str(data), "--out", str(tmp_path / "m"), "--method", "bagloss", "--max-epochs", "1"],
        env=env,
    )
    assert trained.exit_code == 0, trained.output
    for flags, out in (([], "local.jsonl"), (["--ray", "auto"], "ray.jsonl")):
        args = ["score", str(data), "--model", str(tmp_path / "m"), "--out", str(tmp_path / out), *flags]
        scored = runner.invoke(app, args, env=env)
        assert scored.exit_code == 0, scored.output
    local = [json.loads(line)["sentence_scores"] for line in (tmp_path / "local.jsonl").open()]
    remote = [json.loads(line)["sentence_scores"] for line in (tmp_path / "ray.jsonl").open()]
    assert remote == local and len(local) == len(rows)
    bad = runner.invoke(app, ["embed", str(data), "--ray", "auto", "--encoder", str(tmp_path)], env=env)
    assert bad.exit_code == 2 and "config.json" in bad.output  # not a model directory: one line, exit 2


@pytest.mark.slow
def test_worker_embed_job_on_ray(local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fractal worker --ray` (settings.ray_address): the embed job fills the store's cache through Ray."""
    import json

    from app.jobs import JobContext, run_job
    from app.settings import AppSettings
    from db import repository as repo
    from db.engine import get_engine
    from db.ingest import ingest_file
    from db.schema import upgrade

    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path))
    monkeypatch.setattr("fractal_core.embedding.encoder._ENCODERS", {})  # an encoder on this test's cache
    data = tmp_path / "tiny.jsonl"
    rows = [
        {"id": f"r{i}", "context": f"Q{i}?", "sentences": TEXTS[i : i + 3], "response_label": i % 2}
        for i in range(6)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = get_engine(url, check_schema=False)
    upgrade(engine)
    summary = ingest_file(engine, data, "tiny")
    repo.create_job(engine, "embed", {"dataset_id": summary.dataset_id})
    job = repo.claim_next_job(engine, "test:1")
    assert job is not None
    settings = AppSettings(home=tmp_path, db_url=url, annotator="t", ray_address="auto")
    result = run_job(engine, settings, job, JobContext(engine, job.id))
    assert result["ray"] == "auto" and result["sentences"] == summary.n_sentences
    expected = {t for r in rows for t in r["sentences"]} | {r["context"] for r in rows}
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite")
    assert cache.count(encoder_id_for(EncoderConfig())) == len(expected)
    engine.dispose()
