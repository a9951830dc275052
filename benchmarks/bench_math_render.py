"""Cost of rendering formulas on the Review page: server-side time to build one response's HTML (context and
sentences) for every response of the bundled demo (ProcessBench math), with formulas converted to MathML,
against the same renderer with formula detection switched off (escaped text only), in the same run.

"Cold" is the first render of each response in a fresh process (every formula converted once); "warm" is a
second pass (conversions come from the per-process cache, as when the Review page reruns on a keypress).

    .venv/bin/python benchmarks/bench_math_render.py
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import render  # noqa: E402
from fractal_core.data.demo import demo_path  # noqa: E402
from fractal_core.data.io import read_records  # noqa: E402


def _pass(records, *, math: bool) -> list[float]:
    find = render.find_math
    if not math:
        render.find_math = lambda text: []  # type: ignore[assignment]
    try:
        out = []
        for r in records:
            start = time.perf_counter()
            render.render_context(r.context)
            render.render_response(r.text, [(s.start, s.end) for s in r.spans], [0.5] * len(r.spans))
            out.append((time.perf_counter() - start) * 1000)
        return out
    finally:
        render.find_math = find  # type: ignore[assignment]


def _summary(ms: list[float]) -> str:
    ms = sorted(ms)
    return f"p50 {ms[len(ms) // 2]:.2f} ms, p95 {ms[int(len(ms) * 0.95)]:.2f} ms, max {ms[-1]:.1f} ms"


def main() -> None:
    records = read_records(demo_path())
    render.latex_to_mathml("x")  # import the converter outside the timings (paid once per process)
    render.latex_to_mathml.cache_clear()
    n_formulas = sum(len(render.find_math(r.text)) + len(render.find_math(r.context)) for r in records)
    print(
        f"{platform.node()} {platform.processor() or platform.machine()}: {len(records)} responses, {n_formulas} formulas"
    )
    print("escaped text only (peer):", _summary(_pass(records, math=False)))
    print("with MathML, cold:       ", _summary(_pass(records, math=True)))
    print("with MathML, warm:       ", _summary(_pass(records, math=True)))


if __name__ == "__main__":
    main()
