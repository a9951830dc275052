"""Review at keyboard speed, in Chromium: key press to recoloured page, and fast labels then an immediate reload.

On the bundled demo dataset (scored by a quick model trained at the start), against a peer measured in the
same run: the same app at an earlier commit (``--peer-commit``, default the last one before the browser
component), where every key reran the page on the server. Each serves a store its own code made from the same
demo file (an earlier commit cannot open a store migrated past its own schema).

- **Key to recoloured page**: a trusted key press (Playwright), timed inside the page from the keydown event to
  the first animation frame in which the sentence shows its new state (the cursor outline for J, the label badge
  for 0 / 1). The peer has no browser-side labels, so it is timed on J (its cursor) only; the new page on J and on
  label keys.
- **Fast labels then reload** (new page only): on the longest demo response labelled 0 (n = 10 sentences), 0 on
  every sentence going down and then X (clear) on every one going up, 2n = 20 label changes as fast as the
  browser takes them, then an immediate reload; how many are stored, in order, with the right source, and how
  long until the last one.

    nice python benchmarks/review_latency.py --out benchmarks/results/review_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CHROMIUM = os.environ.get("FRACTAL_CHROMIUM", "/usr/bin/chromium")
PEER_COMMIT = "2986423"  # the Review page before the browser component (every key a server rerun)

# Finds an element by id in the page or in any open shadow root (the component draws in one).
_FIND = """(id) => {
  const direct = document.getElementById(id);
  if (direct) return direct;
  for (const host of document.querySelectorAll('*')) {
    if (host.shadowRoot) { const el = host.shadowRoot.getElementById(id); if (el) return el; }
  }
  return null;
}"""

# Arms a timer (not awaited here): the next keydown starts it; it stops at the first frame where the element
# matches the selector. The result is read from window.__timed after the key press.
_ARM = """([id, selector, find]) => {
  const locate = new Function('return (' + find + ')')();
  let t0 = null;
  const onKey = () => { if (t0 === null) t0 = performance.now(); };
  window.addEventListener('keydown', onKey, true);
  window.__timed = new Promise((resolve) => {
    const tick = () => {
      const el = locate(id);
      if (t0 !== null && el && el.matches(selector)) {
        window.removeEventListener('keydown', onKey, true);
        resolve(performance.now() - t0);
        return;
      }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
}"""


def _copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite store (its write-ahead log included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The demo dataset, ingested and scored by a quick model, by the code found on PYTHONPATH: each app serves a store
# its own code made, since an earlier commit cannot open a store migrated past its own schema.
_PREPARE = """
import sys
from app.settings import load_settings
from app.worker import Worker
from db import repository as repo
from db.engine import get_engine
from db.ingest import ingest_file
from fractal_core.data.demo import demo_path

url = sys.argv[1]
engine = get_engine(url)
summary = ingest_file(engine, demo_path(), "demo")
quick = {"max_epochs": 3, "patience": 1, "hidden": 32}
repo.create_job(engine, "train", {"dataset_id": summary.dataset_id, "method": "fractal", "config": quick})
Worker(load_settings(url)).run(once=True)
"""


def _prepare_store(home: Path, code: Path, name: str) -> Path:
    """A store with the demo scored by a quick model, made by the code in ``code``."""
    store = home / f"{name}-base.sqlite"
    env = dict(os.environ, FRACTAL_HOME=str(home), PYTHONPATH=str(code), PYTHONDONTWRITEBYTECODE="1")
    subprocess.run([sys.executable, "-c", _PREPARE, f"sqlite:///{store}"], cwd=code, env=env, check=True)
    return store


class Server:
    def __init__(self, code: Path, store: Path, home: Path) -> None:
        self.port = _free_port()
        self.store = store
        env = dict(
            os.environ,
            FRACTAL_DB_URL=f"sqlite:///{store}",
            FRACTAL_HOME=str(home),
            FRACTAL_AUTH="off",
            FRACTAL_ANNOTATOR="bench",
            PYTHONPATH=str(code),
            PYTHONDONTWRITEBYTECODE="1",
            OMP_NUM_THREADS="1",
        )
        args = [sys.executable, "-m", "streamlit", "run", str(code / "app" / "main.py")]
        args += [
            "--server.port",
            str(self.port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
        ]
        args += ["--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
        log = open(home / f"streamlit-{self.port}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            args, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stcore/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("streamlit did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def _timed_press(page: Any, key: str, element_id: str, selector: str) -> float:
    page.evaluate(_ARM, [element_id, selector, _FIND])
    page.keyboard.press(key)
    return float(page.evaluate("() => window.__timed"))


def _settle(page: Any) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)


def _cursor_times(page: Any, n: int) -> list[float]:
    """J n times from the first sentence: time to the next sentence's cursor outline."""
    times = []
    for i in range(1, n + 1):
        times.append(_timed_press(page, "j", f"fs-sent-{i}", ".fs-focus"))
        _settle(page)
    return times


def _label_times(page: Any, n: int) -> list[float]:
    """0 on sentences 0..n-1 (the cursor moves on after each): time to the label badge being drawn. Then X
    on each going up (untimed): 2n changes in all, as fast as the browser takes them."""
    times = [_timed_press(page, "0", f"fs-sent-{i}", ":has(> .fs-gold)") for i in range(n)]
    for _ in range(n):
        page.keyboard.press("x")
        page.keyboard.press("k")
    return times


def _pick_response(store: Path) -> tuple[int, int]:
    """The demo response labelled 0 with the most sentences (every label 0 is then consistent); plain SQL, so it
    reads the peer's store (an older schema) too."""
    with sqlite3.connect(store) as db:
        row = db.execute(
            "SELECT id, n_sentences FROM responses WHERE response_label = 0 ORDER BY n_sentences DESC, id LIMIT 1"
        ).fetchone()
    return int(row[0]), int(row[1])


def _p(values: list[float], q: float) -> float:
    return float(sorted(values)[min(len(values) - 1, int(round(q * (len(values) - 1))))])


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median_ms": statistics.median(values),
        "p95_ms": _p(values, 0.95),
        "max_ms": max(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peer-commit", default=PEER_COMMIT, help="earlier commit to measure as the peer")
    parser.add_argument("--presses", type=int, default=8, help="J presses per response (each app)")
    parser.add_argument(
        "--label-rounds",
        type=int,
        default=4,
        help="rounds of n timed label presses after the reload check (each round also clears them, untimed)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--base-store",
        type=Path,
        default=None,
        help="a SQLite store with the demo scored (default: made here)",
    )
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="review-latency-"))
    peer_code = work / "peer"
    peer_code.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", args.peer_commit], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(peer_code)], input=archive.stdout, check=True)
    bases = {"component": args.base_store or _prepare_store(work, REPO, "component")}
    bases["peer"] = _prepare_store(work, peer_code, "peer")
    results: dict[str, Any] = {"peer_commit": args.peer_commit}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
            for name, code in (("component", REPO), ("peer", peer_code)):
                store = work / f"{name}.sqlite"
                _copy_store(bases[name], store)
                rid, n = _pick_response(store)
                srv = Server(code, store, work)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(f"{srv.url}/?dataset=1&response={rid}&i=0")
                    page.wait_for_function(f"() => ({_FIND})('fs-sent-0') !== null", timeout=120_000)
                    _settle(page)
                    page.wait_for_timeout(1000)
                    results[name] = {"response_sentences": n}
                    if name == "component":
                        label_times = _label_times(page, n)
                        results[name]["reload"] = _reload_check(page, srv, rid, n)
                        page.wait_for_function(f"() => ({_FIND})('fs-sent-0') !== null", timeout=120_000)
                        _settle(page)
                        page.wait_for_timeout(1000)
                        # More rounds of the same 2n changes after the reload, for a steadier tail.
                        for _ in range(args.label_rounds):
                            label_times += _label_times(page, n)
                            _settle(page)
                        results[name]["label"] = _summary(label_times)
                    results[name]["cursor"] = _summary(_cursor_times(page, min(args.presses, n - 1)))
                    page.close()
                finally:
                    srv.stop()
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    comp, peer = results["component"]["cursor"], results["peer"]["cursor"]
    results["peer_over_component_p95"] = peer["p95_ms"] / comp["p95_ms"]
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


def _reload_check(page: Any, srv: Server, rid: int, n: int) -> dict[str, Any]:
    """After the 2n changes, an immediate reload: what the store holds (0 on 0..n-1, then clears n-1..0)."""
    from db import repository as repo
    from db.engine import get_engine

    page.reload()
    start = time.monotonic()
    engine = get_engine(f"sqlite:///{srv.store}")
    history: list[Any] = []
    while time.monotonic() - start < 60:
        every = repo.label_history(engine, response_id=rid)  # the demo file's own labels are in it too
        history = sorted((h for h in every if h.annotator == "bench"), key=lambda h: h.event_id)
        if len(history) >= 2 * n:
            break
        time.sleep(0.2)
    position = {s.id: s.position for s in repo.get_response(engine, rid).sentences}
    got = [(position[h.sentence_id], h.new_label, h.source, h.annotator) for h in history]
    want = [(i, 0, "human", "bench") for i in range(n)] + [
        (i, None, "human", "bench") for i in reversed(range(n))
    ]
    return {
        "changes": 2 * n,
        "stored": len(got),
        "in_order_right_source": got == want,
        "seconds_after_reload": round(time.monotonic() - start, 2),
        **({} if got == want else {"stored_events": got}),
    }


if __name__ == "__main__":
    main()
