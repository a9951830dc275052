"""Process rewards for a TRL-style training loop from a running ``fractal serve-scores``.

Start the server on a trained model (it prints a token once; or give it one with ``--token-file``)::

    fractal serve-scores --model runs/prm --segment-mode steps
    export FRACTAL_SCORES_TOKEN=...        # the token it printed

Then, with this file copied beside the training script::

    from trl_reward import response_rewards, step_rewards

    step_rewards(["What is 6 x 7?"], ["6 x 7 = 42.\\nSo the answer is 42."])   # [[r_1, r_2]]: one per step

    # TRL (GRPOTrainer and the like) takes plain callables that return one float per completion:
    trainer = GRPOTrainer(model=..., reward_funcs=[response_rewards], args=..., train_dataset=...)

``step_rewards`` gives one reward per step (for step-level advantages or a PRM-style minimum);
``response_rewards`` one per completion. The server scores P(label >= 1) per step; with the usual labels
("1 = has an error") the reward is 1 - score, which is the default (``label_is_error=True``). Prompts and
completions may be strings or chat messages (``[{"role": ..., "content": ...}]``, as TRL passes conversational
data). Only the standard library is needed; TRL is not imported.

Settings: ``FRACTAL_SCORES_URL`` (default ``http://127.0.0.1:8502``), ``FRACTAL_SCORES_TOKEN`` or
``FRACTAL_SCORES_TOKEN_FILE``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8502"
PATH = "/v1/step-scores"
CHUNK = 256  # responses per request (the server refuses more than 1024 in one)


class ScoreServerError(RuntimeError):
    """The server refused or failed a request; the message is its one-line answer."""


def _text(value: Any) -> str:
    """A prompt or completion as text: a string as is, chat messages as their contents joined by blank lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return "\n\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in value)
    return str(value)


def _token(token: str | None) -> str:
    if token:
        return token
    if os.environ.get("FRACTAL_SCORES_TOKEN"):
        return os.environ["FRACTAL_SCORES_TOKEN"].strip()
    path = os.environ.get("FRACTAL_SCORES_TOKEN_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    raise ScoreServerError("no token: set FRACTAL_SCORES_TOKEN (printed by `fractal serve-scores`)")


def score(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    url: str | None = None,
    token: str | None = None,
    timeout_s: float = 120.0,
) -> list[dict[str, Any]]:
    """The server's answer for each completion (in order): ``sentences``, ``offsets``, ``sentence_scores``,
    ``response_score`` and ``model`` (the model id and version that scored it)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    base = (url or os.environ.get("FRACTAL_SCORES_URL") or DEFAULT_URL).rstrip("/")
    headers = {"Authorization": f"Bearer {_token(token)}", "Content-Type": "application/json"}
    out: list[dict[str, Any]] = []
    for start in range(0, len(completions), CHUNK):
        items = [
            {"context": _text(p), "text": _text(c)}
            for p, c in zip(prompts[start : start + CHUNK], completions[start : start + CHUNK], strict=True)
        ]
        body = json.dumps({"responses": items}).encode("utf-8")
        request = urllib.request.Request(base + PATH, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                reply = json.loads(answer.read())
        except urllib.error.HTTPError as err:
            detail = json.loads(err.read() or b"{}")
            where = f"{detail.get('field')}: " if detail.get("field") else ""
            raise ScoreServerError(f"HTTP {err.code}: {where}{detail.get('error', err.reason)}") from None
        out += [{**result, "model": reply["model"]} for result in reply["results"]]
    return out


def step_rewards(
    prompts: Sequence[Any], completions: Sequence[Any], *, label_is_error: bool = True, **kwargs: Any
) -> list[list[float]]:
    """One reward per step of each completion (steps as the server segments them, in order)."""
    options = {k: kwargs[k] for k in ("url", "token") if k in kwargs}
    results = score(prompts, completions, **options)
    flip = 1.0 if label_is_error else 0.0
    return [[abs(flip - s) for s in r["sentence_scores"]] for r in results]


def response_rewards(
    prompts: Sequence[Any], completions: Sequence[Any], *, label_is_error: bool = True, **kwargs: Any
) -> list[float]:
    """One reward per completion (the response score under the model's aggregation), the shape TRL's
    ``reward_funcs`` expect. Extra keyword arguments TRL passes (dataset columns) are ignored."""
    options = {k: kwargs[k] for k in ("url", "token") if k in kwargs}
    results = score(prompts, completions, **options)
    flip = 1.0 if label_is_error else 0.0
    return [abs(flip - r["response_score"]) for r in results]


if __name__ == "__main__":
    import sys

    question = "A shop sells 3 pens for 2 dollars. How much do 12 pens cost?"
    answer = "Step 1: 12 pens are 4 groups of 3 pens.\nStep 2: Each group costs 2 dollars.\nStep 3: So 12 pens cost 9 dollars."
    try:
        print(step_rewards([question], [answer]))
    except (ScoreServerError, OSError) as err:
        sys.exit(f"error: {err}")
