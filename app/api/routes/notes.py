"""CRUD for notes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from sqlalchemy import delete, select

from app.api.deps import SessionDep
from app.db.models import Note
from app.schemas import NoteCreate, NoteRead, NoteUpdate

router = APIRouter(prefix="/notes", tags=["notes"])

# PostgreSQL BIGINT; a larger id cannot exist and must be a 422, not a database error.
NoteId = Annotated[int, Path(ge=1, le=2**63 - 1)]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No note with this id"}
}


async def _get_or_404(session: SessionDep, note_id: int) -> Note:
    note = await session.get(Note, note_id)
    if note is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="note not found")
    return note


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_note(payload: NoteCreate, session: SessionDep) -> NoteRead:
    note = Note(**payload.model_dump())
    session.add(note)
    await session.commit()
    return NoteRead.model_validate(note)


@router.get("")
async def list_notes(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[NoteRead]:
    """Pinned notes first, then oldest first."""
    rows = await session.scalars(
        select(Note).order_by(Note.pinned.desc(), Note.id).limit(limit).offset(offset)
    )
    return [NoteRead.model_validate(note) for note in rows]


@router.get("/{note_id}", responses=_NOT_FOUND)
async def get_note(note_id: NoteId, session: SessionDep) -> NoteRead:
    return NoteRead.model_validate(await _get_or_404(session, note_id))


@router.patch("/{note_id}", responses=_NOT_FOUND)
async def update_note(note_id: NoteId, payload: NoteUpdate, session: SessionDep) -> NoteRead:
    note = await _get_or_404(session, note_id)
    changes = payload.model_dump(exclude_unset=True)
    if changes:
        for field, value in changes.items():
            setattr(note, field, value)
        # updated_at is set by the database (onupdate=now()) and read back by RETURNING.
        await session.commit()
    return NoteRead.model_validate(note)


@router.delete("/{note_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND)
async def delete_note(note_id: NoteId, session: SessionDep) -> Response:
    deleted = await session.scalar(delete(Note).where(Note.id == note_id).returning(Note.id))
    if deleted is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="note not found")
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
