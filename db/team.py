"""Team work on a dataset: assignment queues with overlap, each annotator's own labels of overlap responses,
agreement, adjudication, progress, guidelines and comments/flags.

- :func:`assign` puts every not yet assigned response of a dataset into annotators' queues: a seeded sample of
  ``overlap_fraction`` of them goes to ``overlap_k`` different annotators each, every other response to one,
  spread evenly. Nobody else (below reviewer) may label an assigned response.
- On an *overlap* response (two or more assignees) each assignee's labels are kept apart in ``annotations``
  (history: ``label_events`` in that annotator's layer, written by the one label path of
  :mod:`db.repository.labels`); the gold view (``current_labels``, what training uses) is set by a
  reviewer's :func:`adjudicate`, recorded with who and when in ``adjudications``. On other responses labels go
  straight to the gold view, as without a team.
- :func:`agreement` computes Krippendorff's alpha, Cohen's kappa per annotator pair and per-label agreement
  over the annotations with :mod:`fractal_core.evaluation.agreement` (vectorised).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Engine, case, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from db import repository as repo
from db.engine import run_read, run_write
from db.models import (
    NOTE_FLAGS,
    Adjudication,
    Annotation,
    Assignment,
    Dataset,
    LabelEvent,
    Response,
    ResponseNote,
    utcnow,
)
from db.rows import (
    AgreementReport,
    AssignSummary,
    DisagreementRow,
    LabelChange,
    NoteRow,
    PairAgreementRow,
    ProgressRow,
    SaveResult,
    UndoResult,
)
from db.sources import ADJUDICATED, HUMAN_SOURCES
from fractal_core.errors import InputError
from fractal_core.evaluation import agreement as stats

MAX_NOTE_CHARS = 2000
MAX_GUIDELINES_CHARS = 50_000


@dataclass(frozen=True, slots=True)
class TeamSettings:
    overlap_k: int  # annotators per overlap response
    overlap_fraction: float  # share of responses in the overlap sample, in [0, 1]
    guidelines: str  # Markdown written by an admin (untrusted text: render safely)


def _dataset(session: Session, dataset_id: int) -> Dataset:
    found = session.get(Dataset, dataset_id)
    if found is None:
        raise InputError(f"no dataset with id {dataset_id}", field="dataset")
    return found


def team_settings(engine: Engine, dataset_id: int) -> TeamSettings:
    def work(session: Session) -> TeamSettings:
        d = _dataset(session, dataset_id)
        return TeamSettings(int(d.overlap_k), float(d.overlap_fraction), d.guidelines or "")

    return run_read(engine, work)


def set_overlap(engine: Engine, dataset_id: int, k: int, fraction: float) -> TeamSettings:
    """ "k annotators for a sample of p% of responses" (k >= 1, fraction in [0, 1])."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10:
        raise InputError(f"annotators per overlap response must be 1..10, got {k!r}", field="overlap_k")
    if not 0.0 <= float(fraction) <= 1.0:
        raise InputError(f"overlap share must be in [0, 1], got {fraction!r}", field="overlap_fraction")

    def work(session: Session) -> None:
        d = _dataset(session, dataset_id)
        d.overlap_k = k
        d.overlap_fraction = float(fraction)

    run_write(engine, work)
    return team_settings(engine, dataset_id)


def set_guidelines(engine: Engine, dataset_id: int, text: str) -> TeamSettings:
    if len(text) > MAX_GUIDELINES_CHARS:
        raise InputError(f"guidelines are limited to {MAX_GUIDELINES_CHARS} characters", field="guidelines")

    def work(session: Session) -> None:
        _dataset(session, dataset_id).guidelines = text

    run_write(engine, work)
    return team_settings(engine, dataset_id)


# ------------------------------------------------------------------------------------------------ assignment


def assign(engine: Engine, dataset_id: int, annotators: Sequence[str], *, seed: int = 0) -> AssignSummary:
    """Queue every unassigned response of the dataset (see the module doc); returns what was assigned."""
    names = list(dict.fromkeys(a.strip() for a in annotators if a and a.strip()))
    if not names:
        raise InputError("choose at least one annotator", field="annotators")

    def work(session: Session) -> AssignSummary:
        d = _dataset(session, dataset_id)
        k = min(int(d.overlap_k), len(names))
        assigned = select(Assignment.response_id).where(Assignment.dataset_id == dataset_id)
        ids = np.array(
            session.scalars(
                select(Response.id)
                .where(Response.dataset_id == dataset_id, Response.id.not_in(assigned))
                .order_by(Response.id)
            ).all(),
            dtype=np.int64,
        )
        if not len(ids):
            return AssignSummary(0, 0, {})
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(ids))
        overlap = np.zeros(len(ids), dtype=bool)
        if k >= 2:
            overlap[order[: int(round(float(d.overlap_fraction) * len(ids)))]] = True
        per = np.where(overlap, k, 1)[order]  # (n,) annotators per response, in the shuffled order
        first_slot = np.cumsum(per) - per  # (n,)
        resp = np.repeat(ids[order], per)  # (slots,)
        within = np.arange(int(per.sum())) - np.repeat(first_slot, per)
        # Slot j of the whole run goes to annotator (offset + j) mod A: the load is even, and the k <= A
        # consecutive slots of one response are k different annotators.
        who = (int(rng.integers(len(names))) + np.repeat(first_slot, per) + within) % len(names)
        now = utcnow()
        rows = [
            {"dataset_id": dataset_id, "response_id": r, "annotator": names[a], "assigned_at": now}
            for r, a in zip(resp.tolist(), who.tolist(), strict=True)
        ]
        session.execute(insert(Assignment), rows)
        counts = np.bincount(who, minlength=len(names))
        return AssignSummary(
            n_responses=len(ids),
            n_overlap=int(overlap.sum()),
            per_annotator={n: int(c) for n, c in zip(names, counts.tolist(), strict=True)},
        )

    return run_write(engine, work)


def assignees(engine: Engine, response_id: int) -> list[str]:
    return run_read(
        engine,
        lambda s: list(
            s.scalars(
                select(Assignment.annotator)
                .where(Assignment.response_id == response_id)
                .order_by(Assignment.annotator)
            )
        ),
    )


def queue(engine: Engine, dataset_id: int, annotator: str, *, limit: int = 500) -> list[int]:
    """Response ids waiting in ``annotator``'s queue (assigned, not done), in id order."""
    return run_read(
        engine,
        lambda s: list(
            s.scalars(
                select(Assignment.response_id)
                .where(
                    Assignment.dataset_id == dataset_id,
                    Assignment.annotator == annotator,
                    Assignment.done_at.is_(None),
                )
                .order_by(Assignment.response_id)
                .limit(limit)
            )
        ),
    )


def mark_done(engine: Engine, response_id: int, annotator: str) -> None:
    run_write(
        engine,
        lambda s: s.execute(
            update(Assignment)
            .where(
                Assignment.response_id == response_id,
                Assignment.annotator == annotator,
                Assignment.done_at.is_(None),
            )
            .values(done_at=utcnow())
        ),
    )


# ------------------------------------------------------------------------------------------------ annotations


def own_labels(engine: Engine, response_id: int, annotator: str) -> dict[int, int]:
    """``annotator``'s own labels of an overlap response: sentence id -> label."""
    return run_read(
        engine,
        lambda s: {
            sid: lab
            for sid, lab in s.execute(
                select(Annotation.sentence_id, Annotation.label).where(
                    Annotation.response_id == response_id, Annotation.annotator == annotator
                )
            )
        },
    )


def annotations_by_annotator(engine: Engine, response_id: int) -> dict[str, dict[int, int]]:
    """Every annotator's own labels of a response: annotator -> {sentence id -> label}."""

    def work(session: Session) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = defaultdict(dict)
        for who, sid, lab in session.execute(
            select(Annotation.annotator, Annotation.sentence_id, Annotation.label).where(
                Annotation.response_id == response_id
            )
        ):
            out[who][sid] = lab
        return dict(out)

    return run_read(engine, work)


def record_annotations(
    engine: Engine, response_id: int, labels: Mapping[int, int | None], annotator: str
) -> SaveResult:
    """Store ``annotator``'s own labels of an overlap response (one action; :func:`undo_annotation` reverts
    it) through the one label path (:func:`db.repository.record_labels` with ``own=True``). The gold view is
    not touched: a reviewer's :func:`adjudicate` sets it."""
    return repo.record_labels(engine, response_id, labels, annotator, own=True)


def undo_annotation(engine: Engine, annotator: str, response_id: int) -> UndoResult | None:
    """Revert ``annotator``'s last not yet undone action on their own labels of a response (the one undo
    rule: sentences changed since are left alone)."""
    return repo.undo_last(engine, annotator, response_id, own=True)


def annotation_history(engine: Engine, response_id: int) -> list[LabelChange]:
    """Every change to annotators' own labels of a response, oldest first (source ``annotation``)."""
    return repo.label_history(engine, response_id=response_id, own=True)


# ------------------------------------------------------------------------------------------------ agreement


def _annotation_arrays(
    session: Session, dataset_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(units, coders, values, responses) as (n,) int64 arrays over a dataset's annotations, and coder names.

    One integer-only query per annotator (a handful), read straight from the driver's cursor: building 100k
    ORM rows and strings would cost more than all the statistics together."""
    conn = session.connection()
    names = sorted(
        conn.execute(
            select(Annotation.annotator).where(Annotation.dataset_id == dataset_id).distinct()
        ).scalars()
    )
    parts = []
    for code, name in enumerate(names):
        result = conn.execute(
            select(Annotation.sentence_id, Annotation.label, Annotation.response_id, literal(code)).where(
                Annotation.dataset_id == dataset_id, Annotation.annotator == name
            )
        )
        parts.append(np.array(result.cursor.fetchall(), dtype=np.int64).reshape(-1, 4))  # (n_a, 4)
        result.close()
    table = np.concatenate(parts) if parts else np.zeros((0, 4), dtype=np.int64)  # (n, 4)
    return table[:, 0], table[:, 3], table[:, 1], table[:, 2], names


def agreement(engine: Engine, dataset_id: int) -> AgreementReport:
    """Agreement over the annotators' own labels of the dataset's overlap responses."""

    def work(session: Session) -> AgreementReport:
        d = _dataset(session, dataset_id)
        units, coders, values, responses, names = _annotation_arrays(session, dataset_id)
        n_values = int(d.max_label) + 1 if d.label_kind == "ordinal" else 2
        metric: stats.Metric = "interval" if d.label_kind == "ordinal" else "nominal"
        found = stats.summarise(units, coders, values, n_values=n_values, metric=metric)
        return AgreementReport(
            dataset_id=dataset_id,
            n_labels=len(values),
            n_sentences=found.n_shared_units,
            n_responses=len(np.unique(responses[found.shared])),
            alpha=found.alpha,
            per_label={i: float(v) for i, v in enumerate(found.per_label.tolist())},
            pairs=[
                PairAgreementRow(names[p.coder_a], names[p.coder_b], p.n_units, p.kappa, p.percent)
                for p in found.pairs
            ],
        )

    return run_read(engine, work)


def disagreements(
    engine: Engine, dataset_id: int, *, include_adjudicated: bool = False
) -> list[DisagreementRow]:
    """Overlap responses with annotations from two or more annotators, those with differing labels first."""

    def work(session: Session) -> list[DisagreementRow]:
        rows = session.execute(
            select(
                Annotation.response_id, Annotation.sentence_id, Annotation.annotator, Annotation.label
            ).where(Annotation.dataset_id == dataset_id)
        ).all()
        by_response: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
        who: dict[int, set[str]] = defaultdict(set)
        for rid, sid, name, lab in rows:
            by_response[rid][sid].add(lab)
            who[rid].add(name)
        adjudicated = set(
            session.scalars(
                select(Adjudication.response_id).where(Adjudication.response_id.in_(list(by_response)))
            )
        )
        external = dict(
            session.execute(
                select(Response.id, Response.external_id).where(Response.id.in_(list(by_response)))
            ).all()
        )
        out = [
            DisagreementRow(
                response_id=rid,
                external_id=external[rid],
                annotators=sorted(who[rid]),
                n_disagreeing=sum(len(v) > 1 for v in sents.values()),
                adjudicated=rid in adjudicated,
            )
            for rid, sents in by_response.items()
            if len(who[rid]) >= 2 and (include_adjudicated or rid not in adjudicated)
        ]
        return sorted(out, key=lambda r: (-r.n_disagreeing, r.response_id))

    return run_read(engine, work)


def adjudicate(
    engine: Engine, response_id: int, labels: Mapping[int, int | None], reviewer: str
) -> SaveResult:
    """Set the gold labels of an overlap response (source ``adjudicated``, by ``reviewer``) and record the
    adjudication with who and when."""
    result = repo.record_labels(engine, response_id, labels, reviewer, source=ADJUDICATED)
    now = utcnow()

    def work(session: Session) -> None:
        session.execute(
            insert(Adjudication),
            [
                {
                    "response_id": response_id,
                    "sentence_id": sid,
                    "label": lab,
                    "reviewer": reviewer,
                    "created_at": now,
                }
                for sid, lab in sorted(labels.items())
            ],
        )

    run_write(engine, work)
    return result


def adjudicated_labels(engine: Engine, response_ids: Sequence[int]) -> dict[int, dict[str, object]]:
    """The latest adjudication of each response: response id -> {"reviewer", "at", "labels": {sid: label}}."""

    def work(session: Session) -> dict[int, dict[str, object]]:
        out: dict[int, dict[str, object]] = {}
        rows = session.execute(
            select(Adjudication)
            .where(Adjudication.response_id.in_(list(response_ids)))
            .order_by(Adjudication.id)
        ).scalars()
        for a in rows:
            entry = out.setdefault(a.response_id, {"labels": {}})
            entry["reviewer"] = a.reviewer
            entry["at"] = a.created_at
            entry["labels"][a.sentence_id] = a.label  # type: ignore[index]
        return out

    return run_read(engine, work)


# ------------------------------------------------------------------------------------------------ progress


def progress(engine: Engine, dataset_id: int, *, window: timedelta = timedelta(hours=1)) -> list[ProgressRow]:
    """Per annotator: assigned / done responses, label changes they made (gold view and own labels; human
    labels only: not a file's, not the model's they accepted), how many in the last ``window``, and changes
    per hour over their active span."""
    since = utcnow() - window

    def work(session: Session) -> list[ProgressRow]:
        assigned = dict(
            session.execute(
                select(Assignment.annotator, func.count())
                .where(Assignment.dataset_id == dataset_id)
                .group_by(Assignment.annotator)
            ).all()
        )
        done = dict(
            session.execute(
                select(Assignment.annotator, func.count())
                .where(Assignment.dataset_id == dataset_id, Assignment.done_at.is_not(None))
                .group_by(Assignment.annotator)
            ).all()
        )
        in_dataset = select(Response.id).where(Response.dataset_id == dataset_id)
        total: dict[str, int] = defaultdict(int)
        recent: dict[str, int] = defaultdict(int)
        first: dict[str, datetime] = {}
        last: dict[str, datetime] = {}
        # Label changes people made: events leaving a person's label (human, adjudicated) and undos; a file's
        # labels (the importing user) and labels accepted from the model are not counted.
        by_person = or_(LabelEvent.source.in_(HUMAN_SOURCES), LabelEvent.undoes_id.is_not(None))
        for name, n, n_recent, t0, t1 in session.execute(
            select(
                LabelEvent.annotator,
                func.count(),
                func.sum(case((LabelEvent.created_at >= since, 1), else_=0)),
                func.min(LabelEvent.created_at),
                func.max(LabelEvent.created_at),
            )
            .where(LabelEvent.response_id.in_(in_dataset), by_person)
            .group_by(LabelEvent.annotator)
        ):
            total[name] = int(n)
            recent[name] = int(n_recent or 0)
            first[name] = t0
            last[name] = t1
        out = []
        for name in sorted(set(assigned) | set(total)):
            hours = (last[name] - first[name]).total_seconds() / 3600 if name in first else 0.0
            out.append(
                ProgressRow(
                    annotator=name,
                    assigned=int(assigned.get(name, 0)),
                    done=int(done.get(name, 0)),
                    labels_total=total[name],
                    labels_last_hour=recent[name],
                    labels_per_hour=total[name] / hours if hours > 0 and total[name] >= 2 else 0.0,
                )
            )
        return out

    return run_read(engine, work)


# ------------------------------------------------------------------------------------------------ notes


def add_note(engine: Engine, response_id: int, author: str, text: str, flag: str | None = None) -> NoteRow:
    """A comment (and optionally a flag: one of NOTE_FLAGS) on a response, by ``author``."""
    text = (text or "").strip()
    if flag is not None and flag not in NOTE_FLAGS:
        raise InputError(f"flag must be one of {', '.join(NOTE_FLAGS)}, got {flag!r}", field="flag")
    if not text and flag is None:
        raise InputError("write a comment or choose a flag", field="comment")
    if len(text) > MAX_NOTE_CHARS:
        raise InputError(f"comments are limited to {MAX_NOTE_CHARS} characters", field="comment")

    def work(session: Session) -> NoteRow:
        if session.get(Response, response_id) is None:
            raise InputError(f"no response with id {response_id}", field="response_id")
        note = ResponseNote(response_id=response_id, author=author, flag=flag, text=text, created_at=utcnow())
        session.add(note)
        session.flush()
        return NoteRow(note.id, response_id, author, flag, text, note.created_at)

    return run_write(engine, work)


def notes(engine: Engine, response_id: int) -> list[NoteRow]:
    return run_read(
        engine,
        lambda s: [
            NoteRow(n.id, n.response_id, n.author, n.flag, n.text, n.created_at)
            for n in s.scalars(
                select(ResponseNote).where(ResponseNote.response_id == response_id).order_by(ResponseNote.id)
            )
        ],
    )
