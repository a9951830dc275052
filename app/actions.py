"""Every action the app performs on the store, each checked against the acting user's role first.

The pages only lay out widgets and call these; none of them changes anything before
:func:`db.accounts.require_role` has accepted the signed-in user, so a crafted request (a widget the page did
not show, a direct call) is refused with :class:`db.accounts.PermissionDenied` and nothing is written. The
label recorded is always the acting user's name, never a name the user typed.

Who may do what:

- annotator: label sentences, undo their own changes;
- reviewer: also adjudicate and see agreement;
- admin: also upload, train, cancel jobs, activate or roll back models, export, set the gold target and
  manage users.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app import review, uploads
from db import accounts
from db import repository as repo
from db.accounts import require_role
from db.export import ExportSummary, export_dataset
from db.rows import IngestSummary, JobRow, ModelVersionRow, SaveResult, UndoResult, UserRow

# ------------------------------------------------------------------------------------------------ labels


def save_labels(engine: Engine, actor: UserRow, proposal: review.Proposal) -> SaveResult:
    """Store a proposal as the actor's labels (one action, one undo)."""
    require_role(actor, "annotator", "labelling")
    return review.store(engine, proposal, actor.name)


def undo(engine: Engine, actor: UserRow, response_id: int) -> UndoResult | None:
    """Undo the actor's own last change in a response."""
    require_role(actor, "annotator", "undo")
    return repo.undo_last(engine, actor.name, response_id=response_id)


# ------------------------------------------------------------------------------------------------ admin


def set_gold_target(engine: Engine, actor: UserRow, dataset_id: int, fraction: float) -> None:
    require_role(actor, "admin", "changing the gold target")
    repo.set_gold_target(engine, dataset_id, fraction)


def import_file(
    engine: Engine, actor: UserRow, path: Path, dataset: str, options: dict[str, Any]
) -> IngestSummary:
    require_role(actor, "admin", "uploading data")
    return uploads.import_now(engine, path, dataset, options)


def queue_import(engine: Engine, actor: UserRow, path: Path, dataset: str, options: dict[str, Any]) -> JobRow:
    require_role(actor, "admin", "uploading data")
    return uploads.queue_import(engine, path, dataset, options)


def start_training(
    engine: Engine, actor: UserRow, dataset_id: int, method: str, config: dict[str, Any], seed: int
) -> JobRow:
    """Queue a training job (one live job per dataset: a second click returns the same job)."""
    require_role(actor, "admin", "training")
    payload = {"dataset_id": dataset_id, "method": method, "config": config, "seed": int(seed)}
    return repo.create_job(engine, "train", payload, idempotency_key=f"train:{dataset_id}")


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
    engine: Engine, actor: UserRow, dataset_id: int, out: Path, *, format: str, model_version: int | None
) -> ExportSummary:
    require_role(actor, "admin", "exporting")
    return export_dataset(engine, dataset_id, out, format=format, model_version=model_version)  # type: ignore[arg-type]


def queue_export(
    engine: Engine, actor: UserRow, dataset_id: int, *, format: str, model_version: int | None
) -> JobRow:
    require_role(actor, "admin", "exporting")
    return repo.create_job(
        engine,
        "export",
        {"dataset_id": dataset_id, "format": format, "model_version": model_version},
        idempotency_key=f"export:{dataset_id}:{format}",
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
