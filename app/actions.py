"""Every action the app performs on the store, each checked against the acting user's role first.

The pages only lay out widgets and call these; none of them changes anything before
:func:`db.accounts.require_role` has accepted the signed-in user, so a crafted request (a widget the page did
not show, a direct call) is refused with :class:`db.accounts.PermissionDenied` and nothing is written. The
label recorded is always the acting user's name, never a name the user typed.

Who may do what:

- annotator: label sentences (only their own queue's responses once work is assigned), undo their own
  changes, fix a response's split (merge, split, undo the last split change) where they may label, comment
  and flag;
- reviewer: also adjudicate and see agreement;
- admin: also upload, train, cancel jobs, activate or roll back models, export, set the gold target and
  manage users.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app import review, uploads
from app.jobs import TrainPayload
from db import accounts, team
from db import repository as repo
from db.accounts import PermissionDenied, require_role
from db.export import ExportSummary, export_dataset
from db.repository.segment_edits import Spans
from db.rows import (
    AgreementReport,
    AssignSummary,
    IngestSummary,
    JobRow,
    ModelVersionRow,
    NoteRow,
    SaveResult,
    SegmentEditResult,
    UndoResult,
    UserRow,
)
from fractal_core.errors import InputError
from fractal_core.fitting import registry

# ------------------------------------------------------------------------------------------------ labels


def label_layer(engine: Engine, actor: UserRow, response_id: int) -> str:
    """Where the actor's labels of a response go: ``own`` (an overlap response in their queue: kept apart
    until adjudicated), ``gold`` (the shared view), or ``refused`` (assigned to others only, and the actor is
    an annotator: nobody else works on someone's assigned response unless overlap asks for it)."""
    people = team.assignees(engine, response_id)
    if actor.name in people and len(people) >= 2:
        return "own"
    if people and actor.name not in people and not accounts.has_role(actor, "reviewer"):
        return "refused"
    return "gold"


def save_labels(
    engine: Engine, actor: UserRow, proposal: review.Proposal, *, finished: bool = False
) -> SaveResult:
    """Store a proposal as the actor's labels (one action, one undo), in the layer :func:`label_layer` says;
    ``finished`` (Save & next) also marks the response done in the actor's queue."""
    require_role(actor, "annotator", "labelling")
    layer = label_layer(engine, actor, proposal.response_id)
    if layer == "refused":
        raise PermissionDenied("this response is assigned to other annotators")
    if layer == "own":
        result = team.record_annotations(engine, proposal.response_id, proposal.labels, actor.name)
    else:
        result = review.store(engine, proposal, actor.name)
    if finished:
        team.mark_done(engine, proposal.response_id, actor.name)
    return result


def undo(engine: Engine, actor: UserRow, response_id: int) -> UndoResult | None:
    """Undo the actor's own last change in a response (in the layer their labels go to)."""
    require_role(actor, "annotator", "undo")
    if label_layer(engine, actor, response_id) == "own":
        return team.undo_annotation(engine, actor.name, response_id)
    return repo.undo_last(engine, actor.name, response_id=response_id)


def _may_edit_split(engine: Engine, actor: UserRow, response_id: int) -> None:
    """A split is fixed by whoever may label the response (it changes the sentences everyone labels)."""
    require_role(actor, "annotator", "fixing a split")
    if label_layer(engine, actor, response_id) == "refused":
        raise PermissionDenied("this response is assigned to other annotators")
    # In a group of criteria the fix applies to the same response of every criterion: each must be open to you.
    if any(
        label_layer(engine, actor, rid) == "refused" for rid in repo.sibling_responses(engine, response_id)
    ):
        raise PermissionDenied(
            "the same response in another criterion of its group is assigned to other annotators"
        )


def merge_sentences(
    engine: Engine, actor: UserRow, response_id: int, position: int, *, expected: Spans
) -> SegmentEditResult:
    """Merge sentence ``position`` with the next one; ``expected``: the spans the actor's page showed."""
    _may_edit_split(engine, actor, response_id)
    return repo.merge_sentences(engine, response_id, position, actor.name, expected=expected)


def split_sentence(
    engine: Engine, actor: UserRow, response_id: int, position: int, offset: int, *, expected: Spans
) -> SegmentEditResult:
    """Split sentence ``position`` at ``offset`` characters from its start."""
    _may_edit_split(engine, actor, response_id)
    return repo.split_sentence(engine, response_id, position, offset, actor.name, expected=expected)


def undo_split(
    engine: Engine, actor: UserRow, response_id: int, *, expected: Spans
) -> SegmentEditResult | None:
    """Undo the response's last split change not yet undone (whoever made it), None when there is none."""
    _may_edit_split(engine, actor, response_id)
    return repo.undo_segment_edit(engine, response_id, actor.name, expected=expected)


def add_note(engine: Engine, actor: UserRow, response_id: int, text: str, flag: str | None) -> NoteRow:
    """A comment and/or flag on a response, by the actor."""
    require_role(actor, "annotator", "commenting")
    return team.add_note(engine, response_id, actor.name, text, flag)


# ------------------------------------------------------------------------------------------------ reviewers


def adjudicate(engine: Engine, actor: UserRow, response_id: int, labels: dict[int, int | None]) -> SaveResult:
    """Set the gold labels of an overlap response, recorded as adjudicated by the actor."""
    require_role(actor, "reviewer", "adjudicating")
    return team.adjudicate(engine, response_id, labels, actor.name)


def agreement(engine: Engine, actor: UserRow, dataset_id: int) -> AgreementReport:
    require_role(actor, "reviewer", "seeing agreement")
    return team.agreement(engine, dataset_id)


# ------------------------------------------------------------------------------------------------ admin


def set_overlap(
    engine: Engine, actor: UserRow, dataset_id: int, k: int, fraction: float
) -> team.TeamSettings:
    require_role(actor, "admin", "changing the overlap")
    return team.set_overlap(engine, dataset_id, k, fraction)


def assign(
    engine: Engine, actor: UserRow, dataset_id: int, annotators: list[str], seed: int = 0
) -> AssignSummary:
    require_role(actor, "admin", "assigning work")
    return team.assign(engine, dataset_id, annotators, seed=seed)


def set_guidelines(engine: Engine, actor: UserRow, dataset_id: int, text: str) -> team.TeamSettings:
    require_role(actor, "admin", "writing guidelines")
    return team.set_guidelines(engine, dataset_id, text)


def set_gold_target(engine: Engine, actor: UserRow, dataset_id: int, fraction: float) -> None:
    require_role(actor, "admin", "changing the gold target")
    repo.set_gold_target(engine, dataset_id, fraction)


def import_file(
    engine: Engine, actor: UserRow, path: Path, dataset: str, options: dict[str, Any]
) -> IngestSummary:
    require_role(actor, "admin", "uploading data")
    # The file's labels are recorded under the signed-in admin who imports them, never a name from the page.
    return uploads.import_now(engine, path, dataset, {**options, "imported_by": actor.name})


def queue_import(engine: Engine, actor: UserRow, path: Path, dataset: str, options: dict[str, Any]) -> JobRow:
    require_role(actor, "admin", "uploading data")
    return uploads.queue_import(engine, path, dataset, {**options, "imported_by": actor.name})


def start_training(
    engine: Engine,
    actor: UserRow,
    dataset_id: int,
    method: str,
    config: dict[str, Any],
    seed: int,
    *,
    scorer: str = "frozen",
    train_layers: int = 0,
    response_labels: str | None = None,
) -> JobRow:
    """Queue a training job (one live job per dataset: a second click returns the same job); ``InputError``
    naming the field when the method, the seed, the scorer or a setting is bad. ``response_labels``: on a
    dataset of preference pairs, train on the responses' own labels beside the pairs or not (None: default)."""
    require_role(actor, "admin", "training")
    payload: dict[str, Any] = {"dataset_id": dataset_id, "method": method, "config": config, "seed": seed}
    if scorer != "frozen":
        payload.update(scorer=scorer, train_layers=train_layers)
    if response_labels is not None:
        payload["response_labels"] = response_labels
    checked = TrainPayload.parse(payload)  # a bad setting is refused now, with its field named
    return repo.create_job(engine, "train", checked.to_dict(), idempotency_key=f"train:{dataset_id}")


def start_training_every_criterion(
    engine: Engine,
    actor: UserRow,
    dataset_id: int,
    method: str,
    config: dict[str, Any],
    seed: int,
    *,
    scorer: str = "frozen",
    train_layers: int = 0,
) -> list[tuple[str, JobRow | str]]:
    """On a dataset of a group of criteria: one training job per criterion's dataset (each as
    :func:`start_training`), or the reason a criterion's dataset cannot train with ``method`` (its gold labels
    are its own). Returns ``[(criterion, job or reason)]`` by criterion name."""
    require_role(actor, "admin", "training")
    siblings = repo.criteria_siblings(engine, dataset_id)
    if not siblings:
        raise InputError("this dataset does not belong to a group of criteria", field="dataset")
    out: list[tuple[str, JobRow | str]] = []
    for sibling in siblings:
        has_gold = repo.gold_budget(engine, sibling.id).gold_responses > 0
        refusal = registry.training_refusal(method, has_gold=has_gold)
        job = refusal or start_training(
            engine, actor, sibling.id, method, config, seed, scorer=scorer, train_layers=train_layers
        )
        out.append((str(sibling.criterion), job))
    return out


def start_joint_training(
    engine: Engine, actor: UserRow, dataset_id: int, method: str, config: dict[str, Any], seed: int
) -> JobRow:
    """On a dataset of a group of criteria: one training job that fits every criterion of the group in one model
    (shared encoder, one head per criterion; ``app.job_train_joint``) and publishes a version per criterion's
    dataset. One live joint job per group: a second click, from any criterion's page, returns the same job.
    ``InputError`` naming the field for a dataset outside a group, a method the joint fit does not train, or a
    bad setting."""
    require_role(actor, "admin", "training")
    siblings = repo.criteria_siblings(engine, dataset_id)
    if not siblings:
        raise InputError("this dataset does not belong to a group of criteria", field="dataset")
    payload = {"dataset_id": dataset_id, "method": method, "config": config, "seed": seed, "joint": True}
    checked = TrainPayload.parse(payload)  # a bad setting or method is refused now, with its field named
    key = f"train-joint:{siblings[0].criteria_group}"
    return repo.create_job(engine, "train", checked.to_dict(), idempotency_key=key)


def cancel_job(engine: Engine, actor: UserRow, job_id: int) -> None:
    require_role(actor, "admin", "cancelling a job")
    repo.request_cancel(engine, job_id)


def activate_model(engine: Engine, actor: UserRow, model_version_id: int) -> ModelVersionRow:
    require_role(actor, "admin", "activating a model")
    return repo.activate_model_version(engine, model_version_id)


def rollback_model(engine: Engine, actor: UserRow, dataset_id: int) -> ModelVersionRow | None:
    require_role(actor, "admin", "rolling back a model")
    return repo.rollback_model_version(engine, dataset_id)


def export_now(
    engine: Engine,
    actor: UserRow,
    dataset_id: int,
    out: Path,
    *,
    format: str,
    model_version: int | None,
    human_only: bool = False,
    soft_labels: bool = False,
) -> ExportSummary:
    require_role(actor, "admin", "exporting")
    return export_dataset(
        engine,
        dataset_id,
        out,
        format=format,  # type: ignore[arg-type]
        model_version=model_version,
        human_only=human_only,
        soft_labels=soft_labels,
    )


def queue_export(
    engine: Engine,
    actor: UserRow,
    dataset_id: int,
    *,
    format: str,
    model_version: int | None,
    human_only: bool = False,
    soft_labels: bool = False,
) -> JobRow:
    require_role(actor, "admin", "exporting")
    options = {"human_only": bool(human_only), "soft_labels": bool(soft_labels)}
    return repo.create_job(
        engine,
        "export",
        {"dataset_id": dataset_id, "format": format, "model_version": model_version, **options},
        idempotency_key=f"export:{dataset_id}:{format}:{int(human_only)}{int(soft_labels)}",
    )


# ------------------------------------------------------------------------------------------------ users


def add_user(engine: Engine, actor: UserRow, name: str, role: str, password: str) -> UserRow:
    require_role(actor, "admin", "managing users")
    return accounts.add_user(engine, name, role, password)


def set_role(engine: Engine, actor: UserRow, name: str, role: str) -> UserRow:
    require_role(actor, "admin", "managing users")
    return accounts.set_role(engine, name, role)


def set_disabled(engine: Engine, actor: UserRow, name: str, disabled: bool) -> UserRow:
    require_role(actor, "admin", "managing users")
    return accounts.set_disabled(engine, name, disabled)


def list_users(engine: Engine, actor: UserRow) -> list[UserRow]:
    require_role(actor, "admin", "managing users")
    return accounts.list_users(engine)


def change_own_password(engine: Engine, actor: UserRow, password: str) -> UserRow:
    """Any signed-in user may replace their own password (required after a one-time password)."""
    require_role(actor, "annotator", "changing your password")
    return accounts.set_password(engine, actor.name, password)
