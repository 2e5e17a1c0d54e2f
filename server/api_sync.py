"""The sync endpoint, pulls, conflicts, the change feed and the event stream."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from server.endpoints import Call, Endpoint
from server.state import EVENTS, LIBRARY, SETTINGS
from server.writing import edit_for, novel_for
from storage import feed
from storage.access import Level
from storage.errors import Invalid
from sync import engine
from sync import models as sm
from sync.changes import Limits, check_changes, check_text
from sync.engine import commit_changes


def limits(call: Call) -> Limits:
    """The file-size and change-count limits of this server, for every route that writes."""
    settings = call.request.app[SETTINGS]
    return Limits(max_file_bytes=settings.max_file_bytes, max_changes=settings.max_changes)


async def sync(call: Call) -> dict:
    body: sm.SyncBody = call.body
    novel = await novel_for(call, Level.WRITE if body.changes else Level.READ)
    changes = check_changes([(c.path, c.content) for c in body.changes], limits(call))
    edit = await edit_for(
        call, body.message or f"Sync from {body.device_id}", device_id=body.device_id,
        op_id=body.op_id,
    )  # fmt: skip
    answer = await commit_changes(
        call.db, call.request.app[LIBRARY], novel["id"], changes, edit, base=body.base
    )
    call.request.app[EVENTS].poke()
    return answer


async def pull(call: Call) -> dict:
    novel = await novel_for(call, Level.READ)
    return await engine.pull(call.request.app[LIBRARY], novel["id"], call.query.since)


async def list_conflicts(call: Call) -> dict:
    novel = await novel_for(call, Level.READ)
    return {"items": await call.db.read(engine.open_conflicts, novel["id"]), "next_cursor": None}


async def resolve_conflict(call: Call) -> dict:
    """Write the writer's chosen text for the conflicted file; every open conflict of that
    file is resolved by it."""
    novel = await novel_for(call, Level.WRITE)
    conflict = await call.db.read(engine.get_open_conflict, novel["id"], call.params["conflict_id"])
    path, text = conflict["path"], call.body.content
    if text is not None:
        check_text(path, text, limits(call))
    elif path == "novel.md":
        raise Invalid("novel.md cannot be deleted", code="invalid_path")
    edit = await edit_for(call, f"Resolve conflict in {path}")
    answer = await commit_changes(
        call.db, call.request.app[LIBRARY], novel["id"], {path: text}, edit, use_head=True
    )
    same_file = [
        c["id"] for c in await call.db.read(engine.open_conflicts, novel["id"]) if c["path"] == path
    ]
    await call.db.write(engine.mark_resolved, novel["id"], same_file, answer["head"], call.user_id)
    call.request.app[EVENTS].poke()
    return answer


async def sync_feed(call: Call) -> dict:
    query: sm.FeedQuery = call.query
    after = 0
    if query.cursor is not None:
        if not query.cursor.isdigit() or len(query.cursor) > 18:
            raise Invalid("the cursor is not one this server gave out", code="invalid_cursor")
        after = int(query.cursor)
    items, upto = await call.db.read(feed.changes_for_member, call.user_id, after, query.limit)
    return {"cursor": str(upto), "items": items}


async def events(call: Call) -> web.StreamResponse:
    """`event: head` with `{novel_id, head}` whenever a readable novel moves."""
    request = call.request
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                 "X-Accel-Buffering": "no"},
    )  # fmt: skip
    await response.prepare(request)
    await response.write(b": connected\n\n")
    async with request.app[EVENTS].listen(call.user_id) as listener:
        try:
            while True:
                try:
                    event = await asyncio.wait_for(listener.queue.get(), timeout=15)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if event is None:
                    break
                data = json.dumps(event, separators=(",", ":"))
                await response.write(f"event: head\ndata: {data}\n\n".encode())
        except ConnectionResetError:
            pass  # the listener left; found out by the next write
    return response


NOVEL = "/api/v1/novels/{novel_id}"
ENDPOINTS = [
    Endpoint("POST", NOVEL + "/sync", sync, "Send a device's changes made on `base`; get the"
             " new head and every file that differs between `base` and it", "sync",
             body=sm.SyncBody, response=sm.SyncAnswer, writes=False, errors=(403, 404, 409)),
    Endpoint("GET", NOVEL + "/sync", pull, "Pull: the head and every file changed since `since`",
             "sync", query=sm.PullQuery, response=sm.PullAnswer, auth="optional",
             errors=(404, 409)),
    Endpoint("GET", NOVEL + "/conflicts", list_conflicts, "Open conflicts of a novel", "sync",
             response=sm.ConflictList, errors=(404,)),
    Endpoint("POST", NOVEL + "/conflicts/{conflict_id}/resolve", resolve_conflict,
             "Resolve a conflict with the writer's text (a commit)", "sync",
             body=sm.ResolveBody, response=sm.SyncAnswer, errors=(403, 404)),
    Endpoint("GET", "/api/v1/sync/feed", sync_feed, "Novels that moved after `cursor`", "sync",
             query=sm.FeedQuery, response=sm.Feed),
    Endpoint("GET", "/api/v1/events", events, "Server-Sent Events: `event: head` whenever a"
             " readable novel moves", "sync", content_type="text/event-stream"),
]  # fmt: skip
