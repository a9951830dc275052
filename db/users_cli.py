"""``fractal users add|list|set-role|disable|enable|passwd``: manage accounts from the command line.

Whoever can run these can open the store, so they are the administrator's tools (the first admin of a team is
made here or by the first ``fractal serve``). Passwords are read from standard input when it is not a terminal
(``echo "$PW" | fractal users add ann --role annotator``), else asked for twice without echo; they never appear
in arguments, output or logs, except a one-time password made by ``passwd --one-time``, printed once to hand
over. Bad input prints one line and exits with code 2.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from db import accounts
from db.cli import DbOption
from db.engine import get_engine
from db.models import ROLES
from db.schema import SchemaOutdatedError
from fractal_core.errors import InputError

users_app = typer.Typer(
    help="Accounts: who may sign in to the app, and with which role.", no_args_is_help=True
)

RoleOption = Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.")]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def read_password(prompt: str = "Password") -> str:
    """One line from standard input when piped, else a hidden prompt asked twice."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))


def _run(fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except InputError as err:
        raise _fail(str(err), 2) from None
    except SchemaOutdatedError as err:
        raise _fail(str(err), 1) from None


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="Sign-in name (recorded with every label this user sets).")],
    role: RoleOption = "annotator",
    db: DbOption = None,
) -> None:
    """Create a user; the password comes from standard input or a prompt."""

    def work() -> None:
        engine = get_engine(db, create=False)
        accounts.validate_user_name(name)
        if role not in ROLES:
            raise InputError(f"unknown role {role!r}; roles: {', '.join(ROLES)}", field="--role")
        user = accounts.add_user(engine, name, role, read_password())
        typer.echo(f"added {user.name} ({user.role})")

    _run(work)


@users_app.command("list")
def users_list(db: DbOption = None) -> None:
    """Every user with role and state."""

    def work() -> None:
        for u in accounts.list_users(get_engine(db, create=False)):
            state = "disabled" if u.disabled else "active"
            extra = ", must change password" if u.must_change_password else ""
            typer.echo(f"{u.name}\t{u.role}\t{state}{extra}")

    _run(work)


@users_app.command("set-role")
def users_set_role(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help=f"One of: {', '.join(ROLES)}.")],
    db: DbOption = None,
) -> None:
    """Change a user's role (applies to their open sessions at once)."""

    def work() -> None:
        user = accounts.set_role(get_engine(db, create=False), name, role)
        typer.echo(f"{user.name} is now {user.role}")

    _run(work)


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="User name.")], db: DbOption = None) -> None:
    """Stop a user from signing in and end their sessions (their labels stay)."""

    def work() -> None:
        accounts.set_disabled(get_engine(db, create=False), name, True)
        typer.echo(f"disabled {name}")

    _run(work)


@users_app.command("enable")
def users_enable(name: Annotated[str, typer.Argument(help="User name.")], db: DbOption = None) -> None:
    """Let a disabled user sign in again."""

    def work() -> None:
        accounts.set_disabled(get_engine(db, create=False), name, False)
        typer.echo(f"enabled {name}")

    _run(work)


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="User name.")],
    one_time: Annotated[
        bool,
        typer.Option(
            "--one-time",
            help="Print a new random one-time password instead of reading one: it expires unused after "
            f"${accounts.ONE_TIME_TTL_ENV} hours (default 24), the user's sessions end, and the next "
            "sign-in must choose a different password.",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Set a new password for a user (from standard input or a prompt), or reset it with --one-time."""

    def work() -> None:
        engine = get_engine(db, create=False)
        if accounts.get_user(engine, name) is None:
            raise InputError(f"no user {name!r}", field="name")
        if one_time:
            ttl = accounts.one_time_password_ttl()
            password = accounts.reset_password(engine, name, one_time_ttl=ttl)
            hours = ttl.total_seconds() / 3600
            typer.echo(
                f"one-time password of {name}: {password} (works once, for {hours:g} h; the first sign-in "
                "chooses a new one)"
            )
            return
        accounts.set_password(engine, name, read_password("New password"))
        typer.echo(f"password of {name} changed")

    _run(work)


def register(app: typer.Typer) -> None:
    """Add the ``users`` group to the ``fractal`` Typer app."""
    app.add_typer(users_app, name="users")
