"""The Review component's resend wait doubles with each unanswered resend (under node): a fixed interval shorter
than one server run would restart every run before it answers, and a save would never complete."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node") or "/usr/bin/node"
MODULE = Path(__file__).resolve().parents[2] / "app" / "components" / "review_keys.mjs"


@pytest.mark.skipif(not Path(NODE).exists(), reason="node not installed")
def test_resend_wait_backs_off_to_a_cap() -> None:
    script = (
        f"import {{ resendWait }} from {json.dumps(MODULE.as_uri())};\n"
        "process.stdout.write(JSON.stringify([0, 1, 2, 3, 4, 5, 9].map(resendWait)));\n"
    )
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == [4000, 8000, 16000, 32000, 60000, 60000, 60000]
