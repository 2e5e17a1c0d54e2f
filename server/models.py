"""Request and response models of the accounts, organizations and novel-registry API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")]
Role = Literal["owner", "admin", "member", "viewer"]
Visibility = Literal["private", "public"]
NovelStatus = Literal["draft", "in_progress", "completed", "published", "archived"]
Limit = Annotated[int, Field(ge=1, le=200)]
Cursor = Annotated[str, StringConstraints(max_length=200)]
# Bodies take JSON numbers as they are (`false` is not 0, "5" is not 5); query
# parameters stay lax because a query string is text by nature.
WordCount = Annotated[StrictInt, Field(ge=0, le=100_000_000)]
NovelTitle = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def not_null() -> Any:
    """A PATCH field that may be left out but not set to null: the model refuses null
    (declare the type `T | SkipJsonSchema[None]`), and the document does not offer it."""
    return Field(default=None, json_schema_extra=_without_default)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a time zone, e.g. 2027-01-01T00:00:00Z")
    return value.astimezone(UTC)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    class ErrorBody(BaseModel):
        code: str
        message: str
        details: dict

    error: ErrorBody


class User(BaseModel):
    id: str
    name: str
    email: str
    created_at: str


class SignupBody(Strict):
    name: Name
    email: EmailStr
    password: Annotated[str, Field(min_length=8, max_length=1024)]


class LoginBody(Strict):
    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=320)]
    password: Annotated[str, Field(max_length=1024)]


class AuthAnswer(BaseModel):
    user: User
    token: str
    expires_at: str


class Membership(BaseModel):
    id: str
    slug: str
    name: str
    role: Role


class Me(BaseModel):
    user: User
    organizations: list[Membership]
    active_organization_id: str | None = None
    active_team_id: str | None = None


class Session(BaseModel):
    id: str
    user_agent: str | None
    active_organization_id: str | None
    active_team_id: str | None
    created_at: str
    last_used_at: str
    expires_at: str
    current: bool = False


class SessionList(BaseModel):
    items: list[Session]
    next_cursor: str | None = None


class SessionContextBody(Strict):
    organization: Slug | None = None
    team_id: Annotated[str, StringConstraints(max_length=64)] | None = None


def _scopes(scopes: list[str]) -> list[str]:
    # Reads are never scope-checked, so a token that may write may read too.
    return ["read", "write"] if "write" in scopes else ["read"]


class TokenBody(Strict):
    name: Name
    scopes: Annotated[
        list[Literal["read", "write"]],
        Field(min_length=1, max_length=2, description='"write" implies "read"'),
        AfterValidator(_scopes),
    ]
    expires_at: Annotated[datetime, AfterValidator(_aware)] | None = None


class AccessToken(BaseModel):
    id: str
    name: str
    token_prefix: str
    scopes: list[str]
    created_at: str
    last_used_at: str | None
    expires_at: str


class NewAccessToken(AccessToken):
    token: str


class AccessTokenList(BaseModel):
    items: list[AccessToken]
    next_cursor: str | None = None


class OrgBody(Strict):
    name: Name
    slug: Slug


class OrgPatch(Strict):
    name: Name


class Organization(BaseModel):
    id: str
    slug: str
    name: str
    personal: bool
    created_at: str
    updated_at: str
    role: Role | None = None


class MemberBody(Strict):
    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=320)]
    role: Role


class MemberPatch(Strict):
    role: Role


class Member(BaseModel):
    user_id: str
    name: str
    email: str
    role: Role
    created_at: str


class MemberList(BaseModel):
    items: list[Member]
    next_cursor: str | None = None


class TeamBody(Strict):
    name: Name


class TeamMemberBody(Strict):
    user_id: Annotated[str, StringConstraints(max_length=64)]


class TeamMember(BaseModel):
    user_id: str
    name: str


class Team(BaseModel):
    id: str
    organization_id: str
    name: str
    created_at: str
    members: list[TeamMember]


class TeamList(BaseModel):
    items: list[Team]
    next_cursor: str | None = None


class NovelBody(Strict):
    title: NovelTitle
    org: Slug | None = None
    description: Annotated[str, Field(max_length=10_000)] | None = None
    genre: Annotated[str, Field(max_length=200)] | None = None
    status: NovelStatus | None = None
    visibility: Visibility | None = None
    target_word_count: WordCount | None = None


class NovelPatch(Strict):
    title: NovelTitle | SkipJsonSchema[None] = not_null()
    description: Annotated[str, Field(max_length=10_000)] | None = None
    genre: Annotated[str, Field(max_length=200)] | None = None
    status: NovelStatus | SkipJsonSchema[None] = not_null()
    visibility: Visibility | SkipJsonSchema[None] = not_null()
    target_word_count: WordCount | None = None

    @model_validator(mode="after")
    def _required_fields_are_not_null(self) -> NovelPatch:
        # Optional fields are cleared by null; these always have a value.
        for name in ("title", "status", "visibility"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class Novel(BaseModel):
    id: str
    title: str
    description: str | None
    genre: str | None
    status: str
    visibility: Visibility
    target_word_count: int | None
    current_word_count: int
    head: str | None
    last_written_at: str | None
    owner_id: str
    organization_id: str
    organization_slug: str
    created_at: str
    updated_at: str


class NovelList(BaseModel):
    items: list[Novel]
    next_cursor: str | None = None


class PageQuery(Strict):
    limit: Limit = 50
    cursor: Cursor | None = None


class NovelListQuery(PageQuery):
    org: Slug | None = None


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    repositories: str
