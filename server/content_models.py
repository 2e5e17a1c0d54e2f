"""Request and response models of chapters, characters, locations and raw files."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Short = Annotated[str, Field(max_length=300)]
Long = Annotated[str, Field(max_length=20_000)]
ChapterStatus = Literal["draft", "in_progress", "completed", "published"]
Blob = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
# Bodies are bounded by the file-size limit, checked on the encoded text.
Body = str


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChapterFields(Strict):
    """Front-matter fields a writer may set on create and change on update."""

    number: Annotated[StrictInt, Field(ge=0, le=1_000_000)] | None = None
    status: ChapterStatus | None = None
    summary: Long | None = None
    content: Body | None = None


class ChapterBody(ChapterFields):
    title: Title


class ChapterPatch(ChapterFields):
    title: Title | None = None
    base_blob: Blob | None = None


class Chapter(BaseModel):
    id: str
    path: str
    title: str
    number: int
    status: str
    word_count: int
    blob: str


class ChapterAnswer(BaseModel):
    chapter: Chapter
    head: str


class ChapterFull(Chapter):
    summary: str | None = None
    content: str


class ChapterList(BaseModel):
    items: list[Chapter]
    next_cursor: str | None = None


class ReorderBody(Strict):
    order: Annotated[
        list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=10_000)
    ]


class HeadAnswer(BaseModel):
    head: str


class CharacterFields(Strict):
    content: Body | None = None
    role: Short | None = None
    appearance: Long | None = None
    personality: Long | None = None
    backstory: Long | None = None
    motivation: Long | None = None
    image: Short | None = None


class CharacterBody(CharacterFields):
    name: Title


class CharacterPatch(CharacterFields):
    name: Title | None = None
    base_blob: Blob | None = None


class Character(BaseModel):
    id: str
    path: str
    name: str
    role: str | None
    word_count: int
    blob: str


class CharacterAnswer(BaseModel):
    character: Character
    head: str


class CharacterFull(Character):
    appearance: str | None = None
    personality: str | None = None
    backstory: str | None = None
    motivation: str | None = None
    image: str | None = None
    content: str


class CharacterList(BaseModel):
    items: list[Character]
    next_cursor: str | None = None


class LocationFields(Strict):
    content: Body | None = None
    type: Short | None = None
    parent: Annotated[str, StringConstraints(max_length=64)] | None = None
    image: Short | None = None


class LocationBody(LocationFields):
    name: Title


class LocationPatch(LocationFields):
    name: Title | None = None
    base_blob: Blob | None = None


class Location(BaseModel):
    id: str
    path: str
    name: str
    type: str | None
    parent_id: str | None
    word_count: int
    blob: str


class LocationAnswer(BaseModel):
    location: Location
    head: str


class LocationFull(Location):
    image: str | None = None
    content: str


class LocationList(BaseModel):
    items: list[Location]
    next_cursor: str | None = None


class FileQuery(Strict):
    rev: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")] | None = None
