"""The novel registry: create, list, read, update and delete novels."""

from __future__ import annotations

import apsw

from server import models as m
from server.endpoints import Call, Endpoint, RawJSON
from server.pagination import decode_text_cursor, page_json
from server.state import LIBRARY
from server.writing import authorized_write, edit_for, novel_for
from storage import novels
from storage.access import ROLE_LEVEL, Level, authorize_novel, authorize_org, member_role
from storage.accounts import personal_organization_id
from storage.errors import NotFound
from sync import content


async def create_novel(call: Call) -> dict:
    """The repository first (its first commit holds novel.md), then the registry row."""
    body: m.NovelBody = call.body
    principal = call.principal

    def organization(conn: apsw.Connection) -> str:
        if body.org is not None:
            return authorize_org(conn, principal, body.org, Level.WRITE)[0]["id"]
        active = principal.active_organization_id
        if active is not None:
            # A session may still name an organization the writer has since left.
            role = member_role(conn, principal.user_id, active)
            if ROLE_LEVEL.get(role, Level.NONE) >= Level.WRITE:
                return active
        return _personal_org(conn, principal.user_id)

    org_id = await call.db.read(organization)
    edit = await edit_for(call, "Start the novel")
    return await content.create_novel(
        call.db, call.request.app[LIBRARY], organization_id=org_id, author=edit.author,
        owner_id=principal.user_id, fields=body.model_dump(exclude={"org"}),
    )  # fmt: skip


def _personal_org(conn: apsw.Connection, user_id: str) -> str:
    org_id = personal_organization_id(conn, user_id)
    if org_id is None:
        raise NotFound("you have no personal organization; name one with `org`")
    return org_id


def list_novels(conn: apsw.Connection, call: Call) -> RawJSON:
    """One read: the caller, the organization and the page, which SQLite writes as JSON."""
    query: m.NovelListQuery = call.query
    before = decode_text_cursor(query.cursor)
    user_id = call.principal.user_id if call.principal else None
    org_id = None
    if query.org is not None:
        org = conn.execute("SELECT id FROM organization WHERE slug = ?", (query.org,)).fetchall()
        if not org:
            raise NotFound("organization not found")
        org_id = org[0]["id"]
    rows = novels.list_novels(
        conn, user_id, organization_id=org_id, limit=query.limit + 1, before=before
    )
    return RawJSON(page_json(rows, query.limit))


def get_novel(conn: apsw.Connection, call: Call) -> dict:
    authorize_novel(conn, call.principal, call.params["novel_id"], Level.READ)
    return novels.get_novel(conn, call.params["novel_id"])


async def update_novel(call: Call) -> dict:
    """Visibility lives in SQLite; title, description and the rest in novel.md (a commit)."""
    body: m.NovelPatch = call.body
    changes = body.model_dump(exclude_unset=True)
    novel = await novel_for(call, Level.WRITE)
    if "visibility" in changes and changes["visibility"] != novel["visibility"]:
        await authorized_write(
            call,
            Level.ADMIN,
            lambda conn, n: novels.update_novel(
                conn, n["id"], {"visibility": changes["visibility"]}
            ),
        )
    in_file = {k: v for k, v in changes.items() if k != "visibility"}
    if in_file:
        edit = await edit_for(call, "Edit the novel's details")
        await content.update_novel_file(
            call.db, call.request.app[LIBRARY], novel["id"], edit, in_file
        )
    return await call.db.read(novels.get_novel, novel["id"])


async def delete_novel(call: Call) -> None:
    """Rows first (the novel disappears at once), then the repository under its write lock."""
    library = call.request.app[LIBRARY]
    novel = await novel_for(call, Level.ADMIN)
    async with library.writing(novel["id"]):
        await authorized_write(
            call, Level.ADMIN, lambda conn, n: novels.delete_novel(conn, n["id"])
        )
    await content.remove_repository(library, novel["id"])


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
