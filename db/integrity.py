"""``fractal db check``: the store's current views against the replay of its history.

Every label event carries the state it leaves (label, source, to whom the label is attributed), so replaying a
sentence's history in one view ends at its latest event: the shared view (``current_labels``) must hold, per
sentence, exactly what the latest shared event left (no row when it cleared the label), and ``annotations``
per (sentence, annotator) what the latest event in that annotator's layer left. The gold counter of each
response (``responses.n_gold``) must equal its current gold labels. Triggers refuse writes that break this
(migration 0012); the check finds what got in before them or around them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, and_, func, literal, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Subquery

from db.engine import run_read
from db.models import GOLD_SOURCES, Annotation, CurrentLabel, LabelEvent, Response


@dataclass(frozen=True, slots=True)
class Drift:
    """One place where a current view differs from its history."""

    table: str  # current_labels | annotations | responses
    key: str  # "sentence 12", "sentence 12 of ann", "response 4"
    stored: str  # what the view holds ("none" when it has no row)
    replayed: str  # what the history says it should hold


@dataclass(frozen=True, slots=True)
class CheckReport:
    n_current: int  # current_labels rows checked
    n_annotations: int  # annotations rows checked
    drift: list[Drift]

    @property
    def clean(self) -> bool:
        return not self.drift


def _state(label: int | None, source: str | None, who: str | None) -> str:
    return "none" if label is None else f"{label} ({source}, {who})"


def _latest(layer_is_null: bool) -> Subquery:
    """Latest event id per (sentence, layer) of the shared view or of the own-label layers."""
    where = LabelEvent.layer.is_(None) if layer_is_null else LabelEvent.layer.is_not(None)
    return (
        select(LabelEvent.sentence_id, LabelEvent.layer, func.max(LabelEvent.id).label("id"))
        .where(where)
        .group_by(LabelEvent.sentence_id, LabelEvent.layer)
        .subquery()
    )


def _shared_drift(session: Session) -> list[Drift]:
    latest = _latest(True)
    replay = (
        select(LabelEvent.sentence_id, LabelEvent.new_label, LabelEvent.source, LabelEvent.new_annotator)
        .join(latest, latest.c.id == LabelEvent.id)
        .subquery()
    )
    # Rows the history says exist (or that exist): a full comparison in two directions.
    have = session.execute(
        select(
            CurrentLabel.sentence_id,
            CurrentLabel.label,
            CurrentLabel.source,
            CurrentLabel.annotator,
            replay.c.new_label,
            replay.c.source,
            replay.c.new_annotator,
        )
        .outerjoin(replay, replay.c.sentence_id == CurrentLabel.sentence_id)
        .where(
            or_(
                replay.c.sentence_id.is_(None),
                replay.c.new_label.is_distinct_from(CurrentLabel.label),
                replay.c.source != CurrentLabel.source,
                replay.c.new_annotator.is_distinct_from(CurrentLabel.annotator),
                ~select(literal(1))
                .where(
                    LabelEvent.id == CurrentLabel.event_id,
                    LabelEvent.sentence_id == CurrentLabel.sentence_id,
                    LabelEvent.layer.is_(None),
                )
                .exists(),
            )
        )
    ).all()
    missing = session.execute(
        select(replay.c.sentence_id, replay.c.new_label, replay.c.source, replay.c.new_annotator)
        .outerjoin(CurrentLabel, CurrentLabel.sentence_id == replay.c.sentence_id)
        .where(replay.c.new_label.is_not(None), CurrentLabel.sentence_id.is_(None))
    ).all()
    out = [
        Drift("current_labels", f"sentence {sid}", _state(lab, src, who), _state(r_lab, r_src, r_who))
        for sid, lab, src, who, r_lab, r_src, r_who in have
    ]
    out += [
        Drift("current_labels", f"sentence {sid}", "none", _state(lab, src, who))
        for sid, lab, src, who in missing
    ]
    return out


def _own_drift(session: Session) -> list[Drift]:
    latest = _latest(False)
    replay = (
        select(LabelEvent.sentence_id, LabelEvent.layer, LabelEvent.new_label)
        .join(latest, latest.c.id == LabelEvent.id)
        .subquery()
    )
    have = session.execute(
        select(Annotation.sentence_id, Annotation.annotator, Annotation.label, replay.c.new_label)
        .outerjoin(
            replay,
            and_(replay.c.sentence_id == Annotation.sentence_id, replay.c.layer == Annotation.annotator),
        )
        .where(replay.c.new_label.is_distinct_from(Annotation.label))
    ).all()
    missing = session.execute(
        select(replay.c.sentence_id, replay.c.layer, replay.c.new_label)
        .outerjoin(
            Annotation,
            and_(Annotation.sentence_id == replay.c.sentence_id, Annotation.annotator == replay.c.layer),
        )
        .where(replay.c.new_label.is_not(None), Annotation.sentence_id.is_(None))
    ).all()
    out = [
        Drift(
            "annotations", f"sentence {sid} of {who}", _state(lab, "human", who), _state(r_lab, "human", who)
        )
        for sid, who, lab, r_lab in have
    ]
    out += [
        Drift("annotations", f"sentence {sid} of {who}", "none", _state(lab, "human", who))
        for sid, who, lab in missing
    ]
    return out


def _gold_counter_drift(session: Session) -> list[Drift]:
    gold = (
        select(CurrentLabel.response_id, func.count().label("n"))
        .where(CurrentLabel.source.in_(GOLD_SOURCES))
        .group_by(CurrentLabel.response_id)
        .subquery()
    )
    rows = session.execute(
        select(Response.id, Response.n_gold, func.coalesce(gold.c.n, 0))
        .outerjoin(gold, gold.c.response_id == Response.id)
        .where(Response.n_gold != func.coalesce(gold.c.n, 0))
    ).all()
    return [Drift("responses", f"response {rid}", f"n_gold {n}", f"n_gold {m}") for rid, n, m in rows]


def check_store(engine: Engine) -> CheckReport:
    """Compare every current view with the replay of its history (module docstring); one read transaction."""

    def work(session: Session) -> CheckReport:
        drift = _shared_drift(session) + _own_drift(session) + _gold_counter_drift(session)
        n_current = session.scalar(select(func.count()).select_from(CurrentLabel)) or 0
        n_own = session.scalar(select(func.count()).select_from(Annotation)) or 0
        return CheckReport(int(n_current), int(n_own), drift)

    return run_read(engine, work)
