"""``fractal ingest``, ``fractal export`` and ``fractal db ...``: thin commands over :mod:`db`.

Mounted into the ``fractal`` console script with :func:`register`. Every command takes ``--db URL`` (else
``$FRACTAL_DB_URL``, else the default SQLite file). Only ``fractal db upgrade`` (and ``fractal serve``) create a
store; every other command refuses a store that does not exist, saying how to create one. Bad input, and a
store URL that cannot be opened, print one line on stderr and exit with code 2; an outdated schema prints the
upgrade command and exits with code 1.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer
from alembic.util import CommandError
from sqlalchemy import inspect
from tqdm import tqdm

from db.engine import get_engine, shown_url
from db.export import FORMATS, export_dataset
from db.ingest import ingest_file, purge_abandoned_imports
from db.integrity import check_store
from db.repository import list_datasets, list_model_versions, require_dataset
from db.schema import SchemaOutdatedError, current_revision, head_revision, require_store, upgrade
from fractal_core.data.extras import check_mode
from fractal_core.errors import InputError

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (default: $FRACTAL_DB_URL, else .fractal/fractal.db under $FRACTAL_HOME or the current directory).",
    ),
]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def importing_user() -> str:
    """Who runs the command: ``$FRACTAL_ANNOTATOR``, else the login name."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return os.environ.get("FRACTAL_ANNOTATOR") or login


def ingest(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or Parquet file in the shared schema.")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name (created if missing).")],
    format: Annotated[
        str | None, typer.Option("--format", help="jsonl | csv | parquet (default: from the suffix).")
    ] = None,
    segment_mode: Annotated[
        str, typer.Option("--segment-mode", help="sentences | steps, for raw text.")
    ] = "sentences",
    labels_as: Annotated[
        str,
        typer.Option(
            "--labels-as",
            help="imported | gold: gold stores the file's labels as imported_gold (count as gold).",
        ),
    ] = "imported",
    label_kind: Annotated[
        str | None,
        typer.Option(
            "--label-kind",
            help="For a new dataset: binary | proportion | ordinal | ordinal:C (C levels). Default: from the "
            "file. Fixed once the dataset exists; files that do not fit are refused.",
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split name (default: file stem if train/valid/test).")
    ] = None,
    extra_columns: Annotated[
        str,
        typer.Option(
            "--extra-columns",
            help="refuse | meta | drop: what happens to columns (or JSON fields) outside the schema: refuse "
            "the file (default: a misspelt field is an error), keep them in each response's meta, or leave "
            "them out.",
        ),
    ] = "refuse",
    db: DbOption = None,
) -> None:
    """Store a file's responses in a dataset: all rows or none. The file's sentence labels are recorded as
    imported (or gold) by you ($FRACTAL_ANNOTATOR, else your login name), now."""
    try:
        if format not in (None, "jsonl", "csv", "parquet"):
            raise InputError(f"unknown format {format!r}; use jsonl, csv or parquet", field="--format")
        if segment_mode not in ("sentences", "steps"):
            raise InputError(
                f"unknown segment mode {segment_mode!r}; use sentences or steps", field="--segment-mode"
            )
        check_mode(extra_columns, field="--extra-columns")
        engine = get_engine(db, create=False)
        purge_abandoned_imports(engine)  # staged rows of ingests whose process died before publishing
        with tqdm(desc=f"ingest {file.name}", unit=" responses", disable=None) as bar:

            def progress(done: int, total: int | None) -> None:
                bar.total = total
                bar.update(done - bar.n)

            summary = ingest_file(
                engine,
                file,
                dataset,
                format=format,  # type: ignore[arg-type]
                segment_mode=segment_mode,  # type: ignore[arg-type]
                labels_as=labels_as,  # type: ignore[arg-type]
                label_kind=label_kind,
                imported_by=importing_user(),
                split=split,
                extra_columns=extra_columns,  # type: ignore[arg-type]
                progress=progress,
            )
    except InputError as err:
        raise _fail(str(err), 2) from None
    except SchemaOutdatedError as err:
        raise _fail(str(err), 1) from None
    typer.echo(
        f"ingested {summary.n_responses} responses, {summary.n_sentences} sentences, {summary.n_labels} "
        f"sentence labels ({summary.labels_source}) into dataset {summary.dataset!r} in {summary.seconds:.1f} s"
        + (f"; extra columns {summary.extras_note()}" if summary.extra_columns else "")
        + (
            f"; one dataset per criterion: {', '.join(summary.criteria_datasets)}"
            if summary.criteria_datasets
            else ""
        )
    )


def export(
    out: Annotated[Path, typer.Argument(help="Output file (written atomically).")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name.")],
    format: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")],
    model: Annotated[
        int | None, typer.Option("--model", help="Model version number (default: the active one).")
    ] = None,
    positive_is: Annotated[
        str | None,
        typer.Option(
            "--positive-is",
            help="bad | good: what a positive sentence label means (default: from the aggregation).",
        ),
    ] = None,
    human_only: Annotated[
        bool,
        typer.Option("--human-only", help="Only labels a person set in the tool (human, adjudicated)."),
    ] = False,
    soft_labels: Annotated[
        bool,
        typer.Option(
            "--soft-labels",
            help="Add the model's probability given the response label for every unlabelled sentence.",
        ),
    ] = False,
    scores_as_labels: Annotated[
        bool,
        typer.Option(
            "--scores-as-labels",
            help="Step formats: fill unlabelled steps from the model's score given the response label "
            "(source 'score'); without it a score never becomes a hard label.",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Write a dataset as native JSONL, stepwise JSONL/Parquet, PRM800K step ratings or KTO pairs."""
    try:
        engine = get_engine(db, create=False)
        summary = export_dataset(
            engine,
            dataset,
            out,
            format=format,  # type: ignore[arg-type]
            model_version=model,
            positive_is=positive_is,  # type: ignore[arg-type]
            human_only=human_only,
            soft_labels=soft_labels,
            scores_as_labels=scores_as_labels,
        )
    except InputError as err:
        raise _fail(str(err), 2) from None
    except SchemaOutdatedError as err:
        raise _fail(str(err), 1) from None
    skipped = "".join(f" ({n} responses left out: {why})" for why, n in sorted(summary.left_out.items()))
    version = f", scores of model version {summary.model_version}" if summary.model_version else ""
    typer.echo(f"wrote {summary.n_rows} rows to {summary.path} ({summary.format}{version}){skipped}")


db_app = typer.Typer(help="Database schema and contents.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Migrate the store to the newest schema; creates a new store when the path or database is empty."""
    try:
        engine = get_engine(db, check_schema=False, create=True)
        before = current_revision(engine)
        created = before is None and not inspect(engine).get_table_names()
        upgrade(engine)
    except InputError as err:
        raise _fail(str(err), 2) from None
    except CommandError as err:  # a revision this version does not know: the store was written by a newer one
        raise _fail(
            f"cannot upgrade the store: {err}; it was written by a newer version of FRACTAL Studio", 1
        ) from None
    where = shown_url(engine.url)
    if created:
        typer.echo(f"created a new store at {where} (schema {current_revision(engine)})")
    else:
        typer.echo(f"store {where}: schema {before or 'none'} -> {current_revision(engine)} (head)")


@db_app.command("current")
def db_current(db: DbOption = None) -> None:
    """Print the store's schema revision and the newest one."""
    try:
        engine = get_engine(db, check_schema=False, create=False)
        require_store(engine)
    except InputError as err:
        raise _fail(str(err), 2) from None
    current = current_revision(engine)
    head = head_revision()
    state = "up to date" if current == head else "outdated: run `fractal db upgrade`"
    typer.echo(f"current {current or 'none'}, head {head} ({state})")


@db_app.command("datasets")
def db_datasets(
    dataset: Annotated[str | None, typer.Argument(help="Show one dataset's model versions.")] = None,
    db: DbOption = None,
) -> None:
    """List datasets with counts, gold budget and label balance (or one dataset's model versions)."""
    try:
        engine = get_engine(db, create=False)
        if dataset is not None:
            row = require_dataset(engine, dataset)
            for mv in list_model_versions(engine, row.id):
                active = " (active)" if mv.is_active else ""
                typer.echo(
                    f"v{mv.version} {mv.method} {mv.status}{active} scores={mv.n_scores} metrics={mv.metrics}"
                )
            return
        for d in list_datasets(engine):
            balance = ", ".join(f"{k}: {v}" for k, v in d.label_balance.items())
            typer.echo(
                f"{d.name}: {d.n_responses} responses, {d.n_sentences} sentences, {d.label_kind} labels "
                f"({balance}), gold {d.n_gold_responses}/{d.n_responses} (target {d.gold_target:.0%})"
            )
    except InputError as err:
        raise _fail(str(err), 2) from None
    except SchemaOutdatedError as err:
        raise _fail(str(err), 1) from None


@db_app.command("check")
def db_check(db: DbOption = None) -> None:
    """Check that the current labels (and each annotator's own labels) equal the replay of the label history.

    Exit 0 when they do, 1 with one line per drift (table, ids, stored, replayed) when they do not."""
    try:
        engine = get_engine(db)
        report = check_store(engine)
    except InputError as err:
        raise _fail(str(err), 2) from None
    except SchemaOutdatedError as err:
        raise _fail(str(err), 1) from None
    for d in report.drift:
        typer.echo(f"drift: {d.table} {d.key}: stored {d.stored}, history says {d.replayed}")
    if report.drift:
        raise _fail(f"{len(report.drift)} drift(s) between the current views and the label history", 1)
    typer.echo(
        f"store is consistent: {report.n_current} current labels and {report.n_annotations} own labels "
        "equal the replay of the label history"
    )


def register(app: typer.Typer) -> None:
    """Add ``ingest``, ``export`` and the ``db`` group to the ``fractal`` Typer app."""
    app.command("ingest")(ingest)
    app.command("export")(export)
    app.add_typer(db_app, name="db")
