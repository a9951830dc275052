"""First-run preparation for ``fractal serve``: migrate the store, seed the demo dataset, queue its training, and
make the first admin account when sign-in is on and there is none."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, inspect

from app.jobs import queue_after_import
from app.settings import AppSettings
from db import accounts
from db import repository as repo
from db.engine import get_engine, shown_url
from db.ingest import ingest_file
from db.schema import current_revision, head_revision, upgrade
from fractal_core.errors import InputError

DEMO_DATASET = "demo"
FIRST_ADMIN = "admin"


class SetupError(RuntimeError):
    """The store cannot be prepared (unreachable, or written by a newer version)."""


def migrate(engine: Engine) -> str | None:
    """Bring the schema to head; returns a message when a store was created or migrated."""
    before = current_revision(engine)
    if before == head_revision():
        return None
    created = before is None and not inspect(engine).get_table_names()
    try:
        upgrade(engine)
    except Exception as exc:  # alembic raises for revisions it does not know (a newer FRACTAL wrote them)
        raise SetupError(f"cannot migrate the database from revision {before}: {exc}") from exc
    if created:
        return f"created a new store at {shown_url(engine.url)} (schema {head_revision()})"
    return f"database migrated {before or 'empty'} -> {head_revision()}"


def seed_demo(engine: Engine) -> str | None:
    """Ingest the bundled demo data into an EMPTY store and queue its first training job.

    Returns a message when the demo was loaded; None when the store already had datasets (never touched).
    """
    from fractal_core.data.demo import demo_path

    if repo.list_datasets(engine):
        return None
    summary = ingest_file(engine, demo_path(), DEMO_DATASET)
    # Embedding first, as its own job: it reports progress per batch, and the training queued after it (as
    # after any import into a dataset without a model) then reads the cache.
    queue_after_import(engine, summary.dataset_id, bundled_embeddings=True)
    return (
        f"loaded the demo dataset ({summary.n_responses} responses, {summary.n_sentences} sentences) "
        "and queued its first training job"
    )


def prepare_store(settings: AppSettings, *, load_demo: bool = True) -> str:
    """Migrate (creating the database if needed) and optionally seed the demo; returns what was done."""
    try:
        engine = get_engine(settings.db_url, check_schema=False, create=True)
        messages = [migrate(engine)]
        if load_demo:
            messages.append(seed_demo(engine))
    except SetupError:
        raise
    except InputError as exc:  # a URL that cannot be opened: its one line already names the store
        raise SetupError(str(exc)) from exc
    except Exception as exc:
        raise SetupError(f"cannot prepare the store at {shown_url(settings.db_url)}: {exc}") from exc
    finally:
        if "engine" in locals():
            engine.dispose()
    return "\n".join(m for m in messages if m)


def ensure_admin(
    settings: AppSettings, *, interactive: bool, ask: Callable[[], str] | None = None
) -> str | None:
    """Make the first admin when the store has no user at all; returns what to tell the operator.

    On a terminal (``interactive``) the password is asked for (``ask``); otherwise a random one-time password
    is printed: the first sign-in with it must choose a different one, and it stops working if unused for
    ``FRACTAL_ONE_TIME_PASSWORD_HOURS`` (default 24). Nothing is printed or stored in clear after that: the
    store keeps the argon2 hash only.
    """
    engine = get_engine(settings.db_url, create=False)
    try:
        if accounts.count_users(engine):
            return None
        if interactive and ask is not None:
            accounts.add_user(engine, FIRST_ADMIN, "admin", ask())
            return f"created the first admin account {FIRST_ADMIN!r} with the password you typed"
        ttl = accounts.one_time_password_ttl()
        password = accounts.new_one_time_password()
        accounts.add_user(engine, FIRST_ADMIN, "admin", password, must_change_password=True, one_time_ttl=ttl)
        return (
            f"created the first admin account {FIRST_ADMIN!r} with the one-time password {password} "
            f"(valid for {ttl.total_seconds() / 3600:g} h; the first sign-in asks for a new one, and "
            f"`fractal users passwd {FIRST_ADMIN} --one-time` makes another; add your team with "
            "`fractal users add NAME --role ROLE`)"
        )
    except Exception as exc:  # an InputError (a too short password) or an unreachable store
        raise SetupError(f"cannot create the first admin: {exc}") from exc
    finally:
        engine.dispose()
