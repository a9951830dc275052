"""Reading a dataset's preference pairs (``preference_pairs``): for training and for exports."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from db.engine import run_read
from db.models import PreferencePair


@dataclass(frozen=True, slots=True)
class PairRow:
    """One stored preference: response ids (the store's) of the chosen and the rejected response."""

    id: int
    external_id: str
    chosen_id: int
    rejected_id: int
    strength: float
    source: str
    annotator: str


def count_pairs(engine: Engine, dataset_id: int) -> int:
    """How many preference pairs ``dataset_id`` holds."""
    return run_read(
        engine,
        lambda s: int(
            s.scalar(
                select(func.count())
                .select_from(PreferencePair)
                .where(PreferencePair.dataset_id == dataset_id)
            )
            or 0
        ),
    )


def load_pairs(engine: Engine, dataset_id: int) -> list[PairRow]:
    """Every preference pair of ``dataset_id`` in id order."""

    def work(session: Session) -> list[PairRow]:
        rows = session.execute(
            select(
                PreferencePair.id,
                PreferencePair.external_id,
                PreferencePair.chosen_id,
                PreferencePair.rejected_id,
                PreferencePair.strength,
                PreferencePair.source,
                PreferencePair.annotator,
            )
            .where(PreferencePair.dataset_id == dataset_id)
            .order_by(PreferencePair.id)
        ).all()
        return [PairRow(*row) for row in rows]

    return run_read(engine, work)


__all__ = ["PairRow", "count_pairs", "load_pairs"]
