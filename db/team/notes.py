"""Comments and flags on a response."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import NOTE_FLAGS, Response, ResponseNote, utcnow
from db.rows import NoteRow
from fractal_core.errors import InputError

MAX_NOTE_CHARS = 2000


def add_note(engine: Engine, response_id: int, author: str, text: str, flag: str | None = None) -> NoteRow:
    """A comment (and optionally a flag: one of NOTE_FLAGS) on a response, by ``author``."""
    text = (text or "").strip()
    if flag is not None and flag not in NOTE_FLAGS:
        raise InputError(f"flag must be one of {', '.join(NOTE_FLAGS)}, got {flag!r}", field="flag")
    if not text and flag is None:
        raise InputError("write a comment or choose a flag", field="comment")
    if len(text) > MAX_NOTE_CHARS:
        raise InputError(f"comments are limited to {MAX_NOTE_CHARS} characters", field="comment")

    def work(session: Session) -> NoteRow:
        if session.get(Response, response_id) is None:
            raise InputError(f"no response with id {response_id}", field="response_id")
        note = ResponseNote(response_id=response_id, author=author, flag=flag, text=text, created_at=utcnow())
        session.add(note)
        session.flush()
        return NoteRow(note.id, response_id, author, flag, text, note.created_at)

    return run_write(engine, work)


def notes(engine: Engine, response_id: int) -> list[NoteRow]:
    return run_read(
        engine,
        lambda s: [
            NoteRow(n.id, n.response_id, n.author, n.flag, n.text, n.created_at)
            for n in s.scalars(
                select(ResponseNote).where(ResponseNote.response_id == response_id).order_by(ResponseNote.id)
            )
        ],
    )
