"""Label changes the Review page's browser component sends, stored in order (no Streamlit here).

The browser numbers every change (an increasing event id) and sends the ones not yet confirmed, oldest first,
one batch at a time. :func:`apply_batch` stores them one by one, each as one action (one undo reverts it),
through the same proposal, consistency question and stale-view check as any save, and stops at the first
change that needs the user: a contradiction of the response label (nothing stored until "Store anyway?" is
answered for that very change) or someone else's newer label (nothing stored; their label is shown). The
answer says which event was the last one stored, so the browser shows "saved" only for confirmed changes.

:func:`store_batch` is what a page does with a batch (Review and Pairs alike): the user's view of each response
(:func:`labelling_view`), every save and undo through ``app.actions`` as that user.

A batch sent twice (the page reloaded before the confirmation arrived, and the browser's outbox sends it
again) stores nothing twice: events up to the last confirmed one are skipped, and a label that is already
what the event sets is no conflict and no new change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Engine

from app import actions, review
from db import repository as repo
from db import team
from db.accounts import PermissionDenied
from db.rows import ResponseDetail, SaveResult, UndoResult, UserRow
from fractal_core.errors import InputError

EventKind = Literal["set", "accept_rest", "undo"]
MAX_EVENTS = 500
"""A batch holds at most this many events (a browser sends far fewer; more is not a browser)."""


@dataclass(frozen=True)
class LabelEvent:
    """One change the user made in the browser.

    ``set``: the ``labels`` (sentence id -> level, None clears) as a person's labels, checked against the
    label ``versions`` the user's view showed; ``accept_rest`` (N): the reviewer view's labels for every
    unlabelled sentence, then the next response; ``undo``: the user's last change in the response. ``force``
    is the user's "store anyway" to the contradiction this very event raised.
    """

    id: int
    response_id: int
    kind: EventKind
    labels: dict[int, int | None] = field(default_factory=dict)
    versions: dict[int, int | None] = field(default_factory=dict)
    force: bool = False


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an integer, got {value!r}", field=name)
    return value


def _opt_int(value: Any, name: str) -> int | None:
    return None if value is None else _int(value, name)


def parse_batch(raw: Any) -> list[LabelEvent]:
    """The events of a batch the browser sent, checked (it is input like any other); in event-id order."""
    if not isinstance(raw, dict) or not isinstance(raw.get("events"), list):
        raise InputError("a label batch is an object with an events list", field="events")
    items = raw["events"]
    if len(items) > MAX_EVENTS:
        raise InputError(f"a label batch holds at most {MAX_EVENTS} events", field="events")
    events = []
    for item in items:
        if not isinstance(item, dict):
            raise InputError("each label event is an object", field="events")
        kind = item.get("kind")
        if kind not in ("set", "accept_rest", "undo"):
            raise InputError(f"unknown label event kind {kind!r}", field="kind")
        labels_raw, versions_raw = item.get("labels") or {}, item.get("versions") or {}
        if not isinstance(labels_raw, dict) or not isinstance(versions_raw, dict):
            raise InputError("labels and versions map sentence ids to values", field="labels")
        events.append(
            LabelEvent(
                id=_int(item.get("id"), "id"),
                response_id=_int(item.get("response_id"), "response_id"),
                kind=kind,
                labels={
                    int(_int(int(k), "sentence_id")): _opt_int(v, "label") for k, v in labels_raw.items()
                },
                versions={int(k): _opt_int(v, "version") for k, v in versions_raw.items()},
                force=item.get("force") is True,
            )
        )
    return sorted(events, key=lambda e: e.id)


@dataclass
class BatchOutcome:
    """What happened to a batch: the last event id stored (or settled), the change waiting on the user (a
    question or a conflict), a refusal to show, how many labels changed, and whether to move on (N)."""

    acked: int
    question: review.Question | None = None
    conflict: review.Conflict | None = None
    refused: str | None = None
    n_changed: int = 0
    advance: bool = False
    undone: int | None = None


SaveFn = Callable[[review.Proposal, bool], SaveResult]
LoadFn = Callable[[int], ResponseDetail]
UndoFn = Callable[[int], UndoResult | None]


def _proposal(event: LabelEvent, detail: ResponseDetail, levels: int) -> review.Proposal:
    if event.kind == "accept_rest":
        proposal = review.propose_accept_rest(detail, levels=levels)
    else:
        proposal = review.propose(detail, event.labels)
    # The versions the user SAW when pressing the key, not the ones re-read now: a label someone changed in
    # between is a conflict, never silently overwritten.
    return review.as_seen(proposal, event.versions)


def apply_batch(
    events: list[LabelEvent],
    *,
    acked: int,
    load: LoadFn,
    save: SaveFn,
    undo: UndoFn,
    levels: int = 2,
) -> BatchOutcome:
    """Store ``events`` newer than ``acked`` in order, each as one action; stop at the first that needs the
    user. ``load`` reads a response as the user's view shows it, ``save(proposal, finished)`` stores one
    proposal as the user (role and layer checked there), ``undo`` reverts the user's last change."""
    out = BatchOutcome(acked=acked)
    for event in events:
        if event.id <= out.acked:
            continue  # sent again after a reload: already stored
        if event.kind == "undo":
            undone = undo(event.response_id)
            out.undone = 0 if undone is None else len(undone.reverted)
            out.acked = event.id
            continue
        detail = load(event.response_id)
        if any(sid not in {s.id for s in detail.sentences} for sid in event.labels):
            out.refused = "that change names sentences of another response"
            out.acked = event.id
            return out
        proposal = _proposal(event, detail, levels)
        if proposal.warning and not event.force:
            out.question = review.Question(event.id, event.response_id, proposal.warning)
            return out
        try:
            result = save(proposal, event.kind == "accept_rest")
        except repo.StaleLabelError as exc:
            out.conflict = review.Conflict(event.id, event.response_id, exc.conflicts)
            return out
        except (PermissionDenied, InputError) as exc:
            # Refused for good (role, assignment, a level outside the dataset): nothing stored, and the
            # browser drops the change and says why.
            out.refused = str(exc)
            out.acked = event.id
            return out
        out.n_changed += len(result.changes)
        out.acked = event.id
        if event.kind == "accept_rest":
            out.advance = True
            return out
    return out


def labelling_view(engine: Engine, user: UserRow, response_id: int) -> ResponseDetail:
    """A response as ``user``'s labels go: the shared view, or their own labels on an overlap response;
    uncoloured while a changed split has no scores yet."""
    detail = review.unscored_if_stale(repo.get_response(engine, response_id))
    if actions.label_layer(engine, user, detail.id) == "own":
        detail = review.own_view(detail, team.own_labels(engine, detail.id, user.name), user.name)
    return detail


def store_batch(raw: Any, nav: review.ReviewNav, *, engine: Engine, user: UserRow, levels: int) -> str | None:
    """Store a batch the browser sent (``raw``, unchecked) as ``user``, in order, and record the answer on
    ``nav`` (last event stored, the question or conflict waiting, a refusal, whether N asks to move on).
    Returns what to tell the user about an undo, else None."""
    nav.clear_prompts()
    nav.refused = None
    try:
        events = parse_batch(raw)
    except InputError as exc:
        nav.refused = str(exc)
        return None
    seq = raw.get("seq", 0)
    nav.batch = max(nav.batch, seq if isinstance(seq, int) and not isinstance(seq, bool) else 0)
    out = apply_batch(
        events,
        acked=nav.acked,
        load=lambda response_id: labelling_view(engine, user, response_id),
        save=lambda proposal, finished: actions.save_labels(engine, user, proposal, finished=finished),
        undo=lambda response_id: actions.undo(engine, user, response_id),
        levels=levels,
    )
    nav.acked, nav.question, nav.conflict, nav.refused = out.acked, out.question, out.conflict, out.refused
    nav.advance = out.advance
    if out.undone is None:
        return None
    return "Nothing to undo." if not out.undone else f"Undid {out.undone} change(s)."
