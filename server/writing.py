"""What every writing handler needs: the novel checked for access, and the commit's author."""

from __future__ import annotations

import apsw

from server.endpoints import Call
from server.state import DB
from storage import accounts
from storage.access import Level, authorize_novel
from storage.db import Row
from storage.repository import Author
from sync.engine import Edit


async def novel_for(call: Call, need: Level) -> Row:
    """The novel named in the path, if the caller may act on it at `need`."""
    return await call.request.app[DB].read_quick(
        authorize_novel, call.principal, call.params["novel_id"], need
    )


async def edit_for(
    call: Call, message: str, *, device_id: str | None = None, op_id: str | None = None
) -> Edit:
    """A commit by the calling writer, with their name and email as Git's author."""
    user = await call.request.app[DB].read_quick(accounts.get_user, call.user_id)
    return Edit(
        user_id=user["id"],
        author=Author(user["name"], user["email"]),
        message=message,
        device_id=device_id,
        op_id=op_id,
    )


async def authorized_write(call: Call, need: Level, fn, *args) -> object:  # noqa: ANN001
    """Run `fn(conn, novel, *args)` in a write transaction after the access check."""

    def work(conn: apsw.Connection) -> object:
        novel = authorize_novel(conn, call.principal, call.params["novel_id"], need)
        return fn(conn, novel, *args)

    return await call.request.app[DB].write(work)
