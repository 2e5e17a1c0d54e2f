"""History as authors browse it: revisions newest first (per file, across renames made
through Git), word diffs between any two revisions, restoring a file as it was, and the
writing statistics — over real repositories with known histories."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.config import Settings
from storage.db import open_database, query
from storage.repository import Author, NovelRepository
from storage.reindex import check_novels
from tests.conftest import Writer
from tests.db_snapshot import data_state

_ops = itertools.count(1)


async def new_novel(writer: Writer, title: str = "History") -> str:
    status, novel = await writer.call("POST", "/api/v1/novels", {"title": title})
    assert status == 201, novel
    return novel["id"]


async def add_chapter(writer: Writer, novel_id: str, title: str, content: str) -> dict[str, Any]:
    status, answer = await writer.call(
        "POST", f"/api/v1/novels/{novel_id}/chapters", {"title": title, "content": content}
    )
    assert status == 201, answer
    return answer


async def sync(
    writer: Writer, novel_id: str, base: str | None, changes: dict[str, str | None]
) -> dict[str, Any]:
    status, answer = await writer.call(
        "POST",
        f"/api/v1/novels/{novel_id}/sync",
        {
            "device_id": "laptop",
            "op_id": f"op-{next(_ops)}",
            "base": base,
            "changes": [{"path": p, "content": c} for p, c in changes.items()],
        },
    )
    assert status == 200, answer
    return answer


async def pull(writer: Writer, novel_id: str) -> dict[str, Any]:
    status, answer = await writer.call("GET", f"/api/v1/novels/{novel_id}/sync")
    assert status == 200, answer
    return answer


async def history(writer: Writer, novel_id: str, **params: Any) -> dict[str, Any]:
    status, page = await writer.call(
        "GET", f"/api/v1/novels/{novel_id}/history", params={k: str(v) for k, v in params.items()}
    )
    assert status == 200, page
    return page


async def whole_history(writer: Writer, novel_id: str, **params: Any) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        page = await history(writer, novel_id, **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def chapter_text(title: str, body: str) -> str:
    return f"---\ntitle: {title}\n---\n{body}"


def repo_path(settings: Settings, novel_id: str) -> Path:
    return settings.repositories_dir / f"{novel_id}.git"


def git_log(repo_path: Path, path: str | None = None) -> list[str]:
    """Commit ids newest first as `git log --follow` sees them (pygit2, no server)."""
    repo = NovelRepository.open(repo_path)
    if path is None:
        return [revision.id for revision in repo.log()]
    return [
        revision.id
        for revision in repo.log()
        if any(path in (c.path, c.old_path) for c in repo.file_changes(revision.id))
    ]


async def test_history_lists_every_commit_newest_first_with_authors_devices_and_words(
    ann: Writer, settings: Settings
):
    novel_id = await new_novel(ann)
    chapter = await add_chapter(ann, novel_id, "Dawn", "The sun rose over the quiet harbour.")
    path = chapter["chapter"]["path"]
    head = (await pull(ann, novel_id))["head"]
    text = (await pull(ann, novel_id))["files"]
    current = next(f["content"] for f in text if f["path"] == path)
    edited = current.replace("quiet harbour.", "quiet, sleeping harbour. Boats waited.")
    answer = await sync(ann, novel_id, head, {path: edited})

    items = (await history(ann, novel_id))["items"]
    assert [item["message"] for item in items] == [
        "Sync from laptop",
        "Add chapter “Dawn”",
        "Start the novel",
    ]
    newest = items[0]
    assert newest["rev"] == answer["head"]
    assert newest["parents"] == [head]
    assert newest["author"] == {"id": ann.user["id"], "name": "Ann Writer"}
    assert newest["device_id"] == "laptop"
    assert newest["paths"] == [path]
    # "quiet harbour." → "quiet, sleeping harbour. Boats waited.": three words in.
    assert (newest["words_added"], newest["words_removed"]) == (3, 0)
    assert newest["changes"] == [
        {"path": path, "old_path": None, "change": "modified", "words_added": 3,
         "words_removed": 0},
    ]  # fmt: skip
    assert items[1]["words_added"] == 7 and items[1]["changes"][0]["change"] == "added"
    assert newest["time"].endswith("Z")
    assert [item["rev"] for item in items] == git_log(repo_path(settings, novel_id))
