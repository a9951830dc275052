"""The in-memory form of one response (a *bag*) in the shared JSONL schema.

Schema (one JSON object per line):
``id``, ``context``, ``sentences`` (list[str], optional when ``text`` is given), ``sentence_labels``
(list[int | None], optional), ``response_label`` (int or float), ``aggregation`` ("max" | "min" | "mean"),
``task`` (optional), ``meta`` (optional object). Raw responses give ``text`` instead of ``sentences`` and
are segmented on load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Aggregation = Literal["max", "min", "mean"]
AGGREGATIONS: tuple[str, ...] = ("max", "min", "mean")
LABEL_KINDS: tuple[str, ...] = ("binary", "ordinal", "proportion")

# Bounds every reader enforces (and the store's columns and CHECK constraints repeat), so that every engine
# accepts and refuses exactly the same input.
MAX_LABEL = 100
"""Highest label level: ordinal responses and sentences take integer levels 0..MAX_LABEL."""
MAX_ID_CHARS = 512
"""Longest response id."""
MAX_TASK_CHARS = 128
"""Longest task name."""
MAX_META_DEPTH = 32
"""Deepest nesting of lists and objects inside ``meta`` (and any JSON value in a file)."""


@dataclass(frozen=True, slots=True)
class Span:
    """A sentence or step: ``text == source[start:end]`` for the response text it came from."""

    start: int
    end: int
    text: str


@dataclass(slots=True)
class ResponseRecord:
    """One bag: a response, its sentences and its aggregate label.

    ``text`` is the response as the user gave it; when the input was pre-split, ``text`` is the sentences
    joined by a single space and ``spans`` index into that join. ``sentence_labels`` holds ``None`` for
    sentences without a gold label; it is ``None`` as a whole when no sentence is annotated.
    """

    id: str
    context: str
    text: str
    spans: list[Span]
    response_label: float
    aggregation: Aggregation = "max"
    sentence_labels: list[int | None] | None = None
    task: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sentences(self) -> list[str]:
        return [s.text for s in self.spans]
