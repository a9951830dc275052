"""Export a dataset's preference pairs in the pairwise layout trainers take (JSONL or Parquet, by suffix).

One row per pair: ``prompt``, ``chosen``, ``rejected`` (the texts), the pair's ``strength``, where the
preference came from (``preference_source``, ``preference_annotator``), and per response its steps
(``chosen_steps`` / ``rejected_steps``), the current step labels with who or what set each
(``*_labels``, ``*_label_sources`` with ``none`` for an unlabelled step, ``*_label_annotators``; with
``human_only`` only labels a person set in the tool), the model version's raw step scores (``*_scores``) and the
colouring given the preference (``*_colours``: P(step wrong | the rejected response lost, the gold labels),
exact under the model's independent step probabilities, :mod:`fractal_core.mil.preference_posterior`, as the
Pairs page shows it: a labelled step's colour is its label); scores and colours are
null without a scored model version. ``model_version``: the version they come from (default: the active one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from db.engine import session_scope
from db.export_read import _Item, _iter_items, export_model_version
from db.models import Dataset, PreferencePair
from db.repository import require_dataset
from db.sources import NONE, is_gold
from fractal_core.data.files import atomic_write, check_output_file
from fractal_core.errors import InputError
from fractal_core.mil.reviewer import view_scores


@dataclass(frozen=True, slots=True)
class PairsExportSummary:
    path: str
    n_pairs: int
    model_version: int | None


def _colours(
    items: Sequence[tuple[_Item, _Item, float]], calibration: dict[str, Any] | None
) -> list[tuple[list[float], list[float]] | None]:
    """The colouring given the preference of every pair whose steps all have a score (else None), at once, as
    the Pairs page shows it (``app.pair_colours``): the scores the given-label view reads (the version's step
    calibration where the view uses it) conditioned on the gold labels exported with them."""
    import numpy as np

    from fractal_core.fitting.pairs import colour_scored_pairs

    scored = [i for i, (c, r, _) in enumerate(items) if all(s is not None for s in (*c.scores, *r.scores))]
    out: list[tuple[list[float], list[float]] | None] = [None] * len(items)
    if not scored:
        return out
    sides = [it for i in scored for it in items[i][:2]]
    scores = view_scores([s for it in sides for s in it.scores], calibration)
    labels = [
        float(lab["label"]) if lab is not None and is_gold(lab["source"]) else np.nan
        for it in sides
        for lab in it.labels
    ]
    sizes = np.array([len(it.spans) for it in sides], dtype=np.int64)  # (2K,)
    colour = colour_scored_pairs(
        np.array(scores, dtype=np.float64), sizes, np.array([items[i][2] for i in scored]), np.array(labels)
    ).tolist()
    at = 0
    for k, i in enumerate(scored):
        n_chosen, n_rejected = int(sizes[2 * k]), int(sizes[2 * k + 1])
        out[i] = (colour[at : at + n_chosen], colour[at + n_chosen : at + n_chosen + n_rejected])
        at += n_chosen + n_rejected
    return out


def _side(prefix: str, item: _Item, colours: list[float] | None) -> dict[str, Any]:
    return {
        f"{prefix}_id": item.external_id,
        f"{prefix}_steps": [s.text for s in item.spans],
        f"{prefix}_labels": [None if lab is None else int(lab["label"]) for lab in item.labels],
        f"{prefix}_label_sources": [NONE if lab is None else lab["source"] for lab in item.labels],
        f"{prefix}_label_annotators": [None if lab is None else lab["annotator"] for lab in item.labels],
        f"{prefix}_scores": item.scores if all(s is not None for s in item.scores) else None,
        f"{prefix}_colours": colours,
    }


def export_pairs(
    engine: Engine,
    dataset: str | int,
    out: str | Path,
    *,
    model_version: int | None = None,
    human_only: bool = False,
) -> PairsExportSummary:
    """Write ``dataset``'s pairs to ``out`` (``.jsonl`` or ``.parquet``); InputError for an unknown dataset or
    version, a dataset without pairs, or another suffix. Written atomically: nothing on error."""
    out_path = check_output_file(out)
    suffix = out_path.suffix.lower()
    if suffix not in (".jsonl", ".parquet"):
        raise InputError("the pairs export is written as .jsonl or .parquet", field="out")
    ds_row = require_dataset(engine, dataset)
    with session_scope(engine, write=False) as session:
        ds = session.get(Dataset, ds_row.id)
        assert ds is not None
        mv = export_model_version(session, ds, model_version)
        pairs = (
            session.execute(
                select(PreferencePair).where(PreferencePair.dataset_id == ds.id).order_by(PreferencePair.id)
            )
            .scalars()
            .all()
        )
        if not pairs:
            raise InputError(f"dataset {ds.name!r} has no preference pairs", field="dataset")
        by_id = {
            it.id: it
            for it in _iter_items(
                session, ds.id, mv.id if mv else None, human_only=human_only, max_label=ds.max_label,
                label_kind=ds.label_kind,
            )
        }  # fmt: skip
        triples = [(by_id[p.chosen_id], by_id[p.rejected_id], float(p.strength)) for p in pairs]
        colours = _colours(triples, (mv.metrics or {}).get("step_calibration") if mv else None)
        rows = [
            {
                "id": p.external_id,
                "prompt": chosen.context,
                "chosen": chosen.text,
                "rejected": rejected.text,
                "strength": p.strength,
                "preference_source": p.source,
                "preference_annotator": p.annotator,
                **_side("chosen", chosen, None if colour is None else colour[0]),
                **_side("rejected", rejected, None if colour is None else colour[1]),
                "model_version": mv.version if mv else None,
            }
            for p, (chosen, rejected, _), colour in zip(pairs, triples, colours, strict=True)
        ]
        version = mv.version if mv else None

    def write(tmp: Path) -> None:
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), tmp)
            return
        with tmp.open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(out_path, write)
    return PairsExportSummary(str(out_path), len(rows), version)


__all__ = ["PairsExportSummary", "export_pairs"]
