"""Step scores served to a training loop: ``fractal serve-scores`` against ``fractal score`` in the same run.

A model is trained on the bundled demo (bagloss, the bundled MiniLM encoder; the demo's embeddings ship with it,
so training takes seconds) unless ``--model DIR`` is given. The real command then serves it in a subprocess on
loopback, and clients in this process send raw step text (``--segment-mode steps``) of NEW responses: every step
carries a unique tag, so no step is in the embedding cache, as in a training loop where each completion is new.

- **Latency**: one client, one 10-step response per request on a kept-alive connection (each with a new
  prompt), after warm-up requests; p50 / p95 / max in ms (target p95 <= 100 ms).
- **Throughput**: ``--clients`` threads, each sending requests of ``--per-request`` responses (a GRPO-like group:
  one new prompt, that many 10-step completions); steps per second of wall time (target >= 500).
- **Peer**: ``fractal score`` on as many new responses of the same shape, in a subprocess (what a loop that
  shells out per batch pays, process start included), and on one 10-step response.
- **Cost per 1k steps**: wall seconds and CPU seconds (the server process's, from /proc; the peer's, from
  rusage) per 1,000 steps.

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/bench_serve.py [--model DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS = 10
PATH = "/v1/step-scores"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_demo_model(out: Path, precision: str = "auto") -> Path:
    """bagloss on the bundled demo. With the default encoder its embeddings come from the shipped pack; another
    ``precision`` (e.g. ``onnx-int8``) is another encoder id, so the demo is embedded with it first and the model
    is trained, saved and then served with that encoder, as ``fractal train --precision`` does."""
    from fractal_core import FractalModel
    from fractal_core.data.demo import demo_embeddings_path, demo_path
    from fractal_core.data.io import read_records
    from fractal_core.embedding.encoder import EncoderConfig, get_encoder

    config = EncoderConfig(precision=precision)  # type: ignore[arg-type]
    encoder = get_encoder(config)
    assert encoder.cache is not None
    if precision == "auto":
        encoder.cache.import_pack(demo_embeddings_path(), encoder.encoder_id)
    model = FractalModel("bagloss", seed=0, encoder=config)
    return model.fit(read_records(demo_path())).save(out)


class Responses:
    """New 10-step responses made of demo steps, each step tagged so its text was never embedded."""

    def __init__(self, seed: int = 0) -> None:
        from fractal_core.data.demo import demo_path
        from fractal_core.data.io import read_records

        records = read_records(demo_path())
        self.steps = [s.text.replace("\n", " ") for r in records for s in r.spans]
        self.questions = [r.context for r in records]
        self.rng = np.random.default_rng(seed)
        self.run = secrets.token_hex(3)  # a fresh tag per run: a rerun on the same cache misses it too
        self.count = 0

    def prompt(self) -> str:
        self.count += 1
        return f"{self.questions[self.count % len(self.questions)]} (case {self.run}-{self.count})"

    def completion(self) -> str:
        self.count += 1
        picks = self.rng.choice(len(self.steps), STEPS, replace=False)
        return "\n".join(
            f"Step {j + 1}: {self.steps[p]} [{self.run}-{self.count}-{j}]" for j, p in enumerate(picks)
        )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def post(conn: http.client.HTTPConnection, token: str, items: list[dict[str, str]]) -> dict[str, Any]:
    body = json.dumps({"responses": items})
    conn.request("POST", PATH, body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    answer = conn.getresponse()
    data = json.loads(answer.read())
    if answer.status != 200:
        raise RuntimeError(f"HTTP {answer.status}: {data}")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="a `fractal train` directory (default: train on the demo)")
    parser.add_argument("--requests", type=int, default=60, help="latency requests (after 5 warm-up ones)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-request", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="requests per client in the throughput run")
    parser.add_argument(
        "--precision",
        default="auto",
        help="encoder precision of the demo model (auto | float32 | bfloat16 | int8 | onnx-int8); the server "
        "and the peer both run the model with it",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    os.environ["FRACTAL_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    load_start = os.getloadavg()
    model_dir = args.model or train_demo_model(home / "model", args.precision)
    token = secrets.token_urlsafe(32)
    (home / "token").write_text(token)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve-scores", "--model", str(model_dir), "--port", str(port),
         "--token-file", str(home / "token"), "--segment-mode", "steps"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    results: dict[str, Any] = {}
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        if "serving step scores" not in banner:
            raise RuntimeError(f"the server did not start: {banner}{server.stdout.read()}")
        make = Responses()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        for _ in range(5):  # warm-up: first requests pay for lazy imports and allocator growth
            post(conn, token, [{"context": make.prompt(), "text": make.completion()}])

        latencies = []
        for _ in range(args.requests):
            item = {"context": make.prompt(), "text": make.completion()}
            started = time.perf_counter()
            answer = post(conn, token, [item])
            latencies.append(1000 * (time.perf_counter() - started))
            assert len(answer["results"][0]["sentence_scores"]) == STEPS
        conn.close()
        ms = np.array(latencies)
        results["latency_ms"] = {
            "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95)),
            "max": float(ms.max()),
            "requests": len(ms),
        }

        # Every request is prepared before the clock starts: the clients only send and wait.
        batches = [
            [
                [{"context": prompt, "text": make.completion()} for _ in range(args.per_request)]
                for prompt in [make.prompt() for _ in range(args.rounds)]
            ]
            for _ in range(args.clients)
        ]
        n_steps = args.clients * args.rounds * args.per_request * STEPS
        errors: list[BaseException] = []

        def client(requests: list[list[dict[str, str]]]) -> None:
            own = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            try:
                for items in requests:
                    post(own, token, items)
            except BaseException as err:  # reported below
                errors.append(err)
            finally:
                own.close()

        threads = [threading.Thread(target=client, args=(b,)) for b in batches]
        cpu0, started = cpu_seconds(server.pid), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall, cpu = time.perf_counter() - started, cpu_seconds(server.pid) - cpu0
        if errors:
            raise errors[0]
        results["served"] = {
            "steps": n_steps,
            "seconds": wall,
            "steps_per_s": n_steps / wall,
            "wall_s_per_1k_steps": 1000 * wall / n_steps,
            "cpu_s_per_1k_steps": 1000 * cpu / n_steps,
            "clients": args.clients,
            "responses_per_request": args.per_request,
        }
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    # The peer: the same shape of new responses through `fractal score`, process start included.
    def fractal_score(n_responses: int, name: str) -> tuple[float, float, int]:
        rows = []
        for i in range(n_responses):
            prompt = make.prompt() if i % args.per_request == 0 else rows[-1]["context"]
            rows.append(
                {"id": f"{name}-{i}", "context": prompt, "text": make.completion(), "response_label": 0}
            )
        data = home / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "app.cli", "score", "--model", str(model_dir), str(data), "--out",
             str(home / f"{name}.out.jsonl"), "--segment-mode", "steps"],
            cwd=REPO, env=env, check=True, capture_output=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu, n_responses * STEPS

    wall, cpu, steps = fractal_score(args.clients * args.rounds * args.per_request, "peer")
    results["fractal_score"] = {
        "steps": steps,
        "seconds": wall,
        "steps_per_s": steps / wall,
        "wall_s_per_1k_steps": 1000 * wall / steps,
        "cpu_s_per_1k_steps": 1000 * cpu / steps,
    }
    one_wall, _, _ = fractal_score(1, "peer-one")
    results["fractal_score_one_response_ms"] = 1000 * one_wall
    served, peer = results["served"], results["fractal_score"]
    results["ratio_wall_cost"] = peer["wall_s_per_1k_steps"] / served["wall_s_per_1k_steps"]
    results["ratio_cpu_cost"] = peer["cpu_s_per_1k_steps"] / served["cpu_s_per_1k_steps"]
    results["latency_ratio_one_response"] = (
        results["fractal_score_one_response_ms"] / results["latency_ms"]["p50"]
    )
    results["load_average"] = [load_start[0], os.getloadavg()[0]]
    results["nproc"] = os.cpu_count()
    results["precision"] = None if args.model else args.precision

    lat = results["latency_ms"]
    print(f"load average {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    print(
        f"latency, one {STEPS}-step response: p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, max {lat['max']:.0f} ms"
    )
    print("| | steps | seconds | steps/s | wall s / 1k steps | CPU s / 1k steps |")
    print("|---|---|---|---|---|---|")
    for name, row in (("serve-scores", served), ("fractal score", peer)):
        print(
            f"| {name} | {row['steps']} | {row['seconds']:.1f} | {row['steps_per_s']:.0f} | "
            f"{row['wall_s_per_1k_steps']:.2f} | {row['cpu_s_per_1k_steps']:.2f} |"
        )
    print(
        f"fractal score on one {STEPS}-step response: {results['fractal_score_one_response_ms']:.0f} ms "
        f"({results['latency_ratio_one_response']:.0f}x the served p50); cost ratio fractal score / served: "
        f"wall {results['ratio_wall_cost']:.2f}x, CPU {results['ratio_cpu_cost']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
