"""``fractal serve-scores``' batching: the requests that arrive together scored in one forward pass."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fractal_core.data.records import ResponseRecord
    from fractal_core.fitting.step_scores import ScoredResponse

log = logging.getLogger("fractal.serve_scores")


@dataclass(eq=False)
class _Pending:
    records: list[ResponseRecord]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[ScoredResponse] | None = None
    error: BaseException | None = None


class ScoreBatcher:
    """Scores the requests that arrive together in one call of ``score``.

    One thread takes the oldest waiting request, then keeps taking requests for up to ``max_wait_s`` or until
    ``max_batch`` responses are gathered (a request is never split: one larger than ``max_batch`` is a batch of
    its own), scores them all at once and hands each request its own results.
    """

    def __init__(
        self,
        score: Callable[[list[ResponseRecord]], list[ScoredResponse]],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
    ) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self._score = score
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._held: _Pending | None = None  # taken from the queue but left for the next batch (too big)
        self._thread = threading.Thread(target=self._loop, name="score-batcher", daemon=True)
        self._thread.start()

    def submit(self, records: list[ResponseRecord], *, timeout_s: float = 120.0) -> list[ScoredResponse]:
        """Score ``records`` in the next batch; raises what scoring raised, or TimeoutError."""
        pending = _Pending(records)
        self._queue.put(pending)
        if not pending.done.wait(timeout_s):
            raise TimeoutError(f"not scored within {timeout_s:g}s")
        if pending.error is not None:
            raise pending.error
        assert pending.results is not None
        return pending.results

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _next(self, timeout: float | None) -> _Pending | None:
        if self._held is not None:
            held, self._held = self._held, None
            return held
        return self._queue.get(timeout=timeout)

    def _loop(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            batch, size = [first], len(first.records)
            deadline = time.monotonic() + self.max_wait_s
            stop = False
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._next(remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if size + len(item.records) > self.max_batch:
                    self._held = item
                    break
                batch.append(item)
                size += len(item.records)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[_Pending]) -> None:
        records = [r for pending in batch for r in pending.records]
        try:
            results = self._score(records)
        except Exception as exc:  # every waiting request gets the failure; the thread lives on
            log.exception("scoring a batch of %d responses failed", len(records))
            for pending in batch:
                pending.error = exc
                pending.done.set()
            return
        start = 0
        for pending in batch:
            pending.results = results[start : start + len(pending.records)]
            start += len(pending.records)
            pending.done.set()
