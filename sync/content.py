"""Novels and their chapters, characters and locations as files: every edit made through
the API becomes a commit on the head, through the same path as a device's sync."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apsw

from storage import content_index, history, novels
from storage.db import Database
from storage.documents import (
    CHAPTER_KEYS,
    CHARACTER_KEYS,
    LOCATION_KEYS,
    NOVEL_KEYS,
    parse_document,
    render_document,
)
from storage.errors import Conflict, Invalid, NotFound
from storage.ids import new_id
from storage.layout import NOVEL_FILE, new_path
from storage.library import Library
from storage.repository import Author, NovelRepository
from sync.changes import Limits, check_text
from sync.engine import Edit, commit_changes, commit_while_writing


@dataclass(frozen=True)
class Kind:
    """One kind of item file: where it lives, its front-matter fields, its label."""

    name: str
    folder: str
    keys: tuple[str, ...]
    label: str  # the front-matter field that names an item


CHAPTER = Kind("chapter", "chapters", CHAPTER_KEYS, "title")
CHARACTER = Kind("character", "characters", CHARACTER_KEYS, "name")
LOCATION = Kind("location", "locations", LOCATION_KEYS, "name")
KINDS = {k.name: k for k in (CHAPTER, CHARACTER, LOCATION)}


def novel_file(fields: dict[str, Any], synopsis: str = "") -> str:
    meta = {k: fields.get(k) for k in NOVEL_KEYS if fields.get(k) is not None}
    return render_document(meta, synopsis, NOVEL_KEYS)


def chapter_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Keep the generator-facing fields in step: weight = number, draft unless published."""
    if "number" in meta:
        meta["weight"] = meta["number"]
    if "status" in meta:
        meta["draft"] = meta["status"] != "published"
    return meta


async def create_novel(
    db: Database, library: Library, *, organization_id: str, author: Author, owner_id: str,
    fields: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The repository (first commit: novel.md) and then the registry row pointing at it."""
    novel_id = new_id()
    path = library.path(novel_id)
    text = novel_file({**fields, "status": fields.get("status") or "draft"})

    def make() -> tuple[str, str, list[history.RevisionEntry]]:
        repo = NovelRepository.create(
            path, files={NOVEL_FILE: text}, author=author, message="Start the novel"
        )
        found = repo.read_text(NOVEL_FILE)
        head = repo.head()
        return head, found.blob, history.describe_revisions(repo, None, head)

    head, blob, revisions = await library.call(make)

    def register(conn: apsw.Connection) -> dict[str, Any]:
        novels.create_novel(
            conn, organization_id=organization_id, owner_id=owner_id, fields=fields,
            novel_id=novel_id,
        )  # fmt: skip
        content_index.index_files(conn, novel_id, {NOVEL_FILE: (text, blob)})
        content_index.record_head(conn, novel_id, head, wrote=False)
        history.record_revisions(conn, novel_id, revisions)
        return novels.get_novel(conn, novel_id)

    try:
        return await db.write(register)
    except BaseException:
        await library.remove(novel_id)
        raise


async def remove_repository(library: Library, novel_id: str) -> None:
    await library.remove(novel_id)


async def update_novel_file(
    db: Database, library: Library, novel_id: str, edit: Edit, fields: dict[str, Any]
) -> dict[str, Any] | None:
    """Rewrite novel.md's front matter with `fields` (a commit), or None if nothing changed."""
    if not fields:
        return None

    def read(repo: NovelRepository) -> str:
        found = repo.read_text(NOVEL_FILE)
        return found.text if found else ""

    async with library.writing(novel_id):
        current = await library.run(novel_id, read)
        document = parse_document(current)
        meta = {**document.meta, **fields}
        meta = {k: v for k, v in meta.items() if v is not None}
        text = render_document(meta, document.body, NOVEL_KEYS)
        if text == current:
            return None
        return await commit_while_writing(
            db, library, novel_id, {NOVEL_FILE: text}, edit, use_head=True
        )


async def read_item(
    library: Library, novel_id: str, path: str, rev: str | None = None
) -> tuple[dict[str, Any], str, str]:
    """Front matter, body and blob of an item file."""

    def read(repo: NovelRepository):  # noqa: ANN202
        return repo.read_text(path, rev)

    found = await library.run(novel_id, read)
    if found is None:
        raise NotFound("no such file in this novel")
    document = parse_document(found.text)
    return document.meta, document.body, found.blob


async def create_item(
    db: Database, library: Library, novel_id: str, kind: Kind, edit: Edit,
    fields: dict[str, Any], content: str, limits: Limits,
) -> tuple[dict[str, Any], str]:  # fmt: skip
    """A new item file; answers (index row, head)."""
    item_id = new_id()

    def existing(conn: apsw.Connection) -> tuple[set[str], int]:
        rows = conn.execute(
            f"SELECT path FROM {kind.name} WHERE novel_id = ?", (novel_id,)
        ).fetchall()
        top = conn.execute(
            "SELECT coalesce(max(number), 0) AS n FROM chapter WHERE novel_id = ?", (novel_id,)
        ).fetchall()[0]["n"]
        return {r["path"] for r in rows}, top

    # The free path and the next number are chosen under the write lock: the index is
    # written under it too, so two creations cannot pick the same path.
    async with library.writing(novel_id):
        taken, top = await db.read(existing)
        meta = {"id": item_id, **{k: v for k, v in fields.items() if v is not None}}
        if kind is CHAPTER:
            meta.setdefault("number", top + 1)
            meta.setdefault("status", "draft")
            chapter_meta(meta)
        path = new_path(kind.folder, str(fields.get(kind.label) or kind.name), taken)
        text = render_document(meta, content, kind.keys)
        check_text(path, text, limits)
        answer = await commit_while_writing(
            db, library, novel_id, {path: text}, edit, use_head=True
        )
    row = await db.read_quick(content_index.find_item, novel_id, kind.name, item_id)
    return row, answer["head"]


async def update_item(
    db: Database, library: Library, novel_id: str, kind: Kind, item: dict[str, Any], edit: Edit,
    fields: dict[str, Any], content: str | None, base_blob: str | None, limits: Limits,
) -> tuple[dict[str, Any], str]:  # fmt: skip
    async with library.writing(novel_id):
        meta, body, blob = await read_item(library, novel_id, item["path"])
        if base_blob is not None and base_blob != blob:
            raise Conflict(
                "the file changed since you read it; read it again and reapply your edit",
                code="stale_blob",
                details={"blob": blob},
            )
        meta = {**meta, **fields}
        meta = {k: v for k, v in meta.items() if v is not None}
        if kind is CHAPTER:
            chapter_meta(meta)
        text = render_document(meta, body if content is None else content, kind.keys)
        check_text(item["path"], text, limits)
        answer = await commit_while_writing(
            db, library, novel_id, {item["path"]: text}, edit, use_head=True
        )
    row = await db.read_quick(content_index.find_item, novel_id, kind.name, item["id"])
    if row is None:  # the front-matter id changed hands; find the row by path
        row = await db.read(
            lambda conn: conn.execute(
                f"SELECT * FROM {kind.name} WHERE novel_id = ? AND path = ?",
                (novel_id, item["path"]),
            ).fetchall()[0]
        )
    return row, answer["head"]


async def delete_item(
    db: Database, library: Library, novel_id: str, item: dict[str, Any], edit: Edit
) -> str:
    answer = await commit_changes(db, library, novel_id, {item["path"]: None}, edit, use_head=True)
    return answer["head"]


async def reorder_chapters(
    db: Database, library: Library, novel_id: str, order: list[str], edit: Edit
) -> str:
    """Renumber chapters 1..n in the given order, in one commit."""

    def texts(repo: NovelRepository, by_id: dict[str, dict[str, Any]]) -> dict[str, str]:
        changes = {}
        for number, chapter_id in enumerate(order, start=1):
            path = by_id[chapter_id]["path"]
            document = parse_document(repo.read_text(path).text)
            meta = chapter_meta({**document.meta, "number": number})
            text = render_document(meta, document.body, CHAPTER_KEYS)
            changes[path] = text
        return changes

    async with library.writing(novel_id):
        rows = await db.read(content_index.chapters, novel_id)
        by_id = {r["id"]: r for r in rows}
        if sorted(order) != sorted(by_id) or len(set(order)) != len(order):
            raise Invalid(
                "order must list every chapter id exactly once", code="invalid_order",
                details={"chapters": sorted(by_id)},
            )  # fmt: skip
        changes = await library.run(novel_id, texts, by_id)
        answer = await commit_while_writing(db, library, novel_id, changes, edit, use_head=True)
    return answer["head"]
