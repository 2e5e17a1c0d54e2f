"""The sync protocol's request and response models (the API contract of api.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

CommitId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
DeviceId = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$")
]
OpId = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$")]


class Change(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Annotated[str, StringConstraints(max_length=1000)]
    content: str | None


class SyncBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: DeviceId
    op_id: OpId
    base: CommitId | None
    message: Annotated[str, StringConstraints(max_length=2000)] | None = None
    changes: list[Change] = Field(default_factory=list)


class FileState(BaseModel):
    path: str
    content: str | None
    blob: str | None


class ConflictRecord(BaseModel):
    id: str
    path: str
    field: str | None = None
    base: str | None
    ours: str | None
    theirs: str | None


class SyncAnswer(BaseModel):
    head: str
    status: Literal["noop", "fast_forward", "merged", "conflicted"]
    files: list[FileState]
    conflicts: list[ConflictRecord]


class PullQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: CommitId | None = None


class PullAnswer(BaseModel):
    head: str
    files: list[FileState]


class OpenConflict(ConflictRecord):
    device_id: str
    device_commit: str
    merge_commit: str
    created_at: str


class ConflictList(BaseModel):
    items: list[OpenConflict]
    next_cursor: str | None = None


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str | None


class FeedQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cursor: Annotated[str, StringConstraints(max_length=200)] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 200


class FeedItem(BaseModel):
    novel_id: str
    head: str
    updated_at: str


class Feed(BaseModel):
    cursor: str
    items: list[FeedItem]
