"""Bad input to the sync endpoint and the content routes: a clear 4xx, and nothing written
(no SQLite row added or removed, the Git head where it was)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pygit2
import pytest
from aiohttp.test_utils import TestClient

from server.config import Settings
from tests.conftest import Writer, sign_up
from tests.db_snapshot import row_counts

MAX_FILE_BYTES = 2000
MAX_CHANGES = 5


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """Small file and change-set limits, so refusing them is cheap to provoke."""
    return Settings(
        data_dir=data_dir, scrypt_n=2**12, max_file_bytes=MAX_FILE_BYTES, max_changes=MAX_CHANGES
    )


@pytest.fixture
async def novel(ann: Writer) -> dict[str, Any]:
    status, novel = await ann.call("POST", "/api/v1/novels", {"title": "Guarded"})
    assert status == 201
    status, made = await ann.call(
        "POST", f"/api/v1/novels/{novel['id']}/chapters", {"title": "One", "content": "Text.\n"}
    )
    assert status == 201
    return {**novel, "head": made["head"], "chapter": made["chapter"]}


def git_head(settings: Settings, novel_id: str) -> str:
    repo = pygit2.Repository(str(settings.repositories_dir / f"{novel_id}.git"))
    return str(repo.references["refs/heads/main"].target)


def state(settings: Settings, novel_id: str) -> tuple[dict[str, int], str, int]:
    objects = settings.repositories_dir / f"{novel_id}.git" / "objects"
    loose = sum(1 for p in objects.rglob("*") if p.is_file())
    return row_counts(settings.database_path), git_head(settings, novel_id), loose


def sync_body(novel: dict, changes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"device_id": "laptop", "op_id": "op-1", "base": novel["head"], "changes": changes,
            **extra}  # fmt: skip


async def post_raw(client: TestClient, writer: Writer, path: str, raw: bytes) -> tuple[int, Any]:
    response = await client.post(
        path, data=raw, headers={**writer.headers, "Content-Type": "application/json"}
    )
    text = await response.read()
    return response.status, json.loads(text) if text else None


def assert_refused(status: int, answer: Any, expected: set[int], code: str | None = None) -> None:
    assert status in expected, (status, answer)
    assert set(answer["error"]) == {"code", "message", "details"}, answer
    if code is not None:
        assert answer["error"]["code"] == code, answer


BAD_PATHS = [
    "../novel.md",
    "chapters/../novel.md",
    "chapters/../../etc/passwd.md",
    "chapters\\one.md",
    "chapters/on\x01e.md",
    "chapters/one\n.md",
    "chapters/one.txt",
    "chapters/one",
    "/chapters/one.md",
    "/etc/passwd",
    "notes/one.md",
    "chapters/deep/one.md",
    "chapters/.hidden.md",
    ".git/config",
    "chapters//one.md",
    "chapters/",
    "",
    "chapters/caf\u00e9.md",
    "novel.md/",
]


@pytest.mark.parametrize("path", BAD_PATHS)
async def test_paths_outside_the_layout_are_refused_and_nothing_is_written(
    ann: Writer, novel: dict, settings: Settings, path: str
):
    before = state(settings, novel["id"])
    status, answer = await ann.call(
        "POST", f"/api/v1/novels/{novel['id']}/sync",
        sync_body(novel, [{"path": path, "content": "Text.\n"}]),
    )  # fmt: skip
    assert_refused(status, answer, {422}, "invalid_path")
    assert state(settings, novel["id"]) == before


BAD_TEXTS = [
    ("nul", "Before\x00after.\n", "nul_character"),
    ("unterminated front matter", "---\ntitle: Open\nNo closing fence.\n", "invalid_front_matter"),
    ("front matter not YAML", "---\ntitle: [unclosed\n---\nBody.\n", "invalid_front_matter"),
    ("front matter not a mapping", "---\n- a\n- b\n---\nBody.\n", "invalid_front_matter"),
]


@pytest.mark.parametrize(("name", "text", "code"), BAD_TEXTS, ids=[t[0] for t in BAD_TEXTS])
async def test_texts_that_cannot_be_stored_are_refused_and_nothing_is_written(
    ann: Writer, novel: dict, settings: Settings, name: str, text: str, code: str
):
    before = state(settings, novel["id"])
    status, answer = await ann.call(
        "POST", f"/api/v1/novels/{novel['id']}/sync",
        sync_body(novel, [{"path": "chapters/new.md", "content": text}]),
    )  # fmt: skip
    assert_refused(status, answer, {422}, code)
    assert state(settings, novel["id"]) == before


@pytest.mark.parametrize("field", ["content", "path", "message", "device_id", "op_id"])
async def test_lone_surrogates_are_refused_wherever_they_are_sent(
    ann: Writer, novel: dict, settings: Settings, client: TestClient, field: str
):
    before = state(settings, novel["id"])
    change = {"path": "chapters/new.md", "content": "PLACEHOLDER"}
    body = sync_body(novel, [change], message="A message")
    raw = json.dumps(body)
    if field in ("content", "path"):
        raw = raw.replace(json.dumps(change[field]), '"bad \\ud800 text"')
    else:
        raw = raw.replace(json.dumps(body[field]), '"bad \\udfff"')
    status, answer = await post_raw(client, ann, f"/api/v1/novels/{novel['id']}/sync", raw.encode())
    assert_refused(status, answer, {400, 422})
    assert state(settings, novel["id"]) == before


async def test_a_file_over_the_limit_is_refused_and_nothing_is_written(
    ann: Writer, novel: dict, settings: Settings
):
    before = state(settings, novel["id"])
    big = "word " * (MAX_FILE_BYTES // 5 + 1)
    status, answer = await ann.call(
        "POST", f"/api/v1/novels/{novel['id']}/sync",
        sync_body(novel, [{"path": "chapters/small.md", "content": "Fine.\n"},
                          {"path": "chapters/big.md", "content": big}]),
    )  # fmt: skip
    assert_refused(status, answer, {413}, "file_too_large")
    assert answer["error"]["details"]["path"] == "chapters/big.md"
    assert state(settings, novel["id"]) == before


async def test_more_changes_than_the_limit_are_refused_and_nothing_is_written(
    ann: Writer, novel: dict, settings: Settings
):
    before = state(settings, novel["id"])
    changes = [{"path": f"chapters/c{i}.md", "content": "x\n"} for i in range(MAX_CHANGES + 1)]
    status, answer = await ann.call(
        "POST", f"/api/v1/novels/{novel['id']}/sync", sync_body(novel, changes)
    )
    assert_refused(status, answer, {413}, "too_many_changes")
    assert state(settings, novel["id"]) == before


async def test_the_same_path_twice_is_refused_and_nothing_is_written(
    ann: Writer, novel: dict, settings: Settings
):
    before = state(settings, novel["id"])
    changes = [{"path": "chapters/a.md", "content": "one\n"},
               {"path": "chapters/a.md", "content": None}]  # fmt: skip
    status, answer = await ann.call(
        "POST", f"/api/v1/novels/{novel['id']}/sync", sync_body(novel, changes)
    )
    assert_refused(status, answer, {422}, "duplicate_path")
    assert state(settings, novel["id"]) == before


async def test_deleting_novel_md_is_refused_and_nothing_is_written(
    ann: Writer, novel: dict, settings: Settings
):
    before = state(settings, novel["id"])
    status, answer = await ann.call(
        "POST", f"/api/v1/novels/{novel['id']}/sync",
        sync_body(novel, [{"path": "novel.md", "content": None}]),
    )  # fmt: skip
    assert_refused(status, answer, {422}, "invalid_path")
    assert state(settings, novel["id"]) == before


@pytest.mark.parametrize(
    "body",
    [
        {"device_id": "", "op_id": "x", "base": None, "changes": []},
        {"device_id": "a b", "op_id": "x", "base": None, "changes": []},
        {"device_id": "a", "op_id": "x", "base": "HEAD", "changes": []},
        {"device_id": "a", "op_id": "x", "base": None, "changes": [{"path": "chapters/a.md"}]},
        {"device_id": "a", "op_id": "x", "base": None, "changes": [], "extra": 1},
        {"op_id": "x", "base": None, "changes": []},
        {"device_id": "a", "op_id": "x", "base": None, "changes": "chapters/a.md"},
    ],
)
async def test_malformed_sync_bodies_are_refused_and_nothing_is_written(
    ann: Writer, novel: dict, settings: Settings, body: dict
):
    before = state(settings, novel["id"])
    status, answer = await ann.call("POST", f"/api/v1/novels/{novel['id']}/sync", body)
    assert_refused(status, answer, {422}, "validation_failed")
    assert state(settings, novel["id"]) == before


async def test_a_body_that_is_not_json_or_not_utf8_is_refused(
    ann: Writer, novel: dict, settings: Settings, client: TestClient
):
    before = state(settings, novel["id"])
    url = f"/api/v1/novels/{novel['id']}/sync"
    for raw in (b"{not json", b'{"device_id": "\xff"}', b""):
        status, answer = await post_raw(client, ann, url, raw)
        assert_refused(status, answer, {400, 422})
    assert state(settings, novel["id"]) == before


async def test_content_routes_refuse_what_sync_refuses(
    ann: Writer, novel: dict, settings: Settings, client: TestClient
):
    chapters = f"/api/v1/novels/{novel['id']}/chapters"
    one = f"{chapters}/{novel['chapter']['id']}"
    before = state(settings, novel["id"])
    big = "word " * (MAX_FILE_BYTES // 5 + 1)
    status, answer = await ann.call("POST", chapters, {"title": "Big", "content": big})
    assert_refused(status, answer, {413}, "file_too_large")
    status, answer = await ann.call("PATCH", one, {"content": big})
    assert_refused(status, answer, {413}, "file_too_large")
    status, answer = await ann.call("POST", chapters, {"title": "Nul", "content": "a\x00b"})
    assert_refused(status, answer, {422})
    status, answer = await post_raw(
        client, ann, chapters, b'{"title": "Bad", "content": "lone \\ud800"}'
    )
    assert_refused(status, answer, {400, 422})
    status, answer = await post_raw(client, ann, one, b'{"title": "lone \\udc00"}')
    assert_refused(status, answer, {400, 405, 422})
    assert state(settings, novel["id"]) == before


async def test_a_conflict_resolution_with_bad_text_is_refused(
    ann: Writer, novel: dict, settings: Settings
):
    url = f"/api/v1/novels/{novel['id']}/sync"
    path = novel["chapter"]["path"]
    _, pulled = await ann.call("GET", url)
    text = next(f["content"] for f in pulled["files"] if f["path"] == path)
    for device, word in (("laptop", "Words"), ("phone", "Letters")):
        body = {"device_id": device, "op_id": "op", "base": novel["head"],
                "changes": [{"path": path, "content": text.replace("Text", word)}]}  # fmt: skip
        status, answer = await ann.call("POST", url, body)
        assert status == 200
    [conflict] = answer["conflicts"]
    before = state(settings, novel["id"])
    resolve = f"/api/v1/novels/{novel['id']}/conflicts/{conflict['id']}/resolve"
    for content in ("---\ntitle: [\n---\nx\n", "x" * (MAX_FILE_BYTES + 1)):
        status, refused = await ann.call("POST", resolve, {"content": content})
        assert_refused(status, refused, {413, 422})
    assert state(settings, novel["id"]) == before


async def test_another_tenant_cannot_sync_into_a_novel_and_learns_nothing(
    client: TestClient, novel: dict, settings: Settings
):
    mallory = await sign_up(client, "Mallory")
    before = state(settings, novel["id"])
    status, answer = await mallory.call(
        "POST", f"/api/v1/novels/{novel['id']}/sync",
        sync_body(novel, [{"path": "chapters/x.md", "content": "x\n"}]),
    )  # fmt: skip
    assert_refused(status, answer, {404}, "not_found")
    counts, head, _ = state(settings, novel["id"])
    assert head == before[1]
    assert {k: v for k, v in counts.items() if k not in ("user", "account", "session", "member",
            "organization")} == {k: v for k, v in before[0].items() if k not in ("user", "account",
            "session", "member", "organization")}  # fmt: skip
