"""The sync protocol as devices live it: two or three devices, each keeping its own base
and copy of the files like a real client, editing offline and syncing through the API;
plus the chapter, character and location routes and the index that follows every commit."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

import pygit2
import pytest

from server.config import Settings
from server.state import DB, LIBRARY
from storage.db import open_database, query, query_one
from storage.reindex import check_novels
from sync.engine import _legacy_request_hash, find_operation, request_hash
from tests.conftest import Writer
from tests.servers import start_server

OPENING = (
    "Mara climbed the lighthouse stairs. The lamp had been dark for years.\n"
    "\n"
    "Below her, the sea kept its own counsel. Gulls wheeled over the rocks.\n"
    "\n"
    "At the top she found a letter addressed to her mother.\n"
)
CHAPTER = "chapters/the-lighthouse.md"
_ops = itertools.count(1)


@dataclass
class Device:
    """A client's view of one novel: its base commit and its local copy of every file."""

    writer: Writer
    novel_id: str
    device_id: str
    base: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str | None] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"/api/v1/novels/{self.novel_id}/sync"

    def write(self, path: str, text: str | None) -> None:
        """An offline edit: the local copy changes and the change waits for the next sync."""
        if text is None:
            self.files.pop(path, None)
        else:
            self.files[path] = text
        self.pending[path] = text

    def replace(self, path: str, old: str, new: str) -> None:
        assert old in self.files[path], (old, self.files[path])
        self.write(path, self.files[path].replace(old, new, 1))

    def body(self, op_id: str | None = None) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "op_id": op_id or f"op-{next(_ops)}",
            "base": self.base,
            "changes": [{"path": p, "content": c} for p, c in sorted(self.pending.items())],
        }

    def apply(self, answer: dict[str, Any]) -> None:
        for entry in answer["files"]:
            if entry["content"] is None:
                self.files.pop(entry["path"], None)
            else:
                self.files[entry["path"]] = entry["content"]
        self.base = answer["head"]
        self.pending.clear()

    async def sync(self, *, op_id: str | None = None, expect: int = 200) -> dict[str, Any]:
        status, answer = await self.writer.call("POST", self.url, self.body(op_id))
        assert status == expect, answer
        if status == 200:
            self.apply(answer)
        return answer


async def server_files(writer: Writer, novel_id: str) -> tuple[str, dict[str, str]]:
    status, pulled = await writer.call("GET", f"/api/v1/novels/{novel_id}/sync")
    assert status == 200, pulled
    return pulled["head"], {f["path"]: f["content"] for f in pulled["files"]}


async def new_novel(writer: Writer, title: str = "The Keeper") -> str:
    status, novel = await writer.call("POST", "/api/v1/novels", {"title": title})
    assert status == 201, novel
    status, made = await writer.call(
        "POST", f"/api/v1/novels/{novel['id']}/chapters",
        {"title": "The Lighthouse", "content": OPENING},
    )  # fmt: skip
    assert status == 201 and made["chapter"]["path"] == CHAPTER, made
    return novel["id"]


async def devices(writer: Writer, novel_id: str, *names: str) -> list[Device]:
    found = []
    for name in names:
        device = Device(writer, novel_id, name)
        device.base, device.files = await server_files(writer, novel_id)
        found.append(device)
    return found


def git(settings: Settings, novel_id: str) -> pygit2.Repository:
    return pygit2.Repository(str(settings.repositories_dir / f"{novel_id}.git"))


def git_head(settings: Settings, novel_id: str) -> str:
    return str(git(settings, novel_id).references["refs/heads/main"].target)


def commit_count(settings: Settings, novel_id: str) -> int:
    repo = git(settings, novel_id)
    return sum(1 for _ in repo.walk(repo.references["refs/heads/main"].target))


def all_texts(settings: Settings, novel_id: str, rev: str) -> dict[str, str]:
    repo = git(settings, novel_id)
    found: dict[str, str] = {}

    def walk(tree: pygit2.Tree, where: str) -> None:
        for entry in tree:
            if entry.type_str == "tree":
                walk(repo[entry.id], f"{where}{entry.name}/")
            else:
                found[where + entry.name] = repo[entry.id].data.decode("utf-8")

    walk(repo[rev].tree, "")
    return found


def assert_no_markers(files: dict[str, str]) -> None:
    for path, text in files.items():
        for marker in ("<<<<<<<", ">>>>>>>", "\n=======\n", "|||||||"):
            assert marker not in text, (path, text)


async def assert_device_holds_head(device: Device) -> None:
    head, files = await server_files(device.writer, device.novel_id)
    assert device.base == head
    assert device.files == files


# -- merging offline edits -----------------------------------------------------------


async def test_two_devices_editing_different_paragraphs_merge_cleanly(ann: Writer):
    novel_id = await new_novel(ann)
    laptop, phone = await devices(ann, novel_id, "laptop", "phone")
    laptop.replace(CHAPTER, "dark for years", "dark for a decade")
    phone.replace(CHAPTER, "addressed to her mother", "addressed to her, in her mother's hand")

    first = await laptop.sync()
    assert first["status"] == "fast_forward" and first["conflicts"] == []
    second = await phone.sync()
    assert second["status"] == "merged" and second["conflicts"] == []
    for device in (laptop, phone):
        await device.sync()
        assert "dark for a decade" in device.files[CHAPTER]
        assert "in her mother's hand" in device.files[CHAPTER]
        await assert_device_holds_head(device)


async def test_two_devices_editing_one_paragraph_merge_word_by_word(ann: Writer):
    novel_id = await new_novel(ann)
    laptop, phone = await devices(ann, novel_id, "laptop", "phone")
    laptop.replace(CHAPTER, "lighthouse stairs", "lighthouse steps")
    phone.replace(CHAPTER, "had been dark", "had been unlit")

    await laptop.sync()
    answer = await phone.sync()
    assert answer["status"] == "merged" and answer["conflicts"] == []
    paragraph = phone.files[CHAPTER]
    assert "Mara climbed the lighthouse steps. The lamp had been unlit for years." in paragraph
    await assert_device_holds_head(phone)


async def test_two_devices_changing_the_same_words_conflict_and_keep_both_texts(
    ann: Writer, settings: Settings
):
    novel_id = await new_novel(ann)
    laptop, phone = await devices(ann, novel_id, "laptop", "phone")
    laptop.replace(CHAPTER, "dark for years", "cold for years")
    phone.replace(CHAPTER, "dark for years", "silent for years")
    phone_text = phone.files[CHAPTER]

    await laptop.sync()
    answer = await phone.sync()

    assert answer["status"] == "conflicted"
    [conflict] = answer["conflicts"]
    assert conflict["path"] == CHAPTER
    assert "dark" in conflict["base"] and "cold" in conflict["ours"]
    assert "silent" in conflict["theirs"]
    head, files = await server_files(ann, novel_id)
    assert "cold for years" in files[CHAPTER] and "silent" not in files[CHAPTER]
    assert_no_markers(files)
    assert_no_markers(phone.files)

    status, listed = await ann.call("GET", f"/api/v1/novels/{novel_id}/conflicts")
    assert status == 200
    [record] = listed["items"]
    assert record["id"] == conflict["id"] and record["merge_commit"] == head
    merge = git(settings, novel_id)[head]
    assert record["device_commit"] in [str(p) for p in merge.parent_ids]
    status, raw = await ann.call(
        "GET", f"/api/v1/novels/{novel_id}/files/{CHAPTER}?rev={record['device_commit']}"
    )
    assert status == 200 and raw == phone_text


async def test_front_matter_fields_changed_on_two_devices_are_both_kept(ann: Writer):
    novel_id = await new_novel(ann)
    laptop, phone = await devices(ann, novel_id, "laptop", "phone")
    laptop.replace(CHAPTER, "title: The Lighthouse", "title: The Lamp Room")
    phone.replace(CHAPTER, "status: draft", "status: in_progress")

    await laptop.sync()
    answer = await phone.sync()
    assert answer["status"] == "merged" and answer["conflicts"] == []
    text = phone.files[CHAPTER]
    assert "title: The Lamp Room\n" in text and "status: in_progress\n" in text
    status, chapters = await ann.call("GET", f"/api/v1/novels/{novel_id}/chapters")
    assert status == 200
    [row] = chapters["items"]
    assert row["title"] == "The Lamp Room" and row["status"] == "in_progress"


@pytest.mark.parametrize("deleted_first", [True, False])
async def test_a_file_deleted_on_one_device_and_edited_on_another_is_kept_with_a_conflict(
    ann: Writer, deleted_first: bool
):
    novel_id = await new_novel(ann)
    deleter, editor = await devices(ann, novel_id, "deleter", "editor")
    deleter.write(CHAPTER, None)
    editor.replace(CHAPTER, "dark for years", "dark since the storm")

    first, second = (deleter, editor) if deleted_first else (editor, deleter)
    await first.sync()
    answer = await second.sync()

    assert answer["status"] == "conflicted"
    [conflict] = answer["conflicts"]
    assert conflict["path"] == CHAPTER
    assert None in (conflict["ours"], conflict["theirs"])
    _, files = await server_files(ann, novel_id)
    assert "dark since the storm" in files[CHAPTER]
    status, chapters = await ann.call("GET", f"/api/v1/novels/{novel_id}/chapters")
    assert [c["path"] for c in chapters["items"]] == [CHAPTER]


async def test_new_chapters_made_on_two_devices_are_both_present(ann: Writer):
    novel_id = await new_novel(ann)
    laptop, phone = await devices(ann, novel_id, "laptop", "phone")
    laptop.write("chapters/storm.md", "---\ntitle: Storm\nnumber: 2\n---\nRain came.\n")
    phone.write("chapters/calm.md", "---\ntitle: Calm\nnumber: 3\n---\nThe sea slept.\n")

    await laptop.sync()
    answer = await phone.sync()
    assert answer["status"] == "merged"
    await laptop.sync()
    assert {"chapters/storm.md", "chapters/calm.md", CHAPTER} <= set(laptop.files)
    assert laptop.files == phone.files
    status, chapters = await ann.call("GET", f"/api/v1/novels/{novel_id}/chapters")
    assert [c["title"] for c in chapters["items"]] == ["The Lighthouse", "Storm", "Calm"]
    status, novel = await ann.call("GET", f"/api/v1/novels/{novel_id}")
    assert novel["current_word_count"] == sum(c["word_count"] for c in chapters["items"])


async def test_three_devices_each_receive_exactly_the_files_that_differ_from_their_base(
    ann: Writer, settings: Settings
):
    novel_id = await new_novel(ann)
    laptop, phone, tablet = await devices(ann, novel_id, "laptop", "phone", "tablet")
    laptop.write("characters/mara.md", "---\nname: Mara\n---\nThe keeper's daughter.\n")
    laptop.replace(CHAPTER, "Gulls wheeled", "Terns wheeled")
    phone.write("locations/tower.md", "---\nname: The Tower\n---\nWhite stone.\n")
    tablet.replace(CHAPTER, "a letter", "an unopened letter")
    tablet.write("chapters/storm.md", "---\ntitle: Storm\n---\nRain.\n")

    for device in (laptop, phone, tablet):
        base = device.base
        answer = await device.sync()
        before, after = (
            all_texts(settings, novel_id, base),
            all_texts(settings, novel_id, answer["head"]),
        )
        differing = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
        assert {f["path"] for f in answer["files"]} == differing
        for entry in answer["files"]:
            assert entry["content"] == after.get(entry["path"])
        await assert_device_holds_head(device)
    await laptop.sync()
    await phone.sync()
    assert laptop.files == phone.files == tablet.files
    text = laptop.files[CHAPTER]
    assert "Terns wheeled" in text and "an unopened letter" in text


# -- idempotency and refusals ----------------------------------------------------------


async def first_sync(ann: Writer, op_id: str) -> tuple[str, Device, dict, dict]:
    """A laptop's first sync of a new novel: the novel, the device, its body, the answer."""
    novel_id = await new_novel(ann)
    [laptop] = await devices(ann, novel_id, "laptop")
    laptop.replace(CHAPTER, "dark for years", "dark for ages")
    body = laptop.body(op_id)
    status, first = await ann.call("POST", laptop.url, body)
    assert status == 200
    return novel_id, laptop, body, first


async def test_a_replayed_sync_answers_the_same_and_writes_nothing(ann: Writer, settings: Settings):
    novel_id, laptop, body, first = await first_sync(ann, "op-lost-answer")
    commits = commit_count(settings, novel_id)
    status, again = await ann.call("POST", laptop.url, body)
    assert status == 200 and again == first
    assert commit_count(settings, novel_id) == commits
    assert git_head(settings, novel_id) == first["head"]
    # The kept answer names files by blob, not by text: replays read the text from Git.
    stored = await ann.client.app[DB].read(
        find_operation, novel_id, "laptop", "op-lost-answer"
    )  # fmt: skip
    assert CHAPTER in stored["response"] and "dark for ages" not in stored["response"]
    assert any("dark for ages" in f["content"] for f in first["files"])

    changed = {**body, "changes": [{"path": CHAPTER, "content": "something else"}]}
    status, refused = await ann.call("POST", laptop.url, changed)
    assert status == 409 and refused["error"]["code"] == "op_id_reused"
    assert git_head(settings, novel_id) == first["head"]


async def test_an_operation_kept_before_the_digest_changed_still_replays(ann: Writer):
    """Rows kept by an earlier version hold a bare sha256 of the request as JSON; a
    device retrying across the upgrade gets its first answer, not op_id_reused."""
    novel_id, laptop, body, first = await first_sync(ann, "op-before-upgrade")
    db = ann.client.app[DB]
    stored = await db.read(find_operation, novel_id, "laptop", "op-before-upgrade")
    assert stored["request_hash"].startswith("v2:")
    changes = {c["path"]: c["content"] for c in body["changes"]}
    # The message the server gives a sync that sends none is part of the request.
    legacy = _legacy_request_hash(body["base"], changes, "Sync from laptop")

    def as_before(conn) -> None:  # noqa: ANN001
        conn.execute(
            "UPDATE device_operation SET request_hash = ? WHERE novel_id = ? AND op_id = ?",
            (legacy, novel_id, "op-before-upgrade"),
        )

    await db.write(as_before)
    status, again = await ann.call("POST", laptop.url, body)
    assert status == 200 and again == first
    other = {**body, "changes": [{"path": CHAPTER, "content": "something else"}]}
    status, refused = await ann.call("POST", laptop.url, other)
    assert status == 409 and refused["error"]["code"] == "op_id_reused"


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (("b", {"a": "bc"}, None), ("b", {"ab": "c"}, None)),
        (("b", {"a": None}, None), ("b", {"a": ""}, None)),
        ((None, {"a": "x"}, "m"), ("", {"a": "x"}, "m")),
        (("b", {"a": "x", "c": "y"}, None), ("b", {"a": "x"}, None)),
        (("b", {"a": "x"}, "1:"), ("b", {"a": "x"}, None)),
    ],
)
def test_different_requests_never_share_a_digest(one: tuple, two: tuple):
    assert request_hash(*one) != request_hash(*two)
    assert request_hash(*one) == request_hash(*one)


async def test_a_replay_after_other_devices_synced_still_answers_the_first_answer(ann: Writer):
    novel_id = await new_novel(ann)
    laptop, phone = await devices(ann, novel_id, "laptop", "phone")
    laptop.replace(CHAPTER, "dark for years", "dark for ages")
    body = laptop.body("op-1")
    status, first = await ann.call("POST", laptop.url, body)
    phone.replace(CHAPTER, "Gulls", "Terns")
    await phone.sync()
    status, again = await ann.call("POST", laptop.url, body)
    assert status == 200 and again == first


async def test_a_base_the_novel_never_had_is_refused(ann: Writer):
    novel_id = await new_novel(ann)
    other_id = await new_novel(ann, "Another")
    [laptop] = await devices(ann, novel_id, "laptop")
    [elsewhere] = await devices(ann, other_id, "laptop")
    laptop.replace(CHAPTER, "dark", "pale")
    for base in ("0" * 40, elsewhere.base):
        laptop.base = base
        answer = await laptop.sync(expect=409)
        assert answer["error"]["code"] == "unknown_base"
    status, pulled = await ann.call("GET", f"/api/v1/novels/{novel_id}/sync?since={'0' * 40}")
    assert status == 409 and pulled["error"]["code"] == "unknown_base"


async def test_a_device_that_never_synced_sends_base_null_and_merges(ann: Writer):
    novel_id = await new_novel(ann)
    fresh = Device(ann, novel_id, "fresh")
    fresh.write("chapters/notes.md", "---\ntitle: Notes\n---\nIdeas.\n")
    answer = await fresh.sync()
    assert answer["status"] == "merged"
    await assert_device_holds_head(fresh)
    assert fresh.files[CHAPTER] == (await server_files(ann, novel_id))[1][CHAPTER]


async def test_pull_since_a_commit_answers_the_files_changed_after_it(ann: Writer):
    novel_id = await new_novel(ann)
    laptop, phone = await devices(ann, novel_id, "laptop", "phone")
    since = phone.base
    laptop.write("chapters/storm.md", "---\ntitle: Storm\n---\nRain.\n")
    answer = await laptop.sync()
    status, pulled = await ann.call("GET", f"/api/v1/novels/{novel_id}/sync?since={since}")
    assert status == 200 and pulled["head"] == answer["head"]
    assert [f["path"] for f in pulled["files"]] == ["chapters/storm.md"]
    status, nothing = await ann.call(
        "GET", f"/api/v1/novels/{novel_id}/sync?since={answer['head']}"
    )
    assert status == 200 and nothing["files"] == []


async def test_conflicts_stay_listed_until_resolved(ann: Writer):
    novel_id = await new_novel(ann)
    laptop, phone = await devices(ann, novel_id, "laptop", "phone")
    laptop.replace(CHAPTER, "dark for years", "cold for years")
    phone.replace(CHAPTER, "dark for years", "silent for years")
    await laptop.sync()
    [conflict] = (await phone.sync())["conflicts"]

    status, listed = await ann.call("GET", f"/api/v1/novels/{novel_id}/conflicts")
    assert [c["id"] for c in listed["items"]] == [conflict["id"]]
    chosen = phone.files[CHAPTER].replace("cold for years", "cold and silent for years")
    status, resolved = await ann.call(
        "POST", f"/api/v1/novels/{novel_id}/conflicts/{conflict['id']}/resolve", {"content": chosen}
    )
    assert status == 200, resolved
    status, listed = await ann.call("GET", f"/api/v1/novels/{novel_id}/conflicts")
    assert listed["items"] == []
    _, files = await server_files(ann, novel_id)
    assert files[CHAPTER] == chosen
    status, again = await ann.call(
        "POST", f"/api/v1/novels/{novel_id}/conflicts/{conflict['id']}/resolve", {"content": chosen}
    )
    assert status == 404


# -- the change feed, events and permissions ---------------------------------------------


async def test_the_feed_lists_each_moved_novel_once_after_the_cursor(ann: Writer, bob: Writer):
    first_id = await new_novel(ann, "First")
    second_id = await new_novel(ann, "Second")
    await new_novel(bob, "Bob's own")
    status, start = await ann.call("GET", "/api/v1/sync/feed")
    assert status == 200
    assert {i["novel_id"] for i in start["items"]} == {first_id, second_id}
    cursor = start["cursor"]

    status, idle = await ann.call("GET", f"/api/v1/sync/feed?cursor={cursor}")
    assert idle["items"] == [] and idle["cursor"] == cursor
    [laptop] = await devices(ann, first_id, "laptop")
    for word in ("pale", "grey"):
        laptop.replace(CHAPTER, "dark" if word == "pale" else "pale", word)
        await laptop.sync()
    status, moved = await ann.call("GET", f"/api/v1/sync/feed?cursor={cursor}")
    assert [(i["novel_id"], i["head"]) for i in moved["items"]] == [(first_id, laptop.base)]
    status, bobs = await bob.call("GET", f"/api/v1/sync/feed?cursor={cursor}")
    assert bobs["items"] == []
    status, bad = await ann.call("GET", "/api/v1/sync/feed?cursor=abc")
    assert status == 422 and bad["error"]["code"] == "invalid_cursor"


async def test_event_stream_announces_a_sync_as_a_head_event(ann: Writer):
    novel_id = await new_novel(ann)
    [laptop] = await devices(ann, novel_id, "laptop")
    response = await ann.client.get("/api/v1/events", headers=ann.headers)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert (await asyncio.wait_for(response.content.readline(), 10)) == b": connected\n"

    laptop.replace(CHAPTER, "dark", "pale")
    answer = await laptop.sync()

    async def next_head() -> dict:
        while True:
            line = await response.content.readline()
            if line == b"event: head\n":
                data = await response.content.readline()
                return json.loads(data.decode().removeprefix("data: "))

    event = await asyncio.wait_for(next_head(), 10)
    while event["head"] != answer["head"]:
        event = await asyncio.wait_for(next_head(), 10)
    assert event == {"novel_id": novel_id, "head": answer["head"]}
    response.close()


async def test_a_viewer_or_read_token_can_pull_but_not_sync_changes(ann: Writer, bob: Writer):
    status, org = await ann.call("POST", "/api/v1/orgs", {"name": "Shared", "slug": "shared"})
    assert status == 201, org
    status, novel = await ann.call("POST", "/api/v1/novels", {"title": "Shared", "org": "shared"})
    status, member = await ann.call(
        "POST", "/api/v1/orgs/shared/members", {"email": bob.user["email"], "role": "viewer"}
    )
    assert status == 201, member
    status, token = await ann.call("POST", "/api/v1/tokens", {"name": "ro", "scopes": ["read"]})
    assert status == 201, token
    reader = Writer(ann.client, ann.user, token["token"], ann.org)

    for who in (bob, reader):
        [device] = await devices(who, novel["id"], "ro-device")
        assert "novel.md" in device.files
        device.write("chapters/sneaky.md", "Not allowed.\n")
        answer = await device.sync(expect=403)
        assert answer["error"]["code"] in ("insufficient_role", "insufficient_scope")
        device.pending.clear()
        assert (await device.sync())["status"] == "noop"
        _, files = await server_files(ann, novel["id"])
        assert "chapters/sneaky.md" not in files


# -- chapters, characters and locations as commits ---------------------------------------


async def novel_row(writer: Writer, novel_id: str) -> dict:
    status, novel = await writer.call("GET", f"/api/v1/novels/{novel_id}")
    assert status == 200
    return novel


async def test_chapter_routes_commit_and_the_index_follows(ann: Writer, settings: Settings):
    status, novel = await ann.call("POST", "/api/v1/novels", {"title": "Routes"})
    nid = novel["id"]
    base = f"/api/v1/novels/{nid}/chapters"
    status, one = await ann.call("POST", base, {"title": "One", "content": "One two three.\n"})
    assert status == 201 and one["chapter"]["word_count"] == 3 and one["chapter"]["number"] == 1
    status, two = await ann.call("POST", base, {"title": "Two", "content": "Four five.\n"})
    assert two["chapter"]["number"] == 2 and two["head"] == git_head(settings, nid)
    assert (await novel_row(ann, nid))["current_word_count"] == 5
    status, listed = await ann.call("GET", base)
    assert [c["title"] for c in listed["items"]] == ["One", "Two"]

    one_id = one["chapter"]["id"]
    response = await ann.client.get(f"{base}/{one_id}", headers=ann.headers)
    assert response.status == 200
    got = await response.json()
    etag = response.headers["ETag"]
    assert got["content"] == "One two three.\n" and etag == f'"{got["blob"]}"'
    response = await ann.client.get(
        f"{base}/{one_id}", headers={**ann.headers, "If-None-Match": etag}
    )
    assert response.status == 304

    status, patched = await ann.call(
        "PATCH", f"{base}/{one_id}",
        {"content": "One two three four five six.\n", "base_blob": got["blob"]},
    )  # fmt: skip
    assert status == 200 and patched["chapter"]["word_count"] == 6
    assert (await novel_row(ann, nid))["current_word_count"] == 8
    status, stale = await ann.call(
        "PATCH", f"{base}/{one_id}", {"content": "Lost edit.\n", "base_blob": got["blob"]}
    )
    assert status == 409 and stale["error"]["code"] == "stale_blob"
    assert git_head(settings, nid) == patched["head"]

    before = git_head(settings, nid)
    status, reordered = await ann.call(
        "POST", f"{base}/reorder", {"order": [two["chapter"]["id"], one_id]}
    )
    assert status == 200
    assert [str(p) for p in git(settings, nid)[reordered["head"]].parent_ids] == [before]
    status, listed = await ann.call("GET", base)
    assert [(c["title"], c["number"]) for c in listed["items"]] == [("Two", 1), ("One", 2)]
    raw = all_texts(settings, nid, reordered["head"])["chapters/one.md"]
    assert "number: 2\nweight: 2\n" in raw

    status, _ = await ann.call("DELETE", f"{base}/{one_id}")
    assert status == 204
    status, listed = await ann.call("GET", base)
    assert [c["title"] for c in listed["items"]] == ["Two"]
    assert (await novel_row(ann, nid))["current_word_count"] == 2
    assert "chapters/one.md" not in all_texts(settings, nid, git_head(settings, nid))
    assert (await novel_row(ann, nid))["head"] == git_head(settings, nid)


@pytest.mark.parametrize(
    ("folder", "fields", "patch", "column"),
    [
        ("characters", {"name": "Mara", "role": "keeper"}, {"role": "heir"}, "role"),
        ("locations", {"name": "The Tower", "type": "building"}, {"type": "ruin"}, "type"),
    ],
)
async def test_character_and_location_routes_commit_and_the_index_follows(
    ann: Writer, settings: Settings, folder: str, fields: dict, patch: dict, column: str
):
    status, novel = await ann.call("POST", "/api/v1/novels", {"title": "Cast"})
    base = f"/api/v1/novels/{novel['id']}/{folder}"
    label = folder.removesuffix("s")
    status, made = await ann.call("POST", base, {**fields, "content": "Notes here.\n"})
    assert status == 201, made
    item = made[label]
    assert item["word_count"] == 2 and item["path"].startswith(folder + "/")
    status, listed = await ann.call("GET", base)
    assert [i["id"] for i in listed["items"]] == [item["id"]]
    response = await ann.client.get(f"{base}/{item['id']}", headers=ann.headers)
    etag = response.headers["ETag"]
    response = await ann.client.get(
        f"{base}/{item['id']}", headers={**ann.headers, "If-None-Match": etag}
    )
    assert response.status == 304
    status, updated = await ann.call("PATCH", f"{base}/{item['id']}", patch)
    assert status == 200 and updated[label][column] == next(iter(patch.values()))
    status, stale = await ann.call(
        "PATCH", f"{base}/{item['id']}", {"content": "x\n", "base_blob": item["blob"]}
    )
    assert status == 409
    status, _ = await ann.call("DELETE", f"{base}/{item['id']}")
    assert status == 204
    status, listed = await ann.call("GET", base)
    assert listed["items"] == []
    status, _ = await ann.call("GET", f"{base}/{item['id']}")
    assert status == 404


async def test_front_matter_is_written_in_a_stable_order_and_rewriting_changes_no_byte(
    ann: Writer, settings: Settings
):
    status, novel = await ann.call("POST", "/api/v1/novels", {"title": "Order"})
    nid = novel["id"]
    status, made = await ann.call(
        "POST", f"/api/v1/novels/{nid}/chapters",
        {"title": "Dawn", "content": "Light.\n", "summary": "It begins.", "status": "published"},
    )  # fmt: skip
    chapter = made["chapter"]
    text = all_texts(settings, nid, made["head"])[chapter["path"]]
    keys = [line.split(":")[0] for line in text.split("---\n")[1].splitlines()]
    assert keys == ["id", "title", "number", "weight", "status", "draft", "summary"]
    assert "draft: false\n" in text and "weight: 1\n" in text

    status, same = await ann.call(
        "PATCH", f"/api/v1/novels/{nid}/chapters/{chapter['id']}",
        {"title": "Dawn", "status": "published", "content": "Light.\n"},
    )  # fmt: skip
    assert status == 200 and same["head"] == made["head"]
    assert same["chapter"]["blob"] == chapter["blob"]
    assert git_head(settings, nid) == made["head"]


async def test_concurrent_edits_through_the_routes_lose_nothing(ann: Writer, settings: Settings):
    status, novel = await ann.call("POST", "/api/v1/novels", {"title": "Busy"})
    nid = novel["id"]
    base = f"/api/v1/novels/{nid}/chapters"
    made = await asyncio.gather(
        *(
            ann.call("POST", base, {"title": "Same Title", "content": f"Text {i}.\n"})
            for i in range(4)
        )
    )
    assert all(status == 201 for status, _ in made), made
    status, listed = await ann.call("GET", base)
    assert len(listed["items"]) == 4
    texts = all_texts(settings, nid, git_head(settings, nid))
    for i in range(4):
        assert any(f"Text {i}." in t for t in texts.values())

    status, one = await ann.call("POST", base, {"title": "Shared", "content": "Alpha.\n\nOmega.\n"})
    cid = one["chapter"]["id"]
    answers = await asyncio.gather(
        ann.call("PATCH", f"{base}/{cid}", {"title": "Renamed"}),
        ann.call("PATCH", f"{base}/{cid}", {"status": "completed"}),
        ann.call(
            "POST", f"{base}/reorder", {"order": [c["id"] for c in listed["items"]][::-1] + [cid]}
        ),
    )
    assert all(status == 200 for status, _ in answers), answers
    status, got = await ann.call("GET", f"{base}/{cid}")
    assert got["title"] == "Renamed" and got["status"] == "completed"


# -- the index is derived from Git and repaired from it ----------------------------------


async def test_reindex_rebuilds_rows_deleted_by_hand(ann: Writer, settings: Settings):
    novel_id = await new_novel(ann)
    await ann.call(
        "POST", f"/api/v1/novels/{novel_id}/characters", {"name": "Mara", "content": "Keeper.\n"}
    )
    status, before = await ann.call("GET", f"/api/v1/novels/{novel_id}/chapters")
    db = open_database(settings.database_path, readers=1)
    try:

        def wipe(conn):  # noqa: ANN001, ANN202
            for table in ("chapter", "character", "location"):
                conn.execute(f"DELETE FROM {table} WHERE novel_id = ?", (novel_id,))
            conn.execute("UPDATE novel SET current_word_count = 0 WHERE id = ?", (novel_id,))

        db.write_sync(wipe)
        assert check_novels(db, settings.repositories_dir).repaired == []
        report = check_novels(db, settings.repositories_dir, force=True)
        assert novel_id in report.repaired
        rows = db.read_sync(
            lambda conn: query(conn, "SELECT name FROM character WHERE novel_id = ?", (novel_id,))
        )
        assert rows == [{"name": "Mara"}]
    finally:
        db.close()
    status, after = await ann.call("GET", f"/api/v1/novels/{novel_id}/chapters")
    assert after["items"] == before["items"]
    novel = await novel_row(ann, novel_id)
    assert novel["current_word_count"] == before["items"][0]["word_count"]


async def test_start_up_check_removes_a_ref_lock_left_by_a_crash(ann: Writer, settings: Settings):
    novel_id = await new_novel(ann)
    [laptop] = await devices(ann, novel_id, "laptop")
    # What SIGKILL leaves between libgit2 creating the ref's lock file and renaming it.
    ref_lock = settings.repositories_dir / f"{novel_id}.git" / "refs" / "heads" / "main.lock"
    ref_lock.write_text("0" * 40 + "\n")
    laptop.replace(CHAPTER, "dark", "pale")
    answer = await laptop.sync(expect=503)
    assert answer["error"]["code"] == "novel_busy"

    db = open_database(settings.database_path, readers=1)
    try:
        report = check_novels(db, settings.repositories_dir)
    finally:
        db.close()
    assert report.unlocked == [novel_id] and not ref_lock.exists()
    assert (await laptop.sync())["status"] == "fast_forward"


def test_start_up_repairs_an_index_left_behind_git(tmp_path):
    import urllib.request

    data_dir = tmp_path / "data"

    def call(url: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        request = urllib.request.Request(
            url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {token}"} if token else {})},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    server = start_server(data_dir)
    try:
        account = {"name": "Ann", "email": "ann@example.com", "password": "correct horse"}
        signup = call(server.url, "POST", "/api/v1/auth/signup", account)
        token = signup["token"]
        novel = call(server.url, "POST", "/api/v1/novels", {"title": "Offline"}, token)
        chapter = {"title": "One", "content": "A b c.\n"}
        call(server.url, "POST", f"/api/v1/novels/{novel['id']}/chapters", chapter, token)
    finally:
        server.stop()

    repo = pygit2.Repository(str(data_dir / "novels" / f"{novel['id']}.git"))
    parent = repo.references["refs/heads/main"].target
    builder = repo.TreeBuilder(repo[parent].tree)
    chapters = repo.TreeBuilder(repo[repo[parent].tree["chapters"].id])
    chapters.insert(
        "two.md",
        repo.create_blob(b"---\ntitle: Two\nnumber: 2\n---\nD e f g.\n"),
        pygit2.GIT_FILEMODE_BLOB,
    )
    builder.insert("chapters", chapters.write(), pygit2.GIT_FILEMODE_TREE)
    signature = pygit2.Signature("Hand", "hand@example.com")
    ahead = repo.create_commit(
        "refs/heads/main", signature, signature, "by hand", builder.write(), [parent]
    )

    server = start_server(data_dir)
    try:
        got = call(server.url, "GET", f"/api/v1/novels/{novel['id']}", token=token)
        assert got["head"] == str(ahead)
        assert got["current_word_count"] == 7
        chapters_list = call(
            server.url, "GET", f"/api/v1/novels/{novel['id']}/chapters", token=token
        )
        assert [c["title"] for c in chapters_list["items"]] == ["One", "Two"]
    finally:
        server.stop()
    conn_db = open_database(data_dir / "openwrite.db", readers=1)
    try:
        row = conn_db.read_sync(
            lambda conn: query_one(conn, "SELECT head FROM novel WHERE id = ?", (novel["id"],))
        )
        assert row["head"] == str(ahead)
    finally:
        conn_db.close()


# -- repository upkeep follows the syncs ----------------------------------------------------


async def test_a_merged_sync_writes_one_pack_and_upkeep_keeps_their_number_down(
    ann: Writer, client
) -> None:
    """Each sync's objects go to disk as one pack (both commits of a merge together), and
    the library folds them in the background as syncs go on: a busy novel never reaches
    the pack count at which every lookup gets slow."""
    from storage.library import CHECK_EVERY  # noqa: PLC0415
    from storage.maintenance import DEFAULT_PACK_THRESHOLD, pack_count  # noqa: PLC0415

    library = client.app[LIBRARY]
    novel_id = await new_novel(ann)
    path = library.path(novel_id)
    laptop, phone = await devices(ann, novel_id, "laptop", "phone")
    laptop.write("chapters/notes.md", "Notes.\n")
    await laptop.sync()
    before = pack_count(path)
    phone.replace(CHAPTER, "stairs", "steps")
    answer = await phone.sync()
    assert answer["status"] == "merged"
    assert pack_count(path) == before + 1

    heads = []
    for n in range(3 * DEFAULT_PACK_THRESHOLD):
        device = (laptop, phone)[n % 2]
        device.write(f"chapters/notes-{device.device_id}.md", f"Note {n}.\n")
        heads.append((await device.sync())["head"])
        await asyncio.gather(*map(asyncio.wrap_future, list(library._maintaining.values())))
        assert pack_count(path) < DEFAULT_PACK_THRESHOLD + CHECK_EVERY

    assert pack_count(path) < DEFAULT_PACK_THRESHOLD
    repo = pygit2.Repository(str(path))
    assert all(repo.descendant_of(repo.head.target, h) or str(repo.head.target) == h
               for h in heads)  # fmt: skip
    checked = subprocess.run(
        ["git", f"--git-dir={path}", "fsck", "--strict", "--no-dangling"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (await server_files(ann, novel_id))[1]["chapters/notes-phone.md"] == (
        f"Note {3 * DEFAULT_PACK_THRESHOLD - 1}.\n"
    )
