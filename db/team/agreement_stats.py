"""Agreement statistics over the annotators' own labels of a dataset (alpha, kappa per pair, per label)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine, literal, select
from sqlalchemy.orm import Session

from db.engine import run_read
from db.models import Annotation
from db.rows import AgreementReport, PairAgreementRow
from db.team.settings import load_dataset
from fractal_core.data.records import top_level
from fractal_core.evaluation import agreement as stats


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
        d = load_dataset(session, dataset_id)
        units, coders, values, responses, names = _annotation_arrays(session, dataset_id)
        n_values = top_level(d.label_kind, d.max_label) + 1
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
