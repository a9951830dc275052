"""Exports of a dataset, each written atomically (:func:`fractal_core.data.files.atomic_write`: a temp file in
the target directory, renamed only onto a regular file or a new name; devices, directories and special files
are refused with InputError).

Every format carries, per sentence or step, the label's **source** (:mod:`db.sources`: ``human``,
``adjudicated``, ``model``, ``imported``, ``imported_gold``; ``none`` when unlabelled) and who set it, and
all formats agree with native on both.

Formats (``fractal export --format F``):

- ``native`` (JSONL, lossless): the shared schema as written by :func:`fractal_core.data.io.record_to_dict`
  (``text`` and ``spans`` keep the offsets) plus ``meta.fractal``: ``labels`` (per sentence ``{label, source,
  annotator, at}`` or null: every current label), ``annotations`` (overlap responses: ``{annotator: [label or
  null per sentence]}``, each annotator's own labels), ``adjudicated`` (``{reviewer, at}`` of the latest
  adjudication, or null), ``scores`` / ``uncertainties`` (per sentence, from the model version, null when
  unscored), ``soft_labels`` (with ``soft_labels=True``, below), ``model_version`` (``{version, method,
  status}`` or null), ``split``, ``consistent`` (whether the labels fit the response label) and
  ``provenance`` (dataset, source file and its sha256, segmenter version, export time). Top-level
  ``sentence_labels`` holds the current labels when they are consistent with the response label (the reader
  refuses contradictions), else null. ``fractal ingest`` of a native export reproduces responses, sentences
  and the consistent labels (as the ingesting user's ``imported`` labels: provenance is never restored).
- ``stepwise-jsonl`` / ``stepwise-parquet``: TRL's stepwise supervision, ``{id, prompt, completions, labels,
  sources, annotators, soft_labels}`` with ``labels[i]`` True when step i is *good* (ordinal levels: good
  below half the top level, so with DelucionQA's 0 supported / 1 neither / 2 conflicted only "supported" is
  good).
- ``prm800k``: PRM800K-style step ratings, ``{id, question: {problem}, label: {steps: [{completions: [{text,
  rating, source, annotator, soft_label}], chosen_completion: 0}], finish_reason}}`` with rating +1 good, 0
  neutral, -1 bad, null unlabelled.
- ``kto``: response level ``{id, prompt, completion, label, sentence_labels, sources, annotators}``, label
  True when the response is desirable.

Which steps a step format writes, per response:

- every step labelled: all of them;
- **first-error data** (a ``max`` response whose labels are a run of 0s ending at its first positive label,
  the rest unlabelled, as ProcessBench and PRM800K annotate): the steps up to and including the first error,
  which is where such a solution ends as process-reward data (never dropped);
- labels that contradict the response label: the response is left out of the step formats (native holds
  them in ``meta.fractal.labels`` only), so no format states labels another says are not usable;
- other steps without a label: left out (counted, with the reason), unless ``scores_as_labels=True`` (CLI
  ``--scores-as-labels``) fills them from the model's score given the response label (problem probability
  >= 0.5 -> bad; ratings: < 1/3 -> +1, > 2/3 -> -1, else 0), with source ``score``. A score never becomes a
  hard label otherwise. With ``soft_labels=True`` such steps are written with label null.

Options: ``human_only=True`` (CLI ``--human-only``) keeps only labels a person set in the tool (``human``,
``adjudicated``); other labels are exported as unlabelled. ``soft_labels=True`` (``--soft-labels``) adds, for
every unlabelled sentence, the model's probability given the response label and the labels exported
(:func:`fractal_core.mil.reviewer.label_conditioned_flat`): ``meta.fractal.soft_labels`` is P(level >= 1) per
sentence (null where labelled or unscored); the step formats write P(step is good) in the direction of
their ``labels``.

What "positive" means: with ``max`` bags a positive sentence is a defect (the bag is bad iff some sentence
is), with ``min`` bags a positive sentence is good (the bag is good iff every sentence is); ``mean`` bags count
positives as defects. ``positive_is`` overrides this. Ratings from labels: binary defect -> -1, fine -> +1;
ordinal levels 0 / middle / top -> +1 / 0 / -1. KTO: a response is desirable when its label (divided by the
top level for ordinal) is below 0.5 under defect semantics, at or above 0.5 under good semantics.

This module checks the request and writes the file; its parts live next to it: :mod:`db.export_read` (what is
read from the store), :mod:`db.export_formats` (each format's row, which steps are written) and
:mod:`db.export_files` (the JSON Lines and Parquet writers). Its public names are re-exported here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine

from db.engine import session_scope
from db.export_files import _jsonl_writer, _parquet_writer
from db.export_formats import (
    LEFT_OUT_CONTRADICTS,
    LEFT_OUT_UNLABELLED,
    LEFT_OUT_UNSCORED,
    SCORE,
    _kto_row,
    _native_row,
    _Options,
    _prm800k_row,
    _steps,
    _stepwise_row,
)
from db.export_read import _iter_items, export_model_version
from db.models import Dataset, utcnow
from db.repository import require_dataset
from fractal_core.data.files import atomic_write, check_output_file
from fractal_core.errors import InputError

__all__ = [
    "FORMATS",
    "LEFT_OUT_CONTRADICTS",
    "LEFT_OUT_UNLABELLED",
    "LEFT_OUT_UNSCORED",
    "SCORE",
    "ExportFormat",
    "ExportSummary",
    "export_dataset",
]

ExportFormat = Literal["native", "stepwise-jsonl", "stepwise-parquet", "prm800k", "kto"]
FORMATS: tuple[str, ...] = ("native", "stepwise-jsonl", "stepwise-parquet", "prm800k", "kto")


@dataclass(frozen=True, slots=True)
class ExportSummary:
    path: str
    format: str
    n_rows: int  # lines / rows written
    n_skipped: int  # responses left out of a step format (reasons in ``left_out``)
    model_version: int | None  # per-dataset version number whose scores were used
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> responses


def export_dataset(
    engine: Engine,
    dataset: str | int,
    out: str | Path,
    *,
    format: ExportFormat,
    model_version: int | None = None,
    positive_is: Literal["bad", "good"] | None = None,
    human_only: bool = False,
    soft_labels: bool = False,
    scores_as_labels: bool = False,
) -> ExportSummary:
    """Write ``dataset`` to ``out`` in ``format`` (see the module docstring); returns what was written.

    ``model_version`` is the per-dataset version number (``fractal export --model 3``); default: the active
    version, if any. ``human_only``: only labels a person set in the tool; ``soft_labels``: the model's
    given-label probability of every unlabelled sentence; ``scores_as_labels``: step formats fill unlabelled
    steps from that probability (source ``score``). Raises InputError for an unknown dataset, version or
    format.
    """
    if format not in FORMATS:
        raise InputError(
            f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}", field="format"
        )
    if positive_is is not None and positive_is not in ("bad", "good"):
        raise InputError("positive_is must be 'bad' or 'good'", field="positive_is")
    ds_row = require_dataset(engine, dataset)
    out_path = check_output_file(out)
    counts = {"rows": 0, "skipped": 0}
    reasons: Counter[str] = Counter()

    with session_scope(engine, write=False) as session:
        ds = session.get(Dataset, ds_row.id)
        assert ds is not None
        mv = export_model_version(session, ds, model_version)
        items = _iter_items(
            session,
            ds.id,
            mv.id if mv else None,
            human_only=human_only,
            max_label=ds.max_label,
            label_kind=ds.label_kind,
        )
        exported_at = utcnow().isoformat()
        opts = _Options(ds.max_label, positive_is, soft_labels, scores_as_labels)

        def stepped(row: Any) -> Iterator[dict[str, Any] | None]:
            for it in items:
                steps, why = _steps(it, opts)
                if steps is None:
                    reasons[why or ""] += 1
                    yield None
                else:
                    yield row(it, steps, opts)

        if format == "native":
            writer = _jsonl_writer(
                (_native_row(it, ds.name, mv, exported_at, soft_labels) for it in items), counts
            )
        elif format == "stepwise-jsonl":
            writer = _jsonl_writer(stepped(_stepwise_row), counts)
        elif format == "stepwise-parquet":
            writer = _parquet_writer(stepped(_stepwise_row), counts)
        elif format == "prm800k":
            writer = _jsonl_writer(stepped(_prm800k_row), counts)
        else:
            # KTO needs a response label: responses of preference pairs without one are left out.
            labelled = (it for it in items if it.response_label is not None)
            writer = _jsonl_writer((_kto_row(it, opts) for it in labelled), counts)
        atomic_write(out_path, writer)
    return ExportSummary(
        str(out_path), format, counts["rows"], counts["skipped"], mv.version if mv else None, dict(reasons)
    )
