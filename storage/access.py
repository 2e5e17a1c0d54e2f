"""The one permission rule: who may read, write or administer an organization or a novel.

Every route asks `authorize_org` or `authorize_novel`. A caller who may not read a
resource gets NotFound (never Forbidden), so existence does not leak across tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import apsw

from storage.db import Row, query_one
from storage.errors import Forbidden, NotFound


class Level(IntEnum):
    NONE = 0
    READ = 1
    WRITE = 2
    ADMIN = 3


ROLE_LEVEL = {
    "owner": Level.ADMIN,
    "admin": Level.ADMIN,
    "member": Level.WRITE,
    "viewer": Level.READ,
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user behind a session or a personal access token."""

    user_id: str
    kind: str  # "session" or "token"
    credential_id: str
    scopes: frozenset[str]
    active_organization_id: str | None = None
    active_team_id: str | None = None

    @property
    def can_write(self) -> bool:
        return "write" in self.scopes


def member_role(conn: apsw.Connection, user_id: str | None, org_id: str) -> str | None:
    if user_id is None:
        return None
    row = query_one(
        conn,
        "SELECT role FROM member WHERE organization_id = ? AND user_id = ?",
        (org_id, user_id),
    )
    return row["role"] if row else None


def novel_level(conn: apsw.Connection, user_id: str | None, novel: Row) -> Level:
    """Members act by their role; anyone, even anonymous, may read a public novel."""
    role = member_role(conn, user_id, novel["organization_id"])
    level = ROLE_LEVEL[role] if role else Level.NONE
    if novel["visibility"] == "public":
        level = max(level, Level.READ)
    return level


def _check(principal: Principal | None, level: Level, need: Level, what: str) -> None:
    if level < Level.READ:
        raise NotFound(f"{what} not found")
    if level < need:
        raise Forbidden(
            f"your role does not allow {need.name.lower()} access to this {what}",
            code="insufficient_role",
        )
    if need >= Level.WRITE and principal is not None and not principal.can_write:
        raise Forbidden("this token has read scope only", code="insufficient_scope")


def authorize_novel(
    conn: apsw.Connection, principal: Principal | None, novel_id: str, need: Level
) -> Row:
    """The novel row if the caller may act on it at `need`; NotFound or Forbidden otherwise."""
    novel = query_one(conn, "SELECT * FROM novel WHERE id = ?", (novel_id,))
    if novel is None:
        raise NotFound("novel not found")
    user_id = principal.user_id if principal else None
    _check(principal, novel_level(conn, user_id, novel), need, "novel")
    return novel


def authorize_org(
    conn: apsw.Connection, principal: Principal | None, slug: str, need: Level
) -> tuple[Row, str]:
    """The organization row and the caller's role in it, if the caller may act at `need`."""
    org = query_one(conn, "SELECT * FROM organization WHERE slug = ?", (slug,))
    if org is None:
        raise NotFound("organization not found")
    role = member_role(conn, principal.user_id if principal else None, org["id"])
    level = ROLE_LEVEL[role] if role else Level.NONE
    _check(principal, level, need, "organization")
    return org, role or ""
