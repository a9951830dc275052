"""Review actions as plain functions over the store (no Streamlit): what the Review page's keys and buttons do.

A correction is first *proposed*: the labels it would leave are checked against the response label
(``fractal_core.mil.semantics.check_consistency``); a consistent one is stored at once, a contradicting one comes back with
the warning so the page can ask before storing it anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy import Engine

from db import repository as repo
from db.models import GOLD_SOURCES
from db.rows import LabelConflict, ModelVersionRow, ResponseDetail, SaveResult
from db.sources import HUMAN, MODEL
from fractal_core.data.records import top_level
from fractal_core.mil import reviewer
from fractal_core.mil.semantics import check_consistency

HUMAN_SOURCE = HUMAN
"""Source of a label a person set (a key, "rest are fine")."""
MODEL_SOURCE = MODEL
"""Source of a label accepted from the model (N): the model's guess, confirmed by the accepting user; never
gold."""


@dataclass(frozen=True)
class Proposal:
    """Labels an action would store for one response, and the MIL warning they would cause (None if fine)."""

    response_id: int
    labels: dict[int, int | None]  # sentence id -> new label (None clears)
    warning: str | None
    source: str = HUMAN_SOURCE
    # sentence id -> the label version the view showed (stale-view check); None: no check
    expected: dict[int, int | None] | None = None


def gold_labels(detail: ResponseDetail) -> list[int | None]:
    """Current gold-source label per sentence (imported labels are the file's, not an annotator's)."""
    return [s.label if s.label_source in GOLD_SOURCES else None for s in detail.sentences]


def propose(
    detail: ResponseDetail, changes: Mapping[int, int | None], *, source: str = HUMAN_SOURCE
) -> Proposal:
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
    return list(range(top_level(label_kind, max_label) + 1))


def entered_labels(detail: ResponseDetail) -> np.ndarray:
    """The labels people entered, as the reviewer view reads them (N,): the level, NaN where unlabelled."""
    return np.array([np.nan if v is None else float(v) for v in gold_labels(detail)], dtype=np.float64)


def _scored(detail: ResponseDetail, *, view: bool = False) -> np.ndarray | None:
    """The stored scores (N,), or with ``view`` what the given-label view reads (``SentenceRow.view_score``);
    None when a sentence is unscored."""
    scores = [s.view_score if view else s.score for s in detail.sentences]
    if not scores or any(v is None for v in scores):
        return None
    return np.asarray(scores, dtype=np.float64)


def fine_level(aggregation: str, levels: list[int]) -> int:
    """The level "rest are fine" gives: 0 where a positive sentence is a problem, the top level where it is
    good (``min`` responses)."""
    return levels[0] if reviewer.problem_is_positive(aggregation) else levels[-1]


@dataclass(frozen=True)
class FirstErrorRule:
    """How the F key picks its sentence: the rule stored with the active model version (chosen on valid when
    it was trained) and, for ``calibrated_mode``, its Platt map."""

    rule: str = reviewer.DEFAULT_FIRST_ERROR_RULE
    calibration: tuple[float, float] | None = None


def first_error_rule(model: ModelVersionRow | None) -> FirstErrorRule:
    """The F key's rule from the model version's metrics (``first_error_rule``, and the Platt map in
    ``first_error_rule_figures``); the library's default when the version stores none."""
    metrics = {} if model is None else model.metrics
    rule = metrics.get("first_error_rule") or reviewer.DEFAULT_FIRST_ERROR_RULE
    calibration = (metrics.get("first_error_rule_figures") or {}).get("calibration")
    pair = (float(calibration[0]), float(calibration[1])) if calibration else None
    return FirstErrorRule(str(rule), pair)


def first_error(detail: ResponseDetail, *, rule: FirstErrorRule, levels: int = 2) -> int | None:
    """Position of the sentence the F key jumps to (``reviewer.pick_first_error``), or None (unscored, a
    ``mean`` response, or a label that says there is no problem)."""
    scores = _scored(detail)
    if scores is None or detail.aggregation == "mean":
        return None
    return reviewer.pick_first_error(
        scores,
        entered_labels(detail),
        detail.response_label,
        aggregation=detail.aggregation,
        rule=rule.rule,
        calibration=rule.calibration,
        n_levels=levels,
    )


def propose_accept_rest(detail: ResponseDetail, *, levels: int = 2) -> Proposal:
    """N: every sentence without a label takes the label ``reviewer.accept_rest`` gives it from the reviewer
    view (given the response label and the labels entered), stored with source ``model``. Nothing for an
    unscored response."""
    scores = _scored(detail, view=True)
    if scores is None:
        return Proposal(detail.id, {}, None, MODEL_SOURCE)
    filled = reviewer.accept_rest(
        scores, entered_labels(detail), detail.response_label, aggregation=detail.aggregation, n_levels=levels
    )
    current = gold_labels(detail)
    changes = {
        s.id: int(filled[i])
        for i, (s, lab) in enumerate(zip(detail.sentences, current, strict=True))
        if lab is None and filled[i] >= 0  # -1: the view leaves it to a person
    }
    return propose(detail, changes, source=MODEL_SOURCE)


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


def next_position(index: int, total: int, *, still_listed: bool) -> int:
    """Index in the filtered list after leaving the response at ``index``.

    When the response dropped out of the list (e.g. the "unlabelled" filter after labelling it), the next
    response has moved up to ``index``; otherwise it is at ``index + 1``. Clamped to the list.
    """
    nxt = index + 1 if still_listed else index
    return max(0, min(nxt, max(total - 1, 0)))


def unscored_if_stale(detail: ResponseDetail) -> ResponseDetail:
    """The response without scores while its split has none for every sentence (the raw-less, uncoloured view):
    old scores must not colour a split they were not computed for."""
    if not detail.scores_stale:
        return detail
    sentences = [replace(s, score=None, uncertainty=None) for s in detail.sentences]
    return replace(detail, sentences=sentences, score=None, uncertainty=None, disagreement=None)


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


# ------------------------------------------------------------------------------------------- navigation

NAV_KEY = "review"
"""The one session key the Review page keeps its :class:`ReviewNav` under."""


@dataclass
class FollowedQueue:
    """A list of responses opened from another page (the Gold queue): S / N / P move along it."""

    name: str
    ids: list[int]


@dataclass
class Question:
    """A change the browser sent that contradicts the response label: parked (nothing stored) until the user
    answers "Store anyway?" for exactly this change."""

    event_id: int
    response_id: int
    warning: str


@dataclass
class Conflict:
    """A change refused because someone else changed these labels after the user's view was read."""

    event_id: int
    response_id: int
    conflicts: list[LabelConflict]


@dataclass
class ReviewNav:
    """Where the reviewer is: the filtered list and position in it, the open response, the sentence cursor, the
    queue being followed, and the question or conflict a change is waiting on. Every key or button of the page
    is one method here; the page only lays out widgets and calls them."""

    index: int = 0  # 0-based position in the filtered list
    response_id: int | None = None  # the open response; stays open when a change drops it from the list
    focus: int = 0  # sentence cursor (0-based)
    filters: dict[str, object] | None = None
    queue: FollowedQueue | None = None
    link_read: bool = False  # the URL was read (once per session: a reload or a shared link)
    link_response: int | None = None  # the response a link named, until it is found (or said missing)
    link_index: int | None = None  # the position a link named, until it is checked against the list
    acked: int = 0  # the last browser label event stored or answered (events arrive numbered, in order)
    question: Question | None = None
    conflict: Conflict | None = None
    advance: bool = False  # the last change was "save & next" (N) and is stored: move on
    moving: int = 0  # the browser asked for the next (+1) or previous (-1) response
    batch: int = 0  # the last batch (or move) the browser sent that this session answered
    refused: str | None = None  # why the last change was refused for good (shown once)

    # ------------------------------------------------------------------ the list
    def set_filters(self, filters: dict[str, object]) -> None:
        """New filters start at the top of the new list (not on the first run: a link's position wins)."""
        if filters == self.filters:
            return
        if self.filters is not None:
            self.index, self.response_id, self.queue = 0, None, None
        self.filters = dict(filters)

    def read_link(self, response: str, position: str) -> str | None:
        """On a session's first run, come back to the response and position in the URL. Returns a message
        when the link's text is not a response number (the caller escapes it)."""
        if self.link_read:
            return None
        self.link_read = True
        if position.isdigit():
            self.index = self.link_index = int(position)
        if response.isdigit():
            self.response_id = self.link_response = int(response)
        elif response:
            return f"The link names response {response!r}, which is not a response number."
        return None

    def clamp(self, total: int) -> str | None:
        """Keep the position inside a list of ``total`` (> 0) responses; says so when a link asked for a
        position past its end."""
        asked, self.link_index = self.link_index, None
        if self.index < total:
            return None
        self.index = total - 1
        if asked is None:
            return None
        return (
            f"The link asks for position {asked + 1}, which is out of range: this list has "
            f"{total} response{'s' if total != 1 else ''}. Showing position {total}."
        )

    def locate(self, position: int | None) -> None:
        """The position of the linked response in the list (None: not in it; the position stays)."""
        if position is not None:
            self.index = position

    def open_position(self, ids_on_page: list[int], page_size: int) -> int:
        """The response to show: the open one, else the one at the position. Returns its id."""
        if self.response_id is None:
            offset = self.index % page_size
            self.response_id = ids_on_page[offset] if offset < len(ids_on_page) else ids_on_page[0]
        return self.response_id

    def go_to(self, index: int, total: int) -> None:
        """Open the response at ``index`` of the list (and stop following a queue)."""
        self.index = max(0, min(index, total - 1))
        self.response_id, self.queue, self.focus = None, None, 0
        self.clear_prompts()

    def shown(self) -> None:
        """The open response was found and shown: a link's request is settled."""
        self.link_response = None

    def missing(self, total: int) -> bool:
        """The open response does not exist here (deleted, or another store): back to the top of the list.
        True when a link named it (the page says so)."""
        from_link = self.link_response is not None and self.link_response == self.response_id
        self.link_response = None
        self.go_to(0, total)
        return from_link

    # ------------------------------------------------------------------ queues
    def follow_queue(self, name: str, ids: list[int], response_id: int) -> None:
        """Open ``response_id`` from a queue another page shows; S / N / P then follow that queue."""
        self.link_read = True  # arriving from a page, not from a link
        self.queue = FollowedQueue(name, list(ids))
        self.response_id, self.focus = response_id, 0
        self.clear_prompts()

    def check_queue(self) -> None:
        """Stop following the queue when the open response is not in it."""
        if self.queue is not None and self.response_id not in self.queue.ids:
            self.queue = None

    def step(self, delta: int, total: int) -> str | None:
        """Next (+1) or previous (-1) response, along the followed queue, else along the list. Returns a
        message at the end of a queue."""
        self.moving = 0
        if self.queue is None:
            self.go_to(self.index + delta, total)
            return None
        ids = self.queue.ids
        pos = ids.index(self.response_id) + delta if self.response_id in ids else -1
        if 0 <= pos < len(ids):
            self.response_id, self.focus = ids[pos], 0
            self.clear_prompts()
            return None
        return f"That was the {'last' if delta > 0 else 'first'} response of the {self.queue.name}."

    def after_save(self, total: int, *, still_listed: bool) -> str | None:
        """Save & next: along the queue, else to the next position of the (possibly shrunk) list."""
        self.advance = False
        self.moving = 0
        if self.queue is not None:
            return self.step(1, total)
        self.go_to(next_position(self.index, total, still_listed=still_listed), total)
        return None

    def position(self, total: int) -> tuple[str, str | None]:
        """The "Position" the page shows, and which list it counts in."""
        if self.queue is not None and self.response_id in self.queue.ids:
            return f"{self.queue.ids.index(self.response_id) + 1} / {len(self.queue.ids)}", self.queue.name
        return f"{self.index + 1} / {total}", None

    # ------------------------------------------------------------------ prompts
    def clear_prompts(self) -> None:
        self.question = None
        self.conflict = None


def find_position(
    engine: Engine,
    dataset_id: int,
    response_id: int,
    filters: Mapping[str, object],
    *,
    page_size: int = 500,
    max_rows: int = 20_000,
) -> int | None:
    """The 0-based position of ``response_id`` in the dataset's list under ``filters`` (the Review page's
    sort and filters), or None when it is not in the first ``max_rows`` of it (a link then opens the
    response without a position in the list)."""
    for page in range(max(1, max_rows // page_size)):
        listing = repo.list_responses(engine, dataset_id, page=page, page_size=page_size, **filters)  # type: ignore[arg-type]
        for offset, row in enumerate(listing.rows):
            if row.id == response_id:
                return page * page_size + offset
        if (page + 1) * page_size >= listing.total:
            return None
    return None
