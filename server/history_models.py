"""Request and response models of the History part of api.md."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sync.models import DeviceId, OpId

# A full commit id, or a unique abbreviation of at least 7 hex digits (as Git shows).
RevisionRef = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{7,40}$")]
PathFilter = Annotated[str, StringConstraints(min_length=1, max_length=200)]
ChangeKind = Literal["added", "modified", "deleted", "renamed"]


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: PathFilter | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, StringConstraints(max_length=2000)] | None = None


class RevisionAuthor(BaseModel):
    id: str | None = Field(description="The writer's user id; null for commits made outside")
    name: str


class PathChange(BaseModel):
    path: str
    old_path: str | None = Field(description="The name before a rename")
    change: ChangeKind
    words_added: int
    words_removed: int


class RevisionItem(BaseModel):
    rev: str
    parents: list[str]
    author: RevisionAuthor
    device_id: str | None
    message: str
    time: str = Field(description="Author time, RFC 3339 UTC")
    paths: list[str]
    words_added: int
    words_removed: int
    changes: list[PathChange]


class HistoryPage(BaseModel):
    items: list[RevisionItem]
    next_cursor: str | None


class DiffQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # `from` is a Python keyword: the field takes it as its alias.
    since: RevisionRef | None = Field(
        None, alias="from", description="Default: the first parent of `to`"
    )
    to: RevisionRef | None = Field(None, description="Default: the head")
    path: PathFilter | None = None
    granularity: Literal["word", "line"] | None = Field(
        None, description="Default: word for Markdown files, line for others"
    )


class DiffOp(BaseModel):
    op: Literal["equal", "insert", "delete"]
    text: str


class FileDiff(BaseModel):
    path: str
    old_path: str | None
    change: ChangeKind
    binary: bool
    ops: list[DiffOp]


class DiffAnswer(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)

    since: str | None = Field(alias="from", description="null: the empty tree (a first commit)")
    to: str
    files: list[FileDiff]


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    rev: RevisionRef
    message: Annotated[str, StringConstraints(max_length=2000)] | None = None
    device_id: DeviceId | None = Field(None, description="With op_id: a retry answers once")
    op_id: OpId | None = None


class DayWords(BaseModel):
    date: str = Field(description="A UTC day, YYYY-MM-DD")
    words: int = Field(description="Net words written that day")
    total: int = Field(description="Words of the novel at the end of the day")
    added: int
    removed: int


class ChapterDay(BaseModel):
    date: str
    words: int


class ChapterWords(BaseModel):
    id: str
    path: str
    title: str
    number: int
    words: int
    days: list[ChapterDay]


class StatsAnswer(BaseModel):
    total_words: int
    days: list[DayWords]
    chapters: list[ChapterWords]
