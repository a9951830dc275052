"""Reading labels: the label history of a sentence or a response, and a dataset's gold budget."""

from __future__ import annotations

from sqlalchemy import Engine, case, func, select
from sqlalchemy.orm import Session

from db.engine import run_read
from db.models import Dataset, LabelEvent, Response
from db.repository.label_events import OWN_LABEL
from db.rows import GoldBudget, LabelChange
from fractal_core.errors import InputError


def label_history(
    engine: Engine, *, sentence_id: int | None = None, response_id: int | None = None, own: bool = False
) -> list[LabelChange]:
    """The label events of a sentence or of a whole response, oldest first: the shared view's, or
    (``own=True``) every annotator's own labels (source ``annotation``)."""
    if (sentence_id is None) == (response_id is None):
        raise ValueError("give exactly one of sentence_id or response_id")
    where = (
        LabelEvent.sentence_id == sentence_id
        if sentence_id is not None
        else LabelEvent.response_id == response_id
    )
    layer = LabelEvent.layer.is_not(None) if own else LabelEvent.layer.is_(None)

    def work(session: Session) -> list[LabelChange]:
        rows = session.execute(
            select(
                LabelEvent.id,
                LabelEvent.sentence_id,
                LabelEvent.response_id,
                LabelEvent.old_label,
                LabelEvent.new_label,
                LabelEvent.annotator,
                LabelEvent.source,
                LabelEvent.created_at,
            )
            .where(where, layer)
            .order_by(LabelEvent.id)
        ).all()
        return [LabelChange(*r[:6], OWN_LABEL if own else r[6], r[7]) for r in rows]

    return run_read(engine, work)


def gold_budget(engine: Engine, dataset_id: int) -> GoldBudget:
    """Responses with at least one current gold/reviewed sentence label, all responses, and the target
    fraction (``gold_responses / total_responses`` is the meter; ``target_fraction`` the goal)."""

    def work(session: Session) -> GoldBudget:
        gold, total = session.execute(
            select(func.coalesce(func.sum(case((Response.n_gold > 0, 1), else_=0)), 0), func.count()).where(
                Response.dataset_id == dataset_id
            )
        ).one()
        target = session.scalar(select(Dataset.gold_target).where(Dataset.id == dataset_id))
        if target is None:
            raise InputError(f"no dataset with id {dataset_id}", field="dataset")
        return GoldBudget(int(gold), int(total), float(target))

    return run_read(engine, work)
