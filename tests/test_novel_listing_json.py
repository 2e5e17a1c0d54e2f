"""A listing sends each novel as the JSON SQLite keeps for it (`novel.item`, migration 6):
it must always be the novel as reading it answers, whatever changed the row."""

from __future__ import annotations

import pytest

from server import models as m
from server.config import Settings
from storage import novels
from storage.db import connect, query
from tests.conftest import Writer, novel_pages

NOVELS = "/api/v1/novels"
AWKWARD = 'Zoë «quoted» "twice" \\ back\tslash\nnew line \u2028 \U0001f40b'


async def listing_matches_reading(writer: Writer, *, count: int) -> list[dict]:
    status, listing = await writer.call("GET", NOVELS)
    assert status == 200
    # Exactly the document's model: no field missing, none extra, every type right.
    assert m.NovelList.model_validate(listing).model_dump(mode="json") == listing
    assert len(listing["items"]) == count
    for item in listing["items"]:
        status, novel = await writer.call("GET", f"{NOVELS}/{item['id']}")
        assert status == 200 and item == novel
    return listing["items"]


async def test_a_listed_novel_is_the_novel_as_read_after_every_kind_of_change(ann: Writer):
    status, first = await ann.call(
        "POST", NOVELS,
        {"title": AWKWARD, "description": AWKWARD, "genre": "sea <&> stories",
         "target_word_count": 90_000, "visibility": "public"},
    )  # fmt: skip
    assert status == 201
    status, second = await ann.call("POST", NOVELS, {"title": "Plain"})
    assert status == 201
    items = await listing_matches_reading(ann, count=2)
    assert items[1]["title"] == AWKWARD and items[1]["target_word_count"] == 90_000

    # novel.md rewritten (a commit: head, updated_at) and a field cleared.
    patch = {"title": "Renamed", "description": None, "status": "in_progress"}
    assert (await ann.call("PATCH", f"{NOVELS}/{first['id']}", patch))[0] == 200
    # Visibility lives in SQLite only.
    assert (await ann.call("PATCH", f"{NOVELS}/{second['id']}", {"visibility": "public"}))[0] == 200
    # A chapter: head, word count and last_written_at move.
    status, _ = await ann.call(
        "POST", f"{NOVELS}/{second['id']}/chapters",
        {"title": "One", "content": "Seven words stand in this first chapter."},
    )  # fmt: skip
    assert status == 201
    items = await listing_matches_reading(ann, count=2)
    by_id = {item["id"]: item for item in items}
    assert by_id[first["id"]]["title"] == "Renamed" and by_id[first["id"]]["description"] is None
    assert by_id[second["id"]]["visibility"] == "public"
    assert by_id[second["id"]]["current_word_count"] >= 7
    assert by_id[second["id"]]["last_written_at"] is not None
    assert by_id[second["id"]]["head"] != second["head"]


async def test_an_organization_slug_changed_in_sqlite_changes_its_novels_items(
    ann: Writer, settings: Settings
):
    """No route renames a slug; an operator's UPDATE (or a later feature) still must not
    leave a listing naming the old one."""
    await ann.call("POST", NOVELS, {"title": "Draft"})
    conn = connect(settings.database_path)
    try:
        with conn:
            conn.execute("UPDATE organization SET slug = 'renamed-org' WHERE slug = ?", (ann.org,))
        stored = query(conn, "SELECT item FROM novel")
    finally:
        conn.close()
    assert len(stored) == 1 and '"organization_slug":"renamed-org"' in stored[0]["item"]
    ann.org = "renamed-org"
    [item] = await listing_matches_reading(ann, count=1)
    assert item["organization_slug"] == "renamed-org"


@pytest.mark.parametrize("organizations", [3, novels.MERGE_UP_TO + 2])
async def test_novels_of_several_organizations_page_newest_first_across_them(
    ann: Writer, bob: Writer, organizations: int
):
    """Up to MERGE_UP_TO organizations are read one by one and merged, more in one sorted
    query: either way each novel once, newest first, whatever organization it is in."""
    slugs = [ann.org]
    for k in range(organizations - 1):
        status, _ = await ann.call("POST", "/api/v1/orgs", {"name": f"Org {k}", "slug": f"o{k}x"})
        assert status == 201
        slugs.append(f"o{k}x")
    await bob.call("POST", NOVELS, {"title": "Not Ann's"})
    created = []
    for i in range(2 * organizations + 1):  # interleaved in time across organizations
        body = {"title": f"Novel {i}", "org": slugs[(i * 7) % len(slugs)]}
        status, novel = await ann.call("POST", NOVELS, body)
        assert status == 201, novel
        created.append(novel["id"])
    for limit in (1, 3, 200):
        pages = await novel_pages(ann, limit)
        assert [novel for page in pages for novel in page] == list(reversed(created)), limit
        assert all(len(page) == limit for page in pages[:-1])
