"""Run every speed benchmark in turn (`make bench`); each prints its own figures for BENCHMARKS.md.

The quality experiments (tune.py, paper_tables.py, gold_curve.py, active_selection.py) take much longer and are
run on their own; their commands are in BENCHMARKS.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEED = ["bench_train.py", "bench_encode.py", "bench_db.py", "bench_app.py"]


def main() -> int:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    failed = []
    for script in SPEED:
        print(f"\n=== {script} ===", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)], env=env).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
