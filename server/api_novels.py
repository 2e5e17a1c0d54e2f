"""The novel registry: create, list, read, update and delete novels."""

from __future__ import annotations

import apsw

from server import models as m
from server.endpoints import Call, Endpoint
from server.pagination import decode_text_cursor, page
from storage import novels
from storage.accounts import personal_organization_id
from storage.access import Level, authorize_novel, authorize_org
from storage.errors import NotFound


async def create_novel(call: Call) -> dict:
    body: m.NovelBody = call.body
    principal = call.principal

    def create(conn: apsw.Connection) -> dict:
        slug = body.org
        if slug is None:
            org_id = principal.active_organization_id or _personal_org(conn, principal.user_id)
        else:
            org_id = authorize_org(conn, principal, slug, Level.WRITE)[0]["id"]
        fields = body.model_dump(exclude={"org"})
        return novels.create_novel(
            conn, organization_id=org_id, owner_id=principal.user_id, fields=fields
        )

    return await call.db.write(create)


def _personal_org(conn: apsw.Connection, user_id: str) -> str:
    org_id = personal_organization_id(conn, user_id)
    if org_id is None:
        raise NotFound("you have no personal organization; name one with `org`")
    return org_id


async def list_novels(call: Call) -> dict:
    query: m.NovelListQuery = call.query
    before = decode_text_cursor(query.cursor)
    user_id = call.principal.user_id if call.principal else None

    def load(conn: apsw.Connection) -> list[dict]:
        org_id = None
        if query.org is not None:
            org = conn.execute("SELECT id FROM organization WHERE slug = ?", (query.org,)).fetchall()
            if not org:
                raise NotFound("organization not found")
            org_id = org[0]["id"]
        return novels.list_novels(
            conn, user_id, organization_id=org_id, limit=query.limit + 1, before=before
        )

    return page(await call.db.read(load), query.limit)


async def get_novel(call: Call) -> dict:
    def load(conn: apsw.Connection) -> dict:
        authorize_novel(conn, call.principal, call.params["novel_id"], Level.READ)
        return novels.get_novel(conn, call.params["novel_id"])

    return await call.db.read(load)


async def update_novel(call: Call) -> dict:
    body: m.NovelPatch = call.body

    def update(conn: apsw.Connection) -> dict:
        novel = authorize_novel(conn, call.principal, call.params["novel_id"], Level.WRITE)
        return novels.update_novel(conn, novel["id"], body.model_dump(exclude_unset=True))

    return await call.db.write(update)


async def delete_novel(call: Call) -> None:
    def delete(conn: apsw.Connection) -> None:
        novel = authorize_novel(conn, call.principal, call.params["novel_id"], Level.ADMIN)
        novels.delete_novel(conn, novel["id"])

    await call.db.write(delete)


NOVEL = "/api/v1/novels/{novel_id}"
ENDPOINTS = [
    Endpoint("POST", "/api/v1/novels", create_novel, "Create a novel", "novels",
             body=m.NovelBody, response=m.Novel, status=201, errors=(404, 422)),
    Endpoint("GET", "/api/v1/novels", list_novels, "Novels the caller can read, newest first",
             "novels", query=m.NovelListQuery, response=m.NovelList, auth="optional",
             errors=(404,)),
    Endpoint("GET", NOVEL, get_novel, "A novel", "novels", response=m.Novel, auth="optional",
             errors=(404,)),
    Endpoint("PATCH", NOVEL, update_novel, "Update a novel's registry fields", "novels",
             body=m.NovelPatch, response=m.Novel, errors=(404,)),
    Endpoint("DELETE", NOVEL, delete_novel, "Delete a novel, its rows and its repository",
             "novels", status=204, errors=(404,)),
]  # fmt: skip
