"""``fractal pairs ingest``: store a preference pairs file in a dataset (:mod:`db.pairs_ingest`); ``fractal pairs
train``: train a model from a pairs file, as ``fractal train`` does from responses; ``fractal pairs export``:
a dataset's pairs in the pairwise layout trainers take (:mod:`db.pairs_export`). Like the
other store commands: ``--db URL``, a store that does not exist is refused, bad input is one line naming file,
line and field with exit code 2 and nothing written, an outdated schema exit code 1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from db.cli import DbOption, importing_user
from db.engine import get_engine
from db.pairs_ingest import ingest_pairs
from db.schema import SchemaOutdatedError
from fractal_core.cli_options import (
    DeviceOpt,
    EncoderOpt,
    PrecisionOpt,
    checked_encoder,
    fail,
    train_config,
)
from fractal_core.data.files import check_output_dir
from fractal_core.errors import InputError
from fractal_core.fitting.config import DEFAULT_RESPONSE_LABELS, response_labels_mode

pairs_app = typer.Typer(
    help="Preference pairs: ingest a pairs file, train from one, export a dataset's pairs.",
    no_args_is_help=True,
)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@pairs_app.command("ingest")
def ingest(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or Parquet file of preference pairs.")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name (created if missing).")],
    format: Annotated[
        str | None, typer.Option("--format", help="jsonl | csv | parquet (default: from the suffix).")
    ] = None,
    segment_mode: Annotated[
        str, typer.Option("--segment-mode", help="sentences | steps, for raw text.")
    ] = "sentences",
    label_kind: Annotated[
        str | None,
        typer.Option(
            "--label-kind",
            help="For a new dataset: binary | ordinal:C | proportion (default: from "
            "the responses' own labels, else binary).",
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split name (default: file stem if train/valid/test).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Store a file's preference pairs and their responses in a dataset: all pairs or none. Each pair is
    recorded as imported by you ($FRACTAL_ANNOTATOR, else your login name), now."""
    try:
        if format not in (None, "jsonl", "csv", "parquet"):
            raise InputError(f"unknown format {format!r}; use jsonl, csv or parquet", field="--format")
        if segment_mode not in ("sentences", "steps"):
            raise InputError(
                f"unknown segment mode {segment_mode!r}; use sentences or steps", field="--segment-mode"
            )
        engine = get_engine(db, create=False)
        summary = ingest_pairs(
            engine,
            file,
            dataset,
            format=format,  # type: ignore[arg-type]
            segment_mode=segment_mode,  # type: ignore[arg-type]
            label_kind=label_kind,
            imported_by=importing_user(),
            split=split,
        )
    except InputError as err:
        raise _fail(str(err), 2) from None
    except SchemaOutdatedError as err:
        raise _fail(str(err), 1) from None
    linked = f" (and {summary.n_linked} already stored)" if summary.n_linked else ""
    typer.echo(
        f"ingested {summary.n_pairs} preference pairs, {summary.n_responses} responses{linked}, "
        f"{summary.n_sentences} sentences into dataset {summary.dataset!r} in {summary.seconds:.1f} s"
    )


@pairs_app.command("train")
def train(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or Parquet file of preference pairs.")],
    out: Annotated[Path, typer.Option(help="Directory to save the model in")],
    seed: int = 0,
    max_epochs: Annotated[int | None, typer.Option(help="Override the default epoch bound")] = None,
    segment_mode: Annotated[
        str, typer.Option("--segment-mode", help="sentences | steps, for raw text.")
    ] = "sentences",
    encoder: EncoderOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    response_labels: Annotated[
        str,
        typer.Option(
            "--response-labels",
            help="beside: also train on the responses' own labels (the file's <side>_response_label) | "
            "alone: the pairs only.",
        ),
    ] = DEFAULT_RESPONSE_LABELS,
) -> None:
    """Train a sentence scorer from preference pairs (PrefBagLoss): the rejected response's sentences are the
    ones that should explain the preference. By default the responses that carry a label of their own also
    train it (the suite's BagLoss beside the pairs). A seeded share of the pairs (and of the labelled
    responses) is held out for early stopping."""
    from fractal_core.data.pairs import pair_table, read_pairs
    from fractal_core.fitting.estimator import FractalModel
    from fractal_core.fitting.pairs import preference_triples

    if segment_mode not in ("sentences", "steps"):
        raise fail(f"--segment-mode: unknown segment mode {segment_mode!r}; use sentences or steps")
    try:
        response_labels_mode(response_labels, field="--response-labels")
        check_output_dir(out, FractalModel.FILES)
        records, pairs = pair_table(read_pairs(file, segment_mode=segment_mode))
    except InputError as err:
        raise fail(str(err)) from None
    config = train_config(device, max_epochs, "default")
    aggregations = {r.aggregation for r in records}
    model = FractalModel(config=config, encoder=checked_encoder(encoder, device, precision), seed=seed)
    try:
        model.fit_preferences(
            records,
            preference_triples(pairs),
            aggregation=aggregations.pop() if len(aggregations) == 1 else "mean",
            response_labels=response_labels,
        )
        model.save(out)
    except (InputError, ValueError) as err:
        raise fail(str(err)) from None
    used = model.trained_from_["labelled_responses"]
    beside = f" beside {used} response labels" if used else ""
    typer.echo(
        f"saved a model trained from {len(pairs)} preference pairs{beside} ({len(records)} responses) to {out}"
    )


@pairs_app.command("export")
def export(
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name.")],
    out: Annotated[Path, typer.Option("--out", help="Output file: .jsonl or .parquet.")],
    model: Annotated[
        int | None, typer.Option("--model", help="Model version for scores and colours (default: active).")
    ] = None,
    human_only: Annotated[
        bool, typer.Option("--human-only", help="Only step labels a person set in the tool.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Write a dataset's pairs as {prompt, chosen, rejected} rows with each response's steps, step labels and
    their sources, step scores and the colouring given the preference."""
    from db.pairs_export import export_pairs

    try:
        summary = export_pairs(
            get_engine(db, create=False), dataset, out, model_version=model, human_only=human_only
        )
    except InputError as err:
        raise _fail(str(err), 2) from None
    except SchemaOutdatedError as err:
        raise _fail(str(err), 1) from None
    version = f" with scores of model version {summary.model_version}" if summary.model_version else ""
    typer.echo(f"wrote {summary.n_pairs} preference pairs{version} to {summary.path}")


def register(app: typer.Typer) -> None:
    """Add the ``pairs`` group to the ``fractal`` Typer app."""
    app.add_typer(pairs_app, name="pairs")
