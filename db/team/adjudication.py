"""Adjudication: overlap responses whose annotators disagree, and a reviewer's gold labels for them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from db import repository as repo
from db.engine import run_read, run_write
from db.models import Adjudication, Annotation, Response, utcnow
from db.rows import DisagreementRow, SaveResult
from db.sources import ADJUDICATED


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
