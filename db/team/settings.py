"""A dataset's team settings: the overlap rule of its assignments and its annotation guidelines."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import Dataset
from fractal_core.errors import InputError

MAX_GUIDELINES_CHARS = 50_000


@dataclass(frozen=True, slots=True)
class TeamSettings:
    overlap_k: int  # annotators per overlap response
    overlap_fraction: float  # share of responses in the overlap sample, in [0, 1]
    guidelines: str  # Markdown written by an admin (untrusted text: render safely)


def load_dataset(session: Session, dataset_id: int) -> Dataset:
    """The dataset's row in ``session``; InputError when there is none."""
    found = session.get(Dataset, dataset_id)
    if found is None:
        raise InputError(f"no dataset with id {dataset_id}", field="dataset")
    return found


def team_settings(engine: Engine, dataset_id: int) -> TeamSettings:
    def work(session: Session) -> TeamSettings:
        d = load_dataset(session, dataset_id)
        return TeamSettings(int(d.overlap_k), float(d.overlap_fraction), d.guidelines or "")

    return run_read(engine, work)


def set_overlap(engine: Engine, dataset_id: int, k: int, fraction: float) -> TeamSettings:
    """ "k annotators for a sample of p% of responses" (k >= 1, fraction in [0, 1])."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10:
        raise InputError(f"annotators per overlap response must be 1..10, got {k!r}", field="overlap_k")
    if not 0.0 <= float(fraction) <= 1.0:
        raise InputError(f"overlap share must be in [0, 1], got {fraction!r}", field="overlap_fraction")

    def work(session: Session) -> None:
        d = load_dataset(session, dataset_id)
        d.overlap_k = k
        d.overlap_fraction = float(fraction)

    run_write(engine, work)
    return team_settings(engine, dataset_id)


def set_guidelines(engine: Engine, dataset_id: int, text: str) -> TeamSettings:
    if len(text) > MAX_GUIDELINES_CHARS:
        raise InputError(f"guidelines are limited to {MAX_GUIDELINES_CHARS} characters", field="guidelines")

    def work(session: Session) -> None:
        load_dataset(session, dataset_id).guidelines = text

    run_write(engine, work)
    return team_settings(engine, dataset_id)
