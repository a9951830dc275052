"""The browser's copy of the reviewer view (app/components/review_math.mjs) against the library's
``fractal_core.mil.reviewer.label_conditioned``, on random responses, under node: the two cannot drift."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fractal_core.mil.reviewer import label_conditioned

MODULE = Path(__file__).resolve().parents[2] / "app" / "components" / "review_math.mjs"
NODE = shutil.which("node") or "/usr/bin/node"


def _cases(seed: int, n_cases: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        n = int(rng.integers(1, 9))
        aggregation = str(rng.choice(["max", "min", "mean"]))
        n_levels = 2 if aggregation == "mean" or rng.random() < 0.6 else 3
        scores = rng.random(n)
        extremes = rng.random(n) < 0.1
        scores[extremes] = rng.choice([0.0, 1.0, 1e-12, 1 - 1e-12], size=int(extremes.sum()))
        entered: list[int | None] = [
            int(rng.integers(0, n_levels)) if rng.random() < 0.35 else None for _ in range(n)
        ]
        r = rng.random()
        if r < 0.1:
            label: float | None = None
        elif aggregation == "mean":
            label = float(rng.integers(0, n + 1)) / n if r < 0.8 else float(rng.random())
        else:
            label = float(rng.integers(0, n_levels))
        cases.append(
            {
                "scores": scores.tolist(),
                "entered": entered,
                "label": label,
                "agg": aggregation,
                "levels": n_levels,
            }
        )
    return cases


def _node(cases: list[dict[str, Any]]) -> list[list[float]]:
    script = (
        f"import {{ labelConditioned }} from {json.dumps(MODULE.as_uri())};\n"
        "let raw = ''; process.stdin.on('data', (d) => (raw += d)); process.stdin.on('end', () => {\n"
        "  const cases = JSON.parse(raw);\n"
        "  const out = cases.map((c) => labelConditioned(c.scores, c.entered, c.label, c.agg, c.levels));\n"
        "  process.stdout.write(JSON.stringify(out));\n"
        "});\n"
    )
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(not Path(NODE).exists(), reason="node not installed")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_browser_view_matches_the_library(seed: int) -> None:
    cases = _cases(seed, 400)
    got = _node(cases)
    for case, js in zip(cases, got, strict=True):
        entered = np.array([np.nan if e is None else float(e) for e in case["entered"]])
        want = label_conditioned(
            np.array(case["scores"]), entered, case["label"], aggregation=case["agg"], n_levels=case["levels"]
        )
        np.testing.assert_allclose(js, want, rtol=1e-7, atol=1e-9, err_msg=json.dumps(case))


def test_the_cases_cover_every_branch() -> None:
    """The random cases reach each aggregation with labels, contradictions and unknown labels."""
    cases = _cases(0, 400)
    assert {c["agg"] for c in cases} == {"max", "min", "mean"}
    assert any(c["label"] is None for c in cases)
    assert any(c["levels"] == 3 for c in cases)
    assert sum(all(e is not None for e in c["entered"]) for c in cases) > 5
