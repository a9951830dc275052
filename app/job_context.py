"""Progress, log and cancel plumbing of one running job (:class:`JobContext`), shared by every job kind."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine

from db import repository as repo


class JobCancelled(Exception):
    """The user asked to stop the job (raised from the progress callback inside training)."""


@dataclass
class JobContext:
    """Progress, log and cancel plumbing for one running job (throttled so training is not slowed by writes)."""

    engine: Engine
    job_id: int
    cancel_flag: Callable[[], bool] = lambda: False
    min_interval_s: float = 0.5
    _last_write: float = 0.0
    _last_stage: str = ""
    _last_log: float = 0.0
    _stages_seen: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        repo.append_log(self.engine, self.job_id, line)

    def set(self, fraction: float, message: str, *, force: bool = False) -> None:
        """Record overall progress in [0, 1]; raises :class:`JobCancelled` when a cancel was requested."""
        now = time.monotonic()
        if force or now - self._last_write >= self.min_interval_s:
            self._last_write = now
            if repo.update_progress(self.engine, self.job_id, fraction, message):
                raise JobCancelled("cancelled by the user")
        if self.cancel_flag():
            raise JobCancelled("cancelled by the user")

    def training_callback(
        self, stages: Sequence[str], lo: float, hi: float
    ) -> Callable[[str, float, str], None]:
        """A training progress callback mapping its stages onto [lo, hi] of the overall bar.

        ``stages``: the training stages the job will run (``fractal_core.fitting.registry.training_stages``); the
        embedding step before them takes a fixed share, or all of it for a training-free method.
        """
        n_stages = len(stages)
        embed_share = 0.15 if n_stages else 1.0

        def callback(stage: str, fraction: float, message: str) -> None:
            now = time.monotonic()
            if stage != self._last_stage:
                self._last_stage = stage
                if stage != "embed":
                    self._stages_seen.append(stage)
                self._last_log = now
                self.log(f"[{stage}] {message}")
            elif now - self._last_log >= 1.0:
                # Epoch lines for the live log, at most one a second so the log stays readable.
                self._last_log = now
                self.log(f"[{stage}] {message}")
            if stage == "embed":
                overall = embed_share * fraction
            else:
                done = max(0, len(self._stages_seen) - 1)
                per = (1.0 - embed_share) / max(n_stages, len(self._stages_seen))
                overall = embed_share + per * (done + min(max(fraction, 0.0), 1.0))
            self.set(lo + (hi - lo) * min(overall, 1.0), f"{stage}: {message}")

        return callback
