"""Organizations: roles, who manages members, the last owner, viewers, teams."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from server.config import Settings
from tests.conftest import Writer, sign_up
from tests.db_snapshot import data_state

ORG = "/api/v1/orgs/guild"


@pytest.fixture
async def guild(ann: Writer) -> dict:
    """An organization `guild` owned by Ann."""
    status, org = await ann.call("POST", "/api/v1/orgs", {"name": "The Guild", "slug": "guild"})
    assert status == 201, org
    return org


async def join(owner: Writer, writer: Writer, role: str) -> dict:
    status, member = await owner.call(
        "POST", f"{ORG}/members", {"email": writer.user["email"], "role": role}
    )
    assert status == 201, member
    return member


@pytest.fixture
async def crew(client: TestClient, ann: Writer, guild: dict) -> dict[str, Writer]:
    """Ann owns the guild; Ada is an admin, Max a member and Val a viewer."""
    crew = {"owner": ann}
    for role, name in (("admin", "Ada Admin"), ("member", "Max Member"), ("viewer", "Val Viewer")):
        crew[role] = await sign_up(client, name)
        await join(ann, crew[role], role)
    return crew


async def test_creating_an_organization_makes_the_caller_its_owner(ann: Writer, guild: dict):
    assert guild["slug"] == "guild" and guild["role"] == "owner" and guild["personal"] is False
    status, org = await ann.call("GET", ORG)
    assert status == 200 and org["id"] == guild["id"] and org["role"] == "owner"
    status, members = await ann.call("GET", f"{ORG}/members")
    assert [(m["user_id"], m["role"]) for m in members["items"]] == [(ann.user["id"], "owner")]
    _, me = await ann.call("GET", "/api/v1/me")
    assert {(o["slug"], o["role"]) for o in me["organizations"]} == {
        (ann.org, "owner"),
        ("guild", "owner"),
    }


async def test_a_taken_slug_is_a_conflict_and_writes_nothing(
    ann: Writer, bob: Writer, guild: dict, settings: Settings
):
    before = data_state(settings)
    for slug in ("guild", ann.org):
        status, body = await bob.call("POST", "/api/v1/orgs", {"name": "Copy", "slug": slug})
        assert status == 409 and body["error"]["code"] == "slug_taken"
    assert data_state(settings) == before


async def test_a_malformed_slug_is_rejected_with_field_details(ann: Writer):
    for slug in ("Guild", "-guild", "g", "has space", "x" * 65):
        status, body = await ann.call("POST", "/api/v1/orgs", {"name": "G", "slug": slug})
        assert status == 422, slug
        assert body["error"]["details"]["fields"][0]["loc"] == ["slug"]


async def test_members_get_the_roles_they_were_given(crew: dict[str, Writer]):
    status, members = await crew["owner"].call("GET", f"{ORG}/members")
    assert status == 200
    assert {m["user_id"]: m["role"] for m in members["items"]} == {
        w.user["id"]: role for role, w in crew.items()
    }
    for role, writer in crew.items():
        _, me = await writer.call("GET", "/api/v1/me")
        assert {"slug": "guild", "role": role} in [
            {"slug": o["slug"], "role": o["role"]} for o in me["organizations"]
        ]


async def test_adding_an_unknown_email_or_an_existing_member_is_refused(crew: dict[str, Writer]):
    ann = crew["owner"]
    status, body = await ann.call(
        "POST", f"{ORG}/members", {"email": "ghost@example.com", "role": "member"}
    )
    assert status == 404 and body["error"]["code"] == "user_not_found"
    status, body = await ann.call(
        "POST", f"{ORG}/members", {"email": crew["member"].user["email"], "role": "admin"}
    )
    assert status == 409 and body["error"]["code"] == "already_member"
    status, body = await ann.call(
        "POST", f"{ORG}/members", {"email": crew["member"].user["email"], "role": "emperor"}
    )
    assert status == 422


async def test_members_and_viewers_cannot_manage_members(
    client: TestClient, crew: dict[str, Writer], settings: Settings
):
    newcomer = await sign_up(client, "New Comer")
    before = data_state(settings)
    for role in ("member", "viewer"):
        writer = crew[role]
        status, body = await writer.call(
            "POST", f"{ORG}/members", {"email": newcomer.user["email"], "role": "viewer"}
        )
        assert status == 403 and body["error"]["code"] == "insufficient_role"
        target = crew["viewer"] if role == "member" else crew["member"]
        status, _ = await writer.call(
            "PATCH", f"{ORG}/members/{target.user['id']}", {"role": "admin"}
        )
        assert status == 403
        status, _ = await writer.call("DELETE", f"{ORG}/members/{target.user['id']}")
        assert status == 403
        status, _ = await writer.call("PATCH", ORG, {"name": "Renamed"})
        assert status == 403
    assert data_state(settings) == before


async def test_an_admin_manages_members_but_cannot_touch_owners(
    client: TestClient, crew: dict[str, Writer], settings: Settings
):
    ada, ann = crew["admin"], crew["owner"]
    newcomer = await sign_up(client, "New Comer")
    status, member = await ada.call(
        "POST", f"{ORG}/members", {"email": newcomer.user["email"], "role": "member"}
    )
    assert status == 201 and member["role"] == "member"
    status, member = await ada.call(
        "PATCH", f"{ORG}/members/{newcomer.user['id']}", {"role": "viewer"}
    )
    assert status == 200 and member["role"] == "viewer"
    assert (await ada.call("DELETE", f"{ORG}/members/{newcomer.user['id']}"))[0] == 204

    before = data_state(settings)
    status, body = await ada.call(
        "POST", f"{ORG}/members", {"email": newcomer.user["email"], "role": "owner"}
    )
    assert status == 403 and body["error"]["code"] == "insufficient_role"
    status, _ = await ada.call("PATCH", f"{ORG}/members/{ann.user['id']}", {"role": "member"})
    assert status == 403
    status, _ = await ada.call("PATCH", f"{ORG}/members/{ada.user['id']}", {"role": "owner"})
    assert status == 403
    status, _ = await ada.call("DELETE", f"{ORG}/members/{ann.user['id']}")
    assert status == 403
    assert data_state(settings) == before


async def test_an_owner_promotes_and_demotes(crew: dict[str, Writer]):
    ann, max_ = crew["owner"], crew["member"]
    status, member = await ann.call("PATCH", f"{ORG}/members/{max_.user['id']}", {"role": "owner"})
    assert status == 200 and member["role"] == "owner"
    status, member = await ann.call("PATCH", f"{ORG}/members/{max_.user['id']}", {"role": "viewer"})
    assert status == 200 and member["role"] == "viewer"


async def test_the_last_owner_can_neither_leave_nor_be_demoted(
    crew: dict[str, Writer], settings: Settings
):
    ann = crew["owner"]
    before = data_state(settings)
    status, body = await ann.call("DELETE", f"{ORG}/members/{ann.user['id']}")
    assert status == 409 and body["error"]["code"] == "last_owner"
    status, body = await ann.call("PATCH", f"{ORG}/members/{ann.user['id']}", {"role": "admin"})
    assert status == 409 and body["error"]["code"] == "last_owner"
    assert data_state(settings) == before


async def test_with_a_second_owner_the_first_may_leave(crew: dict[str, Writer]):
    ann, ada = crew["owner"], crew["admin"]
    await ann.call("PATCH", f"{ORG}/members/{ada.user['id']}", {"role": "owner"})
    assert (await ann.call("DELETE", f"{ORG}/members/{ann.user['id']}"))[0] == 204
    assert (await ann.call("GET", ORG))[0] == 404
    _, members = await ada.call("GET", f"{ORG}/members")
    assert ann.user["id"] not in [m["user_id"] for m in members["items"]]


async def test_any_member_may_leave_an_organization(crew: dict[str, Writer]):
    val = crew["viewer"]
    assert (await val.call("DELETE", f"{ORG}/members/{val.user['id']}"))[0] == 204
    assert (await val.call("GET", ORG))[0] == 404


async def test_an_unknown_member_is_404(crew: dict[str, Writer], bob: Writer):
    ann = crew["owner"]
    assert (await ann.call("PATCH", f"{ORG}/members/{bob.user['id']}", {"role": "member"}))[
        0
    ] == 404
    assert (await ann.call("DELETE", f"{ORG}/members/{bob.user['id']}"))[0] == 404


async def test_owners_and_admins_rename_the_organization(crew: dict[str, Writer]):
    status, org = await crew["admin"].call("PATCH", ORG, {"name": "The Writers' Guild"})
    assert status == 200 and org["name"] == "The Writers' Guild" and org["role"] == "admin"
    _, org = await crew["viewer"].call("GET", ORG)
    assert org["name"] == "The Writers' Guild" and org["role"] == "viewer"


async def test_a_viewer_reads_the_organizations_novels_but_never_writes_them(
    crew: dict[str, Writer], settings: Settings
):
    ann, val = crew["owner"], crew["viewer"]
    _, novel = await ann.call("POST", "/api/v1/novels", {"title": "Shared", "org": "guild"})
    path = f"/api/v1/novels/{novel['id']}"
    assert (await val.call("GET", path))[0] == 200
    _, listing = await val.call("GET", "/api/v1/novels?org=guild")
    assert [n["id"] for n in listing["items"]] == [novel["id"]]
    _, listing = await val.call("GET", "/api/v1/novels")
    assert novel["id"] in [n["id"] for n in listing["items"]]

    before = data_state(settings)
    status, body = await val.call("POST", "/api/v1/novels", {"title": "Mine", "org": "guild"})
    assert status == 403 and body["error"]["code"] == "insufficient_role"
    assert (await val.call("PATCH", path, {"title": "Changed"}))[0] == 403
    assert (await val.call("DELETE", path))[0] == 403
    assert data_state(settings) == before


async def test_a_member_writes_novels_but_only_owners_and_admins_delete_them(
    crew: dict[str, Writer],
):
    max_, ada = crew["member"], crew["admin"]
    status, novel = await max_.call("POST", "/api/v1/novels", {"title": "Max's", "org": "guild"})
    assert status == 201 and novel["organization_slug"] == "guild"
    path = f"/api/v1/novels/{novel['id']}"
    status, changed = await max_.call("PATCH", path, {"genre": "noir"})
    assert status == 200 and changed["genre"] == "noir"
    assert (await max_.call("DELETE", path))[0] == 403
    assert (await ada.call("DELETE", path))[0] == 204
    assert (await max_.call("GET", path))[0] == 404


async def test_teams_are_created_filled_emptied_and_deleted_by_managers(crew: dict[str, Writer]):
    ann, ada, max_ = crew["owner"], crew["admin"], crew["member"]
    status, team = await ada.call("POST", f"{ORG}/teams", {"name": "Editors"})
    assert status == 201 and team["members"] == [] and team["organization_id"]
    teams = f"{ORG}/teams/{team['id']}"
    status, team = await ann.call("POST", f"{teams}/members", {"user_id": max_.user["id"]})
    assert status == 201 and [m["user_id"] for m in team["members"]] == [max_.user["id"]]
    status, listing = await max_.call("GET", f"{ORG}/teams")
    assert status == 200 and [t["name"] for t in listing["items"]] == ["Editors"]
    assert listing["items"][0]["members"] == [{"user_id": max_.user["id"], "name": "Max Member"}]

    assert (await ada.call("DELETE", f"{teams}/members/{max_.user['id']}"))[0] == 204
    assert (await ada.call("DELETE", f"{teams}/members/{max_.user['id']}"))[0] == 404
    assert (await ada.call("DELETE", teams))[0] == 204
    assert (await ada.call("GET", f"{ORG}/teams"))[1]["items"] == []
    assert (await ada.call("DELETE", teams))[0] == 404


async def test_team_rules_duplicate_names_outsiders_and_plain_members(
    crew: dict[str, Writer], bob: Writer, settings: Settings
):
    ann, max_ = crew["owner"], crew["member"]
    _, team = await ann.call("POST", f"{ORG}/teams", {"name": "Editors"})
    before = data_state(settings)
    status, body = await ann.call("POST", f"{ORG}/teams", {"name": "Editors"})
    assert status == 409 and body["error"]["code"] == "team_name_taken"
    status, body = await ann.call(
        "POST", f"{ORG}/teams/{team['id']}/members", {"user_id": bob.user["id"]}
    )
    assert status == 422 and body["error"]["code"] == "not_a_member"
    status, body = await max_.call("POST", f"{ORG}/teams", {"name": "Rebels"})
    assert status == 403
    status, body = await max_.call(
        "POST", f"{ORG}/teams/{team['id']}/members", {"user_id": max_.user["id"]}
    )
    assert status == 403
    assert (await max_.call("DELETE", f"{ORG}/teams/{team['id']}"))[0] == 403
    assert data_state(settings) == before


async def test_removing_a_member_from_the_organization_removes_them_from_its_teams(
    crew: dict[str, Writer],
):
    ann, max_ = crew["owner"], crew["member"]
    _, team = await ann.call("POST", f"{ORG}/teams", {"name": "Editors"})
    await ann.call("POST", f"{ORG}/teams/{team['id']}/members", {"user_id": max_.user["id"]})
    assert (await ann.call("DELETE", f"{ORG}/members/{max_.user['id']}"))[0] == 204
    _, listing = await ann.call("GET", f"{ORG}/teams")
    assert listing["items"][0]["members"] == []


async def test_an_outsider_sees_no_trace_of_the_organization(crew: dict[str, Writer], bob: Writer):
    for path in (ORG, f"{ORG}/members", f"{ORG}/teams"):
        status, body = await bob.call("GET", path)
        assert status == 404 and body["error"]["code"] == "not_found"
    status, _ = await bob.call("GET", "/api/v1/orgs/no-such-org")
    assert status == 404
