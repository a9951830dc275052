"""Assignment queues with overlap (who labels which response) and each annotator's progress through them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Engine, case, func, insert, or_, select, update
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import Assignment, LabelEvent, Response, utcnow
from db.rows import AssignSummary, ProgressRow
from db.sources import HUMAN_SOURCES
from db.team.settings import load_dataset
from fractal_core.errors import InputError


def assign(engine: Engine, dataset_id: int, annotators: Sequence[str], *, seed: int = 0) -> AssignSummary:
    """Queue every unassigned response of the dataset (see the module doc); returns what was assigned."""
    names = list(dict.fromkeys(a.strip() for a in annotators if a and a.strip()))
    if not names:
        raise InputError("choose at least one annotator", field="annotators")

    def work(session: Session) -> AssignSummary:
        d = load_dataset(session, dataset_id)
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
