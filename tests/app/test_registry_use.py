"""The Train and Gold queue pages list the library's methods and strategies without importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

VIEWS = Path(__file__).resolve().parents[2] / "app" / "views"


@pytest.mark.parametrize("page", ["train.py", "gold.py"])
@pytest.mark.slow
def test_page_imports_load_no_torch(page: str) -> None:
    tree = ast.parse((VIEWS / page).read_text())
    modules = sorted(
        {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    )
    assert any(m.split(".")[0] == "fractal_core" for m in modules)
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "from fractal_core.fitting import registry\nsys.exit(3 if 'torch' in sys.modules else 0)\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr or "importing the page's modules loaded torch"


class _Recorder:
    """Stands in for the job table: JobContext.set's overall fractions, in order."""

    def __init__(self) -> None:
        self.values: list[float] = []


@pytest.mark.parametrize(
    ("method", "has_gold"), [("fractal", True), ("fractal", False), ("pslab", False), ("naive", False)]
)
def test_progress_bar_fills_exactly_over_the_real_stages(method: str, has_gold: bool) -> None:
    from app import jobs
    from fractal_core.fitting import registry

    seen = _Recorder()

    class Ctx(jobs.JobContext):
        def set(self, fraction: float, message: str, *, force: bool = False) -> None:
            seen.values.append(fraction)

        def log(self, line: str) -> None:
            pass

    stages = registry.training_stages(method, has_gold=has_gold, aggregation="max")
    callback = Ctx(engine=None, job_id=0).training_callback(stages, 0.1, 0.9)  # type: ignore[arg-type]
    for fraction in (0.0, 0.5, 1.0):
        callback(registry.STAGE_EMBED, fraction, "")
    for stage in stages:
        for fraction in (0.0, 0.5, 1.0):
            callback(stage, fraction, "")
    assert seen.values == sorted(seen.values)  # never goes back
    assert seen.values[-1] == pytest.approx(0.9)  # the last stage's end is the end of the range
    assert seen.values[0] == pytest.approx(0.1)
