"""``fractal segments merge|split|undo``: fix a response's split from the command line (:mod:`db.repository.
segment_edits`). Like the other store commands: ``--db URL`` (alias ``--store``), a store that does not exist
is refused, bad input is one line and exit code 2 with nothing written, an outdated schema exit code 1.
Sentences are numbered from 1, as on the Review page; ``--at`` counts characters from the sentence's start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from sqlalchemy import Engine

from db.cli import importing_user
from db.engine import get_engine
from db.repository import (
    merge_sentences,
    require_dataset,
    response_id_by_external,
    split_sentence,
    undo_segment_edit,
)
from db.rows import SegmentEditResult
from db.schema import SchemaOutdatedError
from fractal_core.errors import InputError

segments_app = typer.Typer(
    help="Fix a response's split: merge two sentences, split one, undo.", no_args_is_help=True
)

OPTION_FIELDS = ("at", "sentence", "user", "response")
StoreOpt = Annotated[
    str | None,
    typer.Option("--db", "--store", help="Database URL (default: $FRACTAL_DB_URL, else the default store)."),
]
DatasetOpt = Annotated[str, typer.Option("--dataset", help="Dataset name.")]
ResponseOpt = Annotated[str, typer.Option("--response", help="The response's id in its input file.")]
SentenceOpt = Annotated[int, typer.Option("--sentence", help="Sentence number, from 1 (as on Review).")]
UserOpt = Annotated[
    str | None,
    typer.Option("--user", help="Who makes the change (default: $FRACTAL_ANNOTATOR, else your login name)."),
]


def _run(
    db: str | None, dataset: str, response: str, edit: Callable[[Engine, int], SegmentEditResult | None]
) -> SegmentEditResult | None:
    try:
        engine = get_engine(db, create=False)
        ds = require_dataset(engine, dataset)
        response_id = response_id_by_external(engine, ds.id, response)
        if response_id is None:
            raise InputError(f"dataset {dataset!r} has no response {response!r}", field="--response")
        return edit(engine, response_id)
    except InputError as err:
        # The library names its fields after the edit (at, sentence, user); here they are the options.
        if err.field in OPTION_FIELDS:
            err = InputError(err.reason, field=f"--{err.field}")
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except SchemaOutdatedError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


def _position(sentence: int) -> int:
    if sentence < 1:
        raise InputError(f"sentences are numbered from 1, got {sentence}", field="--sentence")
    return sentence - 1


def _said(result: SegmentEditResult, what: str) -> None:
    ended = (
        f"; {result.ended_labels} label(s) ended, kept in the edit's history" if result.ended_labels else ""
    )
    typer.echo(f"{what} (now {result.n_sentences} sentences{ended}); scores are stale until the next scoring")


@segments_app.command("merge")
def merge(
    dataset: DatasetOpt,
    response: ResponseOpt,
    sentence: SentenceOpt,
    user: UserOpt = None,
    db: StoreOpt = None,
) -> None:
    """Merge sentence N with the next one."""
    who = user or importing_user()
    result = _run(db, dataset, response, lambda e, rid: merge_sentences(e, rid, _position(sentence), who))
    assert result is not None
    _said(result, f"merged sentences {sentence} and {sentence + 1} of {response}")


@segments_app.command("split")
def split(
    dataset: DatasetOpt,
    response: ResponseOpt,
    sentence: SentenceOpt,
    at: Annotated[
        int,
        typer.Option("--at", help="Where the second part starts, in characters from the sentence's start."),
    ],
    user: UserOpt = None,
    db: StoreOpt = None,
) -> None:
    """Split sentence N in two at character OFFSET."""
    who = user or importing_user()
    result = _run(db, dataset, response, lambda e, rid: split_sentence(e, rid, _position(sentence), at, who))
    assert result is not None
    _said(result, f"split sentence {sentence} of {response} at {at}")


@segments_app.command("undo")
def undo(dataset: DatasetOpt, response: ResponseOpt, user: UserOpt = None, db: StoreOpt = None) -> None:
    """Undo the response's last split fix not yet undone (its sentences and the labels it ended come back)."""
    who = user or importing_user()
    result = _run(db, dataset, response, lambda e, rid: undo_segment_edit(e, rid, who))
    if result is None:
        typer.echo(f"nothing to undo: no split fix of {response} is left to undo")
        return
    restored = f"; {result.restored_labels} label(s) restored" if result.restored_labels else ""
    _said(result, f"undid the last split fix of {response}{restored}")


def register(app: typer.Typer) -> None:
    """Add the ``segments`` group to the ``fractal`` Typer app."""
    app.add_typer(segments_app, name="segments")
