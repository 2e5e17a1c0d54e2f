"""Organizations, members with roles, and teams."""

from __future__ import annotations

import apsw

from server import models as m
from server.endpoints import Call, Endpoint
from storage import organizations as orgs
from storage.access import Level, authorize_org


async def create_org(call: Call) -> dict:
    body: m.OrgBody = call.body
    org = await call.db.write(
        lambda conn: orgs.create_organization(
            conn, slug=body.slug, name=body.name, owner_id=call.user_id
        )
    )
    return {**org, "role": "owner"}


async def get_org(call: Call) -> dict:
    def load(conn: apsw.Connection) -> dict:
        org, role = authorize_org(conn, call.principal, call.params["slug"], Level.READ)
        return {**orgs.get_organization(conn, org["id"]), "role": role}

    return await call.db.read(load)


async def update_org(call: Call) -> dict:
    def update(conn: apsw.Connection) -> dict:
        org, role = authorize_org(conn, call.principal, call.params["slug"], Level.ADMIN)
        return {
            **orgs.update_organization(conn, org["id"], role, name=call.body.name),
            "role": role,
        }

    return await call.db.write(update)


async def list_members(call: Call) -> dict:
    def load(conn: apsw.Connection) -> dict:
        org, _ = authorize_org(conn, call.principal, call.params["slug"], Level.READ)
        return {"items": orgs.list_members(conn, org["id"]), "next_cursor": None}

    return await call.db.read(load)


async def add_member(call: Call) -> dict:
    body: m.MemberBody = call.body

    def add(conn: apsw.Connection) -> dict:
        org, role = authorize_org(conn, call.principal, call.params["slug"], Level.READ)
        return orgs.add_member(conn, org["id"], role, email=body.email, role=body.role)

    return await call.db.write(add)


async def change_member(call: Call) -> dict:
    def change(conn: apsw.Connection) -> dict:
        org, role = authorize_org(conn, call.principal, call.params["slug"], Level.READ)
        return orgs.change_role(
            conn, org["id"], role, user_id=call.params["user_id"], role=call.body.role
        )

    return await call.db.write(change)


async def remove_member(call: Call) -> None:
    def remove(conn: apsw.Connection) -> None:
        org, role = authorize_org(conn, call.principal, call.params["slug"], Level.READ)
        orgs.remove_member(conn, org["id"], call.user_id, role, user_id=call.params["user_id"])

    await call.db.write(remove)


async def list_teams(call: Call) -> dict:
    def load(conn: apsw.Connection) -> dict:
        org, _ = authorize_org(conn, call.principal, call.params["slug"], Level.READ)
        return {"items": orgs.list_teams(conn, org["id"]), "next_cursor": None}

    return await call.db.read(load)


async def create_team(call: Call) -> dict:
    def create(conn: apsw.Connection) -> dict:
        org, role = authorize_org(conn, call.principal, call.params["slug"], Level.READ)
        return orgs.create_team(conn, org["id"], role, name=call.body.name)

    return await call.db.write(create)


async def delete_team(call: Call) -> None:
    def delete(conn: apsw.Connection) -> None:
        org, role = authorize_org(conn, call.principal, call.params["slug"], Level.READ)
        orgs.delete_team(conn, org["id"], role, call.params["team_id"])

    await call.db.write(delete)


async def add_team_member(call: Call) -> dict:
    def add(conn: apsw.Connection) -> dict:
        org, role = authorize_org(conn, call.principal, call.params["slug"], Level.READ)
        return orgs.add_team_member(
            conn, org["id"], role, call.params["team_id"], user_id=call.body.user_id
        )

    return await call.db.write(add)


async def remove_team_member(call: Call) -> None:
    def remove(conn: apsw.Connection) -> None:
        org, role = authorize_org(conn, call.principal, call.params["slug"], Level.READ)
        orgs.remove_team_member(
            conn, org["id"], role, call.params["team_id"], user_id=call.params["user_id"]
        )

    await call.db.write(remove)


ORG = "/api/v1/orgs/{slug}"
ENDPOINTS = [
    Endpoint("POST", "/api/v1/orgs", create_org, "Create an organization; the caller owns it",
             "organizations", body=m.OrgBody, response=m.Organization, status=201,
             errors=(409, 422)),
    Endpoint("GET", ORG, get_org, "An organization", "organizations", response=m.Organization,
             errors=(404,)),
    Endpoint("PATCH", ORG, update_org, "Rename an organization (owners and admins)",
             "organizations", body=m.OrgPatch, response=m.Organization, errors=(403, 404, 422)),
    Endpoint("GET", ORG + "/members", list_members, "Members and their roles", "organizations",
             response=m.MemberList, errors=(404,)),
    Endpoint("POST", ORG + "/members", add_member, "Add a member (owners and admins)",
             "organizations", body=m.MemberBody, response=m.Member, status=201,
             errors=(403, 404, 409, 422)),
    Endpoint("PATCH", ORG + "/members/{user_id}", change_member, "Change a member's role",
             "organizations", body=m.MemberPatch, response=m.Member, errors=(403, 404, 409, 422)),
    Endpoint("DELETE", ORG + "/members/{user_id}", remove_member,
             "Remove a member, or leave the organization", "organizations", status=204,
             errors=(403, 404, 409)),
    Endpoint("GET", ORG + "/teams", list_teams, "Teams of an organization", "organizations",
             response=m.TeamList, errors=(404,)),
    Endpoint("POST", ORG + "/teams", create_team, "Create a team (owners and admins)",
             "organizations", body=m.TeamBody, response=m.Team, status=201,
             errors=(403, 404, 409, 422)),
    Endpoint("DELETE", ORG + "/teams/{team_id}", delete_team, "Delete a team", "organizations",
             status=204, errors=(403, 404)),
    Endpoint("POST", ORG + "/teams/{team_id}/members", add_team_member, "Add a member to a team",
             "organizations", body=m.TeamMemberBody, response=m.Team, status=201,
             errors=(403, 404, 422)),
    Endpoint("DELETE", ORG + "/teams/{team_id}/members/{user_id}", remove_team_member,
             "Remove a member from a team", "organizations", status=204, errors=(403, 404)),
]  # fmt: skip
