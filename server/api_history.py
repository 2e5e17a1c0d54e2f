"""History: revisions newest first (per file, across renames), diffs between any two
revisions, restoring a file as it was, and writing statistics."""

from __future__ import annotations

import json

import apsw

from server import history_models as hm
from server.api_sync import limits
from server.endpoints import Call, Endpoint, RawJSON
from server.pagination import decode_cursor, encode_cursor
from server.state import EVENTS, LIBRARY
from server.writing import edit_for, novel_for
from storage import history
from storage.access import Level, authorize_novel
from storage.errors import Invalid, NotFound
from storage.history import HistoryPosition
from storage.layout import check_path
from storage.repository import NovelRepository
from sync.changes import check_text
from sync.engine import commit_changes
from sync.models import SyncAnswer


def _position(cursor: str | None, path: str | None) -> HistoryPosition | None:
    """The position a history cursor names; it must have been given for the same filter."""
    position = decode_cursor(cursor)
    if position is None:
        return None
    if (
        not isinstance(position, dict)
        or not isinstance(position.get("before"), int)
        or isinstance(position.get("before"), bool)
        or position.get("filter") != path
        or not isinstance(position.get("path"), str | None)
    ):
        raise Invalid("the cursor is not one this server gave out for this query",
                      code="invalid_cursor")  # fmt: skip
    return HistoryPosition(position["before"], position["path"])


def list_history(conn: apsw.Connection, call: Call) -> RawJSON:
    """One read: the caller, the access check and the page, which SQLite writes as JSON."""
    novel = authorize_novel(conn, call.principal, call.params["novel_id"], Level.READ)
    query: hm.HistoryQuery = call.query
    if query.path is not None:
        check_path(query.path)
    after = _position(query.cursor, query.path)
    items, following = history.history_page_json(
        conn, novel["id"], path=query.path, limit=query.limit, after=after
    )
    cursor = None
    if following is not None:
        cursor = encode_cursor(
            {"before": following.seq, "path": following.path, "filter": query.path}
        )
    return RawJSON(f'{{"items":{items},"next_cursor":{json.dumps(cursor)}}}')


async def diff(call: Call) -> dict:
    novel = await novel_for(call, Level.READ)
    query: hm.DiffQuery = call.query
    if query.path is not None:
        check_path(query.path)

    def work(repo: NovelRepository) -> dict:
        to = repo.resolve(query.to) if query.to else repo.head()
        if query.since is not None:
            since = repo.resolve(query.since)
        else:
            parents = repo.revision(to).parents
            since = parents[0] if parents else None
        files = history.diff_revisions(
            repo, since, to, path=query.path, granularity=query.granularity
        )
        return {"from": since, "to": to, "files": files}

    return await call.request.app[LIBRARY].run(novel["id"], work)


async def restore(call: Call) -> dict:
    """A commit on the head whose file equals `path` at `rev` (also a file deleted since)."""
    novel = await novel_for(call, Level.WRITE)
    body: hm.RestoreBody = call.body
    check_path(body.path)
    library = call.request.app[LIBRARY]

    def read(repo: NovelRepository) -> tuple[str, str]:
        rev = repo.resolve(body.rev)
        found = repo.read_text(body.path, rev)
        if found is None:
            raise NotFound(
                "the file did not exist at that revision", code="file_missing_at_revision",
                details={"path": body.path[:300], "rev": rev},
            )  # fmt: skip
        return rev, found.text

    rev, text = await library.run(novel["id"], read)
    check_text(body.path, text, limits(call))  # a file may have grown past today's limit
    edit = await edit_for(
        call, body.message or f"Restore {body.path} as of {rev[:10]}",
        device_id=body.device_id, op_id=body.op_id,
    )  # fmt: skip
    answer = await commit_changes(
        call.db, library, novel["id"], {body.path: text}, edit, use_head=True
    )
    call.request.app[EVENTS].poke()
    return answer


def stats(conn: apsw.Connection, call: Call) -> dict:
    novel = authorize_novel(conn, call.principal, call.params["novel_id"], Level.READ)
    return history.writing_stats(conn, novel["id"])


NOVEL = "/api/v1/novels/{novel_id}"
ENDPOINTS = [
    Endpoint("GET", NOVEL + "/history", list_history, "Revisions newest first; `path` follows"
             " one file back across renames", "history", query=hm.HistoryQuery,
             response=hm.HistoryPage, auth="optional", errors=(404,)),
    Endpoint("GET", NOVEL + "/diff", diff, "What changed between two revisions (default: `to`"
             " and its first parent), word by word or line by line", "history",
             query=hm.DiffQuery, response=hm.DiffAnswer, auth="optional", errors=(404,)),
    Endpoint("POST", NOVEL + "/restore", restore, "Bring one file back as it was at `rev` (a"
             " commit on the head); answers like a sync", "history", body=hm.RestoreBody,
             response=SyncAnswer, errors=(403, 404)),
    Endpoint("GET", NOVEL + "/stats", stats, "Words now, per UTC day and per chapter", "history",
             response=hm.StatsAnswer, auth="optional", errors=(404,),
             quick=False),  # it sums a whole history: not on the event loop
]  # fmt: skip
