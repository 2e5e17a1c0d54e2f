"""Organizations, their members and roles, and teams.

The membership rules live here: only owners and admins manage members, only owners
touch owners, and the last owner can neither leave nor be demoted.
"""

from __future__ import annotations

import apsw

from storage.db import Row, query, query_one
from storage.errors import Conflict, Forbidden, Invalid, NotFound
from storage.ids import new_id, now

ROLES = ("owner", "admin", "member", "viewer")


def create_organization(
    conn: apsw.Connection, *, slug: str, name: str, owner_id: str, personal: bool = False
) -> Row:
    if query_one(conn, "SELECT 1 FROM organization WHERE slug = ?", (slug,)):
        raise Conflict("an organization with this slug already exists", code="slug_taken")
    org_id, moment = new_id(), now()
    conn.execute(
        "INSERT INTO organization (id, slug, name, personal, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (org_id, slug, name, int(personal), moment, moment),
    )
    conn.execute(
        "INSERT INTO member (organization_id, user_id, role, created_at) VALUES (?, ?, 'owner', ?)",
        (org_id, owner_id, moment),
    )
    return get_organization(conn, org_id)


def get_organization(conn: apsw.Connection, org_id: str) -> Row:
    row = query_one(
        conn,
        "SELECT id, slug, name, personal, created_at, updated_at FROM organization WHERE id = ?",
        (org_id,),
    )
    if row is None:
        raise NotFound("organization not found")
    return {**row, "personal": bool(row["personal"])}


def organization_by_slug(conn: apsw.Connection, slug: str) -> Row | None:
    row = query_one(conn, "SELECT id FROM organization WHERE slug = ?", (slug,))
    return get_organization(conn, row["id"]) if row else None


def memberships(conn: apsw.Connection, user_id: str) -> list[Row]:
    """Every organization the user belongs to, with their role."""
    return query(
        conn,
        "SELECT o.id, o.slug, o.name, m.role FROM member m"
        " JOIN organization o ON o.id = m.organization_id WHERE m.user_id = ?"
        " ORDER BY o.personal DESC, o.slug",
        (user_id,),
    )


def _member(conn: apsw.Connection, org_id: str, user_id: str) -> Row | None:
    return query_one(
        conn,
        "SELECT u.id AS user_id, u.name, u.email, m.role, m.created_at FROM member m"
        " JOIN user u ON u.id = m.user_id WHERE m.organization_id = ? AND m.user_id = ?",
        (org_id, user_id),
    )


def list_members(conn: apsw.Connection, org_id: str) -> list[Row]:
    return query(
        conn,
        "SELECT u.id AS user_id, u.name, u.email, m.role, m.created_at FROM member m"
        " JOIN user u ON u.id = m.user_id WHERE m.organization_id = ? ORDER BY m.created_at, u.id",
        (org_id,),
    )


def _owner_count(conn: apsw.Connection, org_id: str) -> int:
    return query_one(
        conn,
        "SELECT count(*) AS n FROM member WHERE organization_id = ? AND role = 'owner'",
        (org_id,),
    )["n"]


def _require_manager(actor_role: str, *roles_touched: str) -> None:
    if actor_role not in ("owner", "admin"):
        raise Forbidden("only owners and admins manage members", code="insufficient_role")
    if "owner" in roles_touched and actor_role != "owner":
        raise Forbidden(
            "only owners grant, change or remove the owner role", code="insufficient_role"
        )


def add_member(
    conn: apsw.Connection, org_id: str, actor_role: str, *, email: str, role: str
) -> Row:
    _require_manager(actor_role, role)
    user = query_one(conn, "SELECT id FROM user WHERE email = ?", (email,))
    if user is None:
        raise NotFound("no account with this email", code="user_not_found")
    if _member(conn, org_id, user["id"]):
        raise Conflict("this user is already a member", code="already_member")
    conn.execute(
        "INSERT INTO member (organization_id, user_id, role, created_at) VALUES (?, ?, ?, ?)",
        (org_id, user["id"], role, now()),
    )
    return _member(conn, org_id, user["id"])


def change_role(
    conn: apsw.Connection, org_id: str, actor_role: str, *, user_id: str, role: str
) -> Row:
    current = _member(conn, org_id, user_id)
    if current is None:
        raise NotFound("member not found")
    _require_manager(actor_role, role, current["role"])
    if current["role"] == "owner" and role != "owner" and _owner_count(conn, org_id) == 1:
        raise Conflict("the last owner cannot be demoted", code="last_owner")
    conn.execute(
        "UPDATE member SET role = ? WHERE organization_id = ? AND user_id = ?",
        (role, org_id, user_id),
    )
    return _member(conn, org_id, user_id)


def remove_member(
    conn: apsw.Connection, org_id: str, actor_id: str, actor_role: str, *, user_id: str
) -> None:
    """Managers remove others; anyone may leave. The last owner may do neither."""
    current = _member(conn, org_id, user_id)
    if current is None:
        raise NotFound("member not found")
    if user_id != actor_id:
        _require_manager(actor_role, current["role"])
    if current["role"] == "owner" and _owner_count(conn, org_id) == 1:
        raise Conflict("the last owner cannot leave the organization", code="last_owner")
    conn.execute(
        "DELETE FROM team_member WHERE user_id = ? AND team_id IN"
        " (SELECT id FROM team WHERE organization_id = ?)",
        (user_id, org_id),
    )
    conn.execute("DELETE FROM member WHERE organization_id = ? AND user_id = ?", (org_id, user_id))
    # A session still pointing at the organization would keep creating novels there.
    conn.execute(
        "UPDATE session SET active_organization_id = NULL, active_team_id = NULL"
        " WHERE user_id = ? AND active_organization_id = ?",
        (user_id, org_id),
    )


def update_organization(conn: apsw.Connection, org_id: str, actor_role: str, *, name: str) -> Row:
    _require_manager(actor_role)
    conn.execute(
        "UPDATE organization SET name = ?, updated_at = ? WHERE id = ?", (name, now(), org_id)
    )
    return get_organization(conn, org_id)


# -- teams ----------------------------------------------------------------------


def _team(conn: apsw.Connection, org_id: str, team_id: str) -> Row:
    row = query_one(
        conn,
        "SELECT id, organization_id, name, created_at FROM team"
        " WHERE id = ? AND organization_id = ?",
        (team_id, org_id),
    )
    if row is None:
        raise NotFound("team not found")
    members = query(
        conn,
        "SELECT u.id AS user_id, u.name FROM team_member t JOIN user u ON u.id = t.user_id"
        " WHERE t.team_id = ? ORDER BY t.created_at, u.id",
        (team_id,),
    )
    return {**row, "members": members}


def create_team(conn: apsw.Connection, org_id: str, actor_role: str, *, name: str) -> Row:
    _require_manager(actor_role)
    if query_one(conn, "SELECT 1 FROM team WHERE organization_id = ? AND name = ?", (org_id, name)):
        raise Conflict("a team with this name already exists", code="team_name_taken")
    team_id = new_id()
    conn.execute(
        "INSERT INTO team (id, organization_id, name, created_at) VALUES (?, ?, ?, ?)",
        (team_id, org_id, name, now()),
    )
    return _team(conn, org_id, team_id)


def list_teams(conn: apsw.Connection, org_id: str) -> list[Row]:
    ids = query(conn, "SELECT id FROM team WHERE organization_id = ? ORDER BY name", (org_id,))
    return [_team(conn, org_id, r["id"]) for r in ids]


def delete_team(conn: apsw.Connection, org_id: str, actor_role: str, team_id: str) -> None:
    _require_manager(actor_role)
    _team(conn, org_id, team_id)
    conn.execute("DELETE FROM team WHERE id = ?", (team_id,))


def add_team_member(
    conn: apsw.Connection, org_id: str, actor_role: str, team_id: str, *, user_id: str
) -> Row:
    _require_manager(actor_role)
    _team(conn, org_id, team_id)
    if _member(conn, org_id, user_id) is None:
        raise Invalid("only members of the organization can join its teams", code="not_a_member")
    conn.execute(
        "INSERT INTO team_member (team_id, user_id, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (team_id, user_id, now()),
    )
    return _team(conn, org_id, team_id)


def remove_team_member(
    conn: apsw.Connection, org_id: str, actor_role: str, team_id: str, *, user_id: str
) -> None:
    _require_manager(actor_role)
    _team(conn, org_id, team_id)
    if (
        conn.execute(
            "DELETE FROM team_member WHERE team_id = ? AND user_id = ? RETURNING user_id",
            (team_id, user_id),
        ).fetchall()
        == []
    ):
        raise NotFound("team member not found")
    conn.execute(
        "UPDATE session SET active_team_id = NULL WHERE user_id = ? AND active_team_id = ?",
        (user_id, team_id),
    )


def team_of_member(conn: apsw.Connection, team_id: str, user_id: str) -> Row | None:
    return query_one(
        conn,
        "SELECT t.id, t.organization_id FROM team t JOIN team_member m ON m.team_id = t.id"
        " WHERE t.id = ? AND m.user_id = ?",
        (team_id, user_id),
    )
