"""The novel registry: create, list with cursor pagination, read, update, delete, visibility."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

from server.config import Settings
from server.pagination import encode_cursor
from tests.conftest import Writer, novel_pages, sign_up
from tests.db_snapshot import data_state

NOVELS = "/api/v1/novels"


async def create(writer: Writer, title: str, **fields: object) -> dict:
    status, novel = await writer.call("POST", NOVELS, {"title": title, **fields})
    assert status == 201, novel
    return novel


async def test_a_new_novel_starts_as_a_private_draft_in_the_personal_organization(ann: Writer):
    novel = await create(ann, "  The Long Road  ")
    assert novel["title"] == "The Long Road"
    assert novel["status"] == "draft" and novel["visibility"] == "private"
    assert novel["current_word_count"] == 0
    assert novel["head"] is None or re.fullmatch(r"[0-9a-f]{40}", novel["head"])
    assert novel["owner_id"] == ann.user["id"] and novel["organization_slug"] == ann.org
    assert novel["description"] is None and novel["target_word_count"] is None


async def test_every_registry_field_given_at_creation_is_kept(ann: Writer):
    fields = {
        "description": "A road, long.",
        "genre": "fantasy",
        "status": "in_progress",
        "visibility": "public",
        "target_word_count": 90_000,
    }
    novel = await create(ann, "Full", **fields)
    status, same = await ann.call("GET", f"{NOVELS}/{novel['id']}")
    assert status == 200 and same == novel
    assert {k: same[k] for k in fields} == fields


async def test_a_novel_is_created_in_a_named_organization_the_writer_belongs_to(
    ann: Writer, bob: Writer
):
    await ann.call("POST", "/api/v1/orgs", {"name": "Guild", "slug": "guild"})
    novel = await create(ann, "Guild Book", org="guild")
    assert novel["organization_slug"] == "guild"
    status, body = await bob.call("POST", NOVELS, {"title": "Intruder", "org": "guild"})
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await bob.call("POST", NOVELS, {"title": "Nowhere", "org": "no-such-org"})
    assert status == 404


async def test_invalid_novel_bodies_are_422_with_the_offending_fields(
    ann: Writer, settings: Settings
):
    before = data_state(settings)
    cases = [
        ({"title": ""}, ["title"]),
        ({}, ["title"]),
        ({"title": "x" * 301}, ["title"]),
        ({"title": "T", "visibility": "secret"}, ["visibility"]),
        ({"title": "T", "status": "abandoned"}, ["status"]),
        ({"title": "T", "target_word_count": -1}, ["target_word_count"]),
        ({"title": "T", "colour": "red"}, ["colour"]),
    ]
    for body, loc in cases:
        status, answer = await ann.call("POST", NOVELS, body)
        assert status == 422, (body, answer)
        assert answer["error"]["code"] == "validation_failed"
        assert [f["loc"] for f in answer["error"]["details"]["fields"]] == [loc], body
    assert data_state(settings) == before


async def test_seven_novels_page_by_three_as_three_three_one_without_repeats(ann: Writer):
    created = [(await create(ann, f"Novel {i}"))["id"] for i in range(7)]
    pages = await novel_pages(ann, 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [novel_id for p in pages for novel_id in p]
    assert seen == list(reversed(created))  # newest first, each exactly once


async def test_a_page_that_ends_exactly_at_the_last_novel_has_no_next_cursor(ann: Writer):
    for i in range(3):
        await create(ann, f"Novel {i}")
    _, page = await ann.call("GET", f"{NOVELS}?limit=3")
    assert len(page["items"]) == 3 and page["next_cursor"] is None


async def test_a_cursor_the_server_did_not_give_out_is_invalid_cursor(ann: Writer):
    for cursor in ("not-a-cursor!!", encode_cursor(42), encode_cursor({"id": "x"}), "%%%"):
        status, body = await ann.call("GET", NOVELS, params={"cursor": cursor})
        assert status == 422, cursor
        assert body["error"]["code"] == "invalid_cursor"


async def test_limit_outside_one_to_two_hundred_is_422(ann: Writer):
    for limit in ("0", "201", "many"):
        status, body = await ann.call("GET", NOVELS, params={"limit": limit})
        assert status == 422 and body["error"]["details"]["fields"][0]["loc"] == ["limit"]


async def test_the_list_shows_only_novels_of_the_callers_organizations(ann: Writer, bob: Writer):
    mine = await create(ann, "Ann's")
    await create(bob, "Bob's private")
    await create(bob, "Bob's public", visibility="public")
    _, listing = await ann.call("GET", NOVELS)
    assert [n["id"] for n in listing["items"]] == [mine["id"]]


async def test_listing_another_organization_shows_only_its_public_novels(
    client: TestClient, ann: Writer, bob: Writer
):
    await create(bob, "Bob's private")
    public = await create(bob, "Bob's public", visibility="public")
    _, listing = await ann.call("GET", NOVELS, params={"org": bob.org})
    assert [n["id"] for n in listing["items"]] == [public["id"]]
    response = await client.get(NOVELS, params={"org": bob.org})
    assert response.status == 200
    assert [n["id"] for n in (await response.json())["items"]] == [public["id"]]
    status, _ = await ann.call("GET", NOVELS, params={"org": "no-such-org"})
    assert status == 404


async def test_updating_a_novel_changes_only_the_given_fields(ann: Writer):
    novel = await create(ann, "Before", genre="noir", target_word_count=50_000)
    status, changed = await ann.call(
        "PATCH", f"{NOVELS}/{novel['id']}", {"title": "After", "status": "completed"}
    )
    assert status == 200
    assert changed["title"] == "After" and changed["status"] == "completed"
    assert changed["genre"] == "noir" and changed["target_word_count"] == 50_000
    assert changed["updated_at"] >= novel["updated_at"]
    assert changed["created_at"] == novel["created_at"]
    _, same = await ann.call("GET", f"{NOVELS}/{novel['id']}")
    assert same == changed


async def test_a_patch_clears_optional_fields_with_null(ann: Writer):
    novel = await create(ann, "Book", genre="noir", description="d", target_word_count=10)
    status, changed = await ann.call(
        "PATCH",
        f"{NOVELS}/{novel['id']}",
        {"genre": None, "description": None, "target_word_count": None},
    )
    assert status == 200
    assert (changed["genre"], changed["description"], changed["target_word_count"]) == (
        None,
        None,
        None,
    )


async def test_a_patch_cannot_null_a_required_field(ann: Writer, settings: Settings):
    novel = await create(ann, "Book")
    before = data_state(settings)
    for field in ("title", "status", "visibility"):
        status, body = await ann.call("PATCH", f"{NOVELS}/{novel['id']}", {field: None})
        assert status == 422, (field, status, body)
    assert data_state(settings) == before


async def test_an_invalid_patch_is_422_and_changes_nothing(ann: Writer, settings: Settings):
    novel = await create(ann, "Book")
    before = data_state(settings)
    for body in ({"visibility": "everyone"}, {"title": ""}, {"owner_id": "someone"}):
        status, answer = await ann.call("PATCH", f"{NOVELS}/{novel['id']}", body)
        assert status == 422, body
    assert data_state(settings) == before


async def test_a_deleted_novel_is_gone(ann: Writer):
    novel = await create(ann, "Short-lived")
    assert (await ann.call("DELETE", f"{NOVELS}/{novel['id']}"))[0] == 204
    for method in ("GET", "DELETE"):
        status, body = await ann.call(method, f"{NOVELS}/{novel['id']}")
        assert status == 404 and body["error"]["code"] == "not_found"
    _, listing = await ann.call("GET", NOVELS)
    assert listing["items"] == []


async def test_a_public_novel_is_read_by_anyone_but_written_only_by_its_organization(
    client: TestClient, ann: Writer, bob: Writer, settings: Settings
):
    novel = await create(ann, "Open Book", visibility="public")
    path = f"{NOVELS}/{novel['id']}"
    response = await client.get(path)
    assert response.status == 200 and (await response.json())["title"] == "Open Book"
    status, seen = await bob.call("GET", path)
    assert status == 200 and seen["id"] == novel["id"]

    before = data_state(settings)
    status, body = await bob.call("PATCH", path, {"title": "Vandalised"})
    assert status == 403 and body["error"]["code"] == "insufficient_role"
    assert (await bob.call("DELETE", path))[0] == 403
    response = await client.patch(path, json={"title": "Anonymous"})
    assert response.status == 401 and "WWW-Authenticate" in response.headers
    assert (await client.delete(path)).status == 401
    assert data_state(settings) == before


async def test_making_a_novel_private_again_hides_it(client: TestClient, ann: Writer, bob: Writer):
    novel = await create(ann, "Open Book", visibility="public")
    path = f"{NOVELS}/{novel['id']}"
    status, _ = await ann.call("PATCH", path, {"visibility": "private"})
    assert status == 200
    assert (await client.get(path)).status == 404
    assert (await bob.call("GET", path))[0] == 404


async def test_anonymous_callers_list_nothing_without_an_organization(
    client: TestClient, ann: Writer
):
    await create(ann, "Open Book", visibility="public")
    response = await client.get(NOVELS)
    assert response.status == 200
    assert await response.json() == {"items": [], "next_cursor": None}


async def test_a_viewer_whose_active_organization_is_shared_never_creates_novels_there(
    client: TestClient, ann: Writer
):
    await ann.call("POST", "/api/v1/orgs", {"name": "Guild", "slug": "guild"})
    val = await sign_up(client, "Val Viewer")
    await ann.call(
        "POST", "/api/v1/orgs/guild/members", {"email": val.user["email"], "role": "viewer"}
    )
    status, _ = await val.call("PUT", "/api/v1/auth/sessions/current", {"organization": "guild"})
    assert status == 200
    status, novel = await val.call("POST", NOVELS, {"title": "Sneaked in"})
    assert status in (201, 403), novel
    if status == 201:
        assert novel["organization_slug"] == val.org
    _, listing = await ann.call("GET", NOVELS, params={"org": "guild"})
    assert listing["items"] == []


async def test_a_removed_member_creates_novels_in_their_personal_organization_again(
    client: TestClient, ann: Writer
):
    await ann.call("POST", "/api/v1/orgs", {"name": "Guild", "slug": "guild"})
    max_ = await sign_up(client, "Max Member")
    await ann.call(
        "POST", "/api/v1/orgs/guild/members", {"email": max_.user["email"], "role": "member"}
    )
    await max_.call("PUT", "/api/v1/auth/sessions/current", {"organization": "guild"})
    assert (await ann.call("DELETE", f"/api/v1/orgs/guild/members/{max_.user['id']}"))[0] == 204
    _, me = await max_.call("GET", "/api/v1/me")
    assert me["active_organization_id"] is None
    status, novel = await max_.call("POST", NOVELS, {"title": "Left behind"})
    assert status == 201 and novel["organization_slug"] == max_.org
    _, listing = await ann.call("GET", NOVELS, params={"org": "guild"})
    assert listing["items"] == []
