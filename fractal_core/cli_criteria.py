"""What the ``fractal`` commands do with data that declares several criteria: ``--criterion NAME`` picks one
(any method, as a single-label dataset), and without it ``train`` fits every criterion with one
:class:`~fractal_core.fitting.criteria_model.CriteriaModel` and ``score`` writes every criterion's scores."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from fractal_core.cli_options import fail, stage_bar
from fractal_core.data.records import ResponseRecord
from fractal_core.errors import InputError

CriterionOpt = Annotated[
    str | None,
    typer.Option(
        help="With data that declares several criteria: use this one only, as a single-label dataset"
    ),
]


def criterion_splits(
    splits: dict[str, list[ResponseRecord]], criterion: str | None, *, joint: bool
) -> dict[str, list[ResponseRecord]]:
    """``splits`` as criterion ``criterion`` sees them; unchanged for single-label data or (``joint``) for a
    command that uses every criterion. A missing or unknown criterion: exit 2."""
    from fractal_core.data.criteria import criterion_names, criterion_records

    names = criterion_names(next(iter(splits.values()), []))
    if not names:
        if criterion is not None:
            raise fail("--criterion: the data declare no criteria (they carry one response_label)")
        return splits
    if criterion is None:
        if joint:
            return splits
        raise fail(f"--criterion: the data declare several criteria ({', '.join(names)}); name one")
    if criterion not in names:
        raise fail(f"--criterion: no criterion {criterion!r}; the data declare {', '.join(names)}")
    try:
        return {split: criterion_records(part, criterion) for split, part in splits.items()}
    except ValueError as err:
        raise fail(str(err)) from None


def train_criteria(
    splits: dict[str, list[ResponseRecord]], out: Path, *, method: str, config: Any, encoder: Any, seed: int
) -> None:
    """Fit every criterion of ``splits`` together and save the model to ``out`` (checked before training)."""

    from fractal_core.data.files import check_output_dir
    from fractal_core.fitting.criteria_fit import CRITERIA_METHODS
    from fractal_core.fitting.criteria_model import CriteriaModel

    if method not in CRITERIA_METHODS:
        raise fail(
            f"--method: several criteria train together with {', '.join(CRITERIA_METHODS)}, not {method!r} "
            "(or train one criterion with any method: --criterion NAME)"
        )
    try:
        check_output_dir(out, CriteriaModel.FILES)
    except InputError as err:
        raise fail(str(err)) from None
    bar, progress = stage_bar()

    try:
        model = CriteriaModel(method, config=config, encoder=encoder, seed=seed).fit(
            splits["train"], valid=splits.get("valid"), progress=progress
        )
    except ValueError as err:
        raise fail(str(err)) from None
    finally:
        bar.close()
    try:
        model.save(out)
    except InputError as err:
        raise fail(str(err)) from None
    for name, metrics in model.metrics_.items():
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float) and not math.isnan(v)}
        typer.echo(f"  {name}: {shown}")
    typer.echo(f"saved {method} model of {len(model.criteria_)} criteria ({', '.join(model.names)}) to {out}")


def score_criteria(model_dir: Path, records: list[ResponseRecord], out: Path, criterion: str | None) -> None:
    """Each response with its sentence offsets and ``criterion_scores`` ({criterion: scores}); with
    ``criterion``, only that one, also as ``sentence_scores`` (what single-label readers take)."""
    from fractal_core.data.files import atomic_write_text
    from fractal_core.data.io import record_to_dict
    from fractal_core.fitting.criteria_model import CriteriaModel

    model = CriteriaModel.load(model_dir)
    if criterion is not None and criterion not in model.names:
        raise fail(f"--criterion: no criterion {criterion!r}; the model scores {', '.join(model.names)}")
    scores = model.predict(records, criterion=criterion)
    lines = []
    for i, record in enumerate(records):
        row = record_to_dict(record)
        row["offsets"] = [[s.start, s.end] for s in record.spans]
        row["criterion_scores"] = {name: [round(float(v), 6) for v in per[i]] for name, per in scores.items()}
        if criterion is not None:
            row["sentence_scores"] = row["criterion_scores"][criterion]
        lines.append(json.dumps(row, ensure_ascii=False))
    try:
        atomic_write_text(out, "\n".join(lines) + "\n")
    except InputError as err:
        raise fail(str(err)) from None
    n = sum(len(r.spans) for r in records)
    typer.echo(f"scored {n} sentences of {len(records)} responses on {', '.join(scores)} -> {out}")
