"""Roles and the one authorisation check (:func:`require_role`)."""

from __future__ import annotations

from db.models import ROLES
from db.rows import UserRow


class PermissionDenied(Exception):
    """The acting user's role does not allow the action (or nobody is signed in). Nothing was changed."""


def role_rank(role: str) -> int:
    """0 for annotator, 1 reviewer, 2 admin; ValueError for anything else."""
    try:
        return ROLES.index(role)
    except ValueError:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}") from None


def has_role(user: UserRow | None, role: str) -> bool:
    """Whether ``user`` (None: nobody signed in) is active and has ``role`` or a higher one."""
    return user is not None and not user.disabled and role_rank(user.role) >= role_rank(role)


def require_role(user: UserRow | None, role: str, action: str = "this") -> UserRow:
    """Return ``user`` if it may act as ``role``; else raise :class:`PermissionDenied` naming what is needed."""
    if user is None:
        raise PermissionDenied(f"sign in to do {action}")
    if not has_role(user, role):
        raise PermissionDenied(f"{action} needs the {role} role; {user.name} is {user.role}")
    return user
