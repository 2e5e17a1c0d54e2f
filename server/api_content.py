"""Chapters, characters and locations: each edit a commit; plus raw files at any revision."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server import content_models as cm
from server.api_sync import limits
from server.endpoints import Call, Endpoint, json_response
from server.state import LIBRARY
from server.writing import edit_for, novel_for
from storage import content_index
from storage.access import Level
from storage.errors import Invalid, NotFound
from storage.layout import check_path
from sync import content
from sync.content import CHAPTER, CHARACTER, LOCATION, Kind

_FULL_FIELDS = {
    "chapter": ("summary",),
    "character": ("appearance", "personality", "backstory", "motivation", "image"),
    "location": ("image",),
}


def _not_modified_or(call: Call, blob: str, payload: Any) -> web.Response:
    etag = f'"{blob}"'
    if call.request.headers.get("If-None-Match") in (etag, blob, "*"):
        return web.Response(status=304, headers={"ETag": etag})
    return json_response(payload, headers={"ETag": etag, "Cache-Control": "no-cache"})


async def _item(call: Call, kind: Kind, novel_id: str) -> dict:
    row = await call.db.read_quick(
        content_index.find_item, novel_id, kind.name, call.params["item_id"]
    )
    if row is None:
        raise NotFound(f"{kind.name} not found")
    return row


def _fields(body: Any) -> dict[str, Any]:
    return body.model_dump(exclude={"content", "base_blob"}, exclude_unset=True)


async def _check_parent(call: Call, novel_id: str, fields: dict[str, Any], own_id: str) -> None:
    """A location's `parent` names another location of the same novel, or nothing."""
    parent = fields.get("parent")
    if parent is None:
        return
    row = await call.db.read_quick(content_index.find_item, novel_id, LOCATION.name, parent)
    if row is None or parent == own_id:
        raise Invalid(
            "parent must be the id of another location of this novel",
            code="unknown_parent",
            details={"parent": parent[:64]},
        )


def item_endpoints(
    kind: Kind, body_model, patch_model, answer_model, full_model, list_model
) -> list[Endpoint]:  # noqa: ANN001, E501
    label = kind.name

    async def create(call: Call) -> dict:
        novel = await novel_for(call, Level.WRITE)
        name = getattr(call.body, kind.label)
        fields = _fields(call.body)
        await _check_parent(call, novel["id"], fields, own_id="")
        edit = await edit_for(call, f"Add {label} “{name}”")
        row, head = await content.create_item(
            call.db, call.request.app[LIBRARY], novel["id"], kind, edit,
            fields, call.body.content or "", limits(call),
        )  # fmt: skip
        return {label: row, "head": head}

    async def list_items(call: Call) -> dict:
        novel = await novel_for(call, Level.READ)
        if kind is CHAPTER:
            rows = await call.db.read(content_index.chapters, novel["id"])
        else:
            rows = await call.db.read(content_index.items, novel["id"], kind.name)
        return {"items": rows, "next_cursor": None}

    async def get(call: Call) -> web.Response:
        novel = await novel_for(call, Level.READ)
        row = await _item(call, kind, novel["id"])
        meta, body, blob = await content.read_item(
            call.request.app[LIBRARY], novel["id"], row["path"]
        )
        extra = {f: meta.get(f) if isinstance(meta.get(f), (str, type(None))) else str(meta.get(f))
                 for f in _FULL_FIELDS[label]}  # fmt: skip
        payload = full_model.model_validate({**row, **extra, "blob": blob, "content": body})
        return _not_modified_or(call, blob, payload)

    async def patch(call: Call) -> dict:
        novel = await novel_for(call, Level.WRITE)
        row = await _item(call, kind, novel["id"])
        fields = _fields(call.body)
        await _check_parent(call, novel["id"], fields, own_id=row["id"])
        edit = await edit_for(call, f"Edit {label} {row['path']}")
        updated, head = await content.update_item(
            call.db, call.request.app[LIBRARY], novel["id"], kind, row, edit,
            fields, call.body.content, call.body.base_blob, limits(call),
        )  # fmt: skip
        return {label: updated, "head": head}

    async def delete(call: Call) -> None:
        novel = await novel_for(call, Level.WRITE)
        row = await _item(call, kind, novel["id"])
        edit = await edit_for(call, f"Delete {label} {row['path']}")
        await content.delete_item(call.db, call.request.app[LIBRARY], novel["id"], row, edit)

    for handler, verb in ((create, "create"), (list_items, "list"), (get, "get"),
                          (patch, "update"), (delete, "delete")):  # fmt: skip
        handler.__name__ = f"{verb}_{label}"
    base = f"/api/v1/novels/{{novel_id}}/{kind.folder}"
    one = base + "/{item_id}"
    title = label.capitalize()
    return [
        Endpoint("POST", base, create, f"Add a {label} (a commit)", kind.folder, body=body_model,
                 response=answer_model, status=201, errors=(403, 404)),
        Endpoint("GET", base, list_items, f"{title}s of a novel", kind.folder,
                 response=list_model, auth="optional", errors=(404,)),
        Endpoint("GET", one, get, f"A {label} with its text; ETag is the blob id", kind.folder,
                 response=full_model, auth="optional", errors=(404,),
                 extra={"responses": {304: "Not modified (If-None-Match)"}}),
        Endpoint("PATCH", one, patch, f"Edit a {label} (a commit); base_blob guards against"
                 " overwriting a newer version", kind.folder, body=patch_model,
                 response=answer_model, errors=(403, 404, 409)),
        Endpoint("DELETE", one, delete, f"Delete a {label} (a commit)", kind.folder, status=204,
                 errors=(403, 404)),
    ]  # fmt: skip


async def reorder_chapters(call: Call) -> dict:
    novel = await novel_for(call, Level.WRITE)
    edit = await edit_for(call, "Reorder chapters")
    head = await content.reorder_chapters(
        call.db, call.request.app[LIBRARY], novel["id"], call.body.order, edit
    )
    return {"head": head}


async def raw_file(call: Call) -> web.Response:
    novel = await novel_for(call, Level.READ)
    path = check_path(call.params["path"])
    rev = call.query.rev

    def read(repo):  # noqa: ANN001, ANN202
        if rev is not None and not repo.has_commit(rev):
            raise NotFound("no such revision in this novel", code="unknown_revision")
        return repo.read_text(path, rev)

    found = await call.request.app[LIBRARY].run(novel["id"], read)
    if found is None:
        raise NotFound("no such file at this revision")
    etag = f'"{found.blob}"'
    if call.request.headers.get("If-None-Match") in (etag, found.blob, "*"):
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(
        text=found.text, content_type="text/markdown", charset="utf-8",
        headers={"ETag": etag,
                 "Cache-Control": "no-cache" if rev is None else "max-age=31536000, immutable"},
    )  # fmt: skip


ENDPOINTS = [
    *item_endpoints(CHAPTER, cm.ChapterBody, cm.ChapterPatch, cm.ChapterAnswer, cm.ChapterFull,
                    cm.ChapterList),
    Endpoint("POST", "/api/v1/novels/{novel_id}/chapters/reorder", reorder_chapters,
             "Renumber every chapter in the given order, in one commit", "chapters",
             body=cm.ReorderBody, response=cm.HeadAnswer, errors=(403, 404)),
    *item_endpoints(CHARACTER, cm.CharacterBody, cm.CharacterPatch, cm.CharacterAnswer,
                    cm.CharacterFull, cm.CharacterList),
    *item_endpoints(LOCATION, cm.LocationBody, cm.LocationPatch, cm.LocationAnswer,
                    cm.LocationFull, cm.LocationList),
    Endpoint("GET", "/api/v1/novels/{novel_id}/files/{path:.+}", raw_file,
             "The raw Markdown file at `rev` (default: head); ETag is the blob id", "novels",
             query=cm.FileQuery, auth="optional", content_type="text/markdown", errors=(404,),
             extra={"responses": {304: "Not modified (If-None-Match)"}}),
]  # fmt: skip
