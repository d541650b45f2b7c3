"""Request and response bodies of the notes API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.db.models import TITLE_MAX_LENGTH

BODY_MAX_LENGTH = 100_000

Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX_LENGTH)
]
Body = Annotated[str, StringConstraints(max_length=BODY_MAX_LENGTH)]


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    body: Body = ""
    pinned: bool = False


class NoteUpdate(BaseModel):
    """A partial update: only the fields present in the request change."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    body: Body | None = None
    pinned: bool | None = None

    @model_validator(mode="after")
    def _no_explicit_nulls(self) -> Self:
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"fields may be omitted but not null: {', '.join(nulls)}")
        return self


class NoteRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    body: str
    pinned: bool
    created_at: datetime
    updated_at: datetime


class HealthOut(BaseModel):
    status: str
    database: str
    release: str
    detail: str | None = Field(default=None, description="why the database check failed")


class ReadinessOut(BaseModel):
    status: str
    database: str
    release: str
    database_revision: str | None
    expected_revision: str
    detail: str | None = None
