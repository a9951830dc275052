"""Errors that reach users: each names where the problem is and why."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input, located as precisely as we can: ``file:line:field: why``.

    The CLI prints ``str(err)`` on one line and exits with code 2; nothing is written before the
    whole input has been validated.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        column: int | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.column = (
            column  # 1-based character column in the physical line, when known (the message says it)
        )
        self.reason = message
        where = ":".join(str(p) for p in (file, line, field) if p is not None)
        super().__init__(f"{where}: {message}" if where else message)
