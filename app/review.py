"""Review actions as plain functions over the store (no Streamlit): what the Review page's keys and buttons do.

A correction is first *proposed*: the labels it would leave are checked against the response label
(``fractal_core.mil.semantics.check_consistency``); a consistent one is stored at once, a contradicting one comes back with
the warning so the page can ask before storing it anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy import Engine

from db import repository as repo
from db.models import GOLD_SOURCES
from db.rows import LabelConflict, ResponseDetail, SaveResult
from db.sources import HUMAN, MODEL
from fractal_core.mil.semantics import check_consistency

POSITIVE_THRESHOLD = 0.5
"""A score at or above this becomes label 1 when the annotator accepts the model's remaining labels."""


@dataclass(frozen=True)
class Proposal:
    """Labels an action would store for one response, and the MIL warning they would cause (None if fine)."""

    response_id: int
    labels: dict[int, int | None]  # sentence id -> new label (None clears)
    warning: str | None
    source: str = HUMAN
    # sentence id -> the label version the view showed (stale-view check); None: no check
    expected: dict[int, int | None] | None = None


def gold_labels(detail: ResponseDetail) -> list[int | None]:
    """Current gold-source label per sentence (imported labels are the file's, not an annotator's)."""
    return [s.label if s.label_source in GOLD_SOURCES else None for s in detail.sentences]


def propose(detail: ResponseDetail, changes: Mapping[int, int | None], *, source: str = HUMAN) -> Proposal:
    """Check the labelling ``changes`` (sentence id -> label) would leave, without storing anything."""
    after = {s.id: lab for s, lab in zip(detail.sentences, gold_labels(detail), strict=True)}
    unknown = set(changes) - set(after)
    if unknown:
        raise ValueError(f"sentences {sorted(unknown)} are not in response {detail.id}")
    after.update(changes)
    warning = check_consistency(
        detail.aggregation, detail.response_label, [after[s.id] for s in detail.sentences]
    )
    versions = {s.id: s.label_version for s in detail.sentences}
    return Proposal(detail.id, dict(changes), warning, source, {sid: versions[sid] for sid in changes})


def label_levels(label_kind: str, max_label: float) -> list[int]:
    """The sentence labels an annotator can set: 0/1, or 0..top for ordinal datasets."""
    return list(range(int(max_label) + 1)) if label_kind == "ordinal" else [0, 1]


def propose_accept_rest(detail: ResponseDetail) -> Proposal:
    """Confirm the response: every sentence without a gold label takes the model's label (score >= 0.5 -> 1)
    as ``model`` (accepted from the model by the annotator: never gold). Sentences without a score stay unlabelled, and so does every sentence of an ordinal
    response: a score is P(level >= 1), which does not say which level."""
    if detail.label_kind == "ordinal":
        return Proposal(detail.id, {}, None, MODEL)
    current = gold_labels(detail)
    changes = {
        s.id: int(s.score >= POSITIVE_THRESHOLD)
        for s, lab in zip(detail.sentences, current, strict=True)
        if lab is None and s.score is not None
    }
    return propose(detail, changes, source=MODEL)


def likely_first_error(detail: ResponseDetail) -> tuple[int, float] | None:
    """(position, probability) of the response's most likely first problem sentence given its label, read from
    the first-error distribution (``fractal_core.mil.posterior``); None when it has none to show: not a ``max``
    response, labelled 0, or not (fully) scored."""
    scores = [s.score for s in detail.sentences]
    if detail.aggregation != "max" or not scores or any(v is None for v in scores):
        return None
    import torch

    from fractal_core.mil.posterior import first_error_from_scores

    index, probability = first_error_from_scores(
        torch.tensor(scores, dtype=torch.float64),
        torch.zeros(len(scores), dtype=torch.long),
        torch.tensor([float(detail.response_label)], dtype=torch.float64),
    )
    if int(index[0]) < 0:
        return None
    return int(index[0]), float(probability[0])


def store(engine: Engine, proposal: Proposal, annotator: str) -> SaveResult:
    """Store a proposal as one action (one undo reverts it)."""
    if not proposal.labels:
        return SaveResult([], proposal.warning)
    return repo.record_labels(
        engine,
        proposal.response_id,
        proposal.labels,
        annotator,
        source=proposal.source,
        expected=proposal.expected,
    )


def as_seen(proposal: Proposal, seen: Mapping[int, int | None] | None) -> Proposal:
    """The proposal checked against the label versions the user last SAW (the page as rendered before the
    click), not the ones re-read for this run: a label that changed in between is a conflict."""
    if seen is None or proposal.expected is None:
        return proposal
    return replace(proposal, expected={sid: seen.get(sid, v) for sid, v in proposal.expected.items()})


def replace_theirs(proposal: Proposal, conflicts: list[LabelConflict]) -> Proposal:
    """The same proposal, made knowingly over the labels in ``conflicts`` (their current versions)."""
    expected = dict(proposal.expected or {})
    expected.update({c.sentence_id: c.version for c in conflicts})
    return replace(proposal, expected=expected)


def next_position(index: int, total: int, *, still_listed: bool) -> int:
    """Index in the filtered list after leaving the response at ``index``.

    When the response dropped out of the list (e.g. the "unlabelled" filter after labelling it), the next
    response has moved up to ``index``; otherwise it is at ``index + 1``. Clamped to the list.
    """
    nxt = index + 1 if still_listed else index
    return max(0, min(nxt, max(total - 1, 0)))


def own_view(detail: ResponseDetail, own: Mapping[int, int], annotator: str) -> ResponseDetail:
    """The response as an overlap annotator sees it: their own labels (kept apart from everyone else's until a
    reviewer adjudicates) in place of the shared gold view."""
    sentences = [
        replace(
            s,
            label=own.get(s.id),
            label_source=HUMAN if s.id in own else None,
            annotator=annotator if s.id in own else None,
            labelled_at=None,
            label_version=None,
        )
        for s in detail.sentences
    ]
    labels = [own.get(s.id) for s in detail.sentences]
    warning = check_consistency(detail.aggregation, detail.response_label, labels)
    return replace(detail, sentences=sentences, consistency_warning=warning)
