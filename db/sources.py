"""Where a stored label came from: the one vocabulary every label write, reader and export uses.

Every current label and every history event carries one source and an annotator:

- ``imported``: came with an ingested file; the annotator is whoever ingested it.
- ``imported_gold``: the same, ingested with ``--labels-as gold`` (whoever ingests vouches for the file's
  labels): gold for training, yet still told apart from labels a person set in the tool.
- ``human``: a person set it in the tool; the annotator is that person.
- ``adjudicated``: a reviewer's decision on an overlap response; the annotator is the reviewer.
- ``model``: the model's label, accepted by a person; the annotator is the accepting user. Never gold.

A sentence without a label has no source (exports write ``"none"``).
"""

from __future__ import annotations

IMPORTED = "imported"
IMPORTED_GOLD = "imported_gold"
HUMAN = "human"
ADJUDICATED = "adjudicated"
MODEL = "model"
NONE = "none"  # exports only: a sentence without a label

LABEL_SOURCES: tuple[str, ...] = (HUMAN, ADJUDICATED, MODEL, IMPORTED, IMPORTED_GOLD)
# Count as gold for training (hybrid prior), the gold budget and the consistency check.
GOLD_SOURCES: tuple[str, ...] = (HUMAN, ADJUDICATED, IMPORTED_GOLD)
# Set by a person in the tool: what a human-only export keeps and what agreement counts.
HUMAN_SOURCES: tuple[str, ...] = (HUMAN, ADJUDICATED)


def is_gold(source: str | None) -> bool:
    """Whether a label of this source counts as gold (training, gold budget)."""
    return source in GOLD_SOURCES
