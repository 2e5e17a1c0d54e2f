"""The novel registry: one row per novel (organization, owner, visibility, counters, head)."""

from __future__ import annotations

import heapq
import itertools
from operator import itemgetter
from typing import Any

import apsw

from storage.db import Row, query_one, tuples
from storage.errors import NotFound
from storage.ids import new_id, now

EDITABLE = ("title", "description", "genre", "status", "visibility", "target_word_count")

_SELECT = (
    "SELECT n.id, n.title, n.description, n.genre, n.status, n.visibility, n.target_word_count,"
    " n.current_word_count, n.head, n.last_written_at, n.owner_id, n.organization_id,"
    " o.slug AS organization_slug, n.created_at, n.updated_at"
    " FROM novel n JOIN organization o ON o.id = n.organization_id"
)


def create_novel(
    conn: apsw.Connection,
    *,
    organization_id: str,
    owner_id: str,
    fields: dict[str, Any],
    novel_id: str | None = None,
) -> Row:
    novel_id, moment = novel_id or new_id(), now()
    values = {k: fields.get(k) for k in EDITABLE}
    values["status"] = values["status"] or "draft"
    values["visibility"] = values["visibility"] or "private"
    conn.execute(
        "INSERT INTO novel (id, organization_id, owner_id, title, description, genre, status,"
        " visibility, target_word_count, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (novel_id, organization_id, owner_id, *(values[k] for k in EDITABLE), moment, moment),
    )
    return get_novel(conn, novel_id)


def get_novel(conn: apsw.Connection, novel_id: str) -> Row:
    row = query_one(conn, _SELECT + " WHERE n.id = ?", (novel_id,))
    if row is None:
        raise NotFound("novel not found")
    return row


# Up to this many organizations, a caller's novels are read one organization at a time,
# each already in order in the (organization_id, id) index, and merged; beyond it, one
# query gathers and sorts them all (a sort of whole rows: a third of a listing's SQL).
MERGE_UP_TO = 8
_PAGE = " ORDER BY n.id DESC LIMIT ?"


def list_novels(
    conn: apsw.Connection,
    user_id: str | None,
    *,
    organization_id: str | None,
    limit: int,
    before: str | None,
) -> list[tuple[str, str]]:
    """Newest first, as `(id, the novel as JSON)`: the `item` SQLite keeps for each novel
    (migration 0006), sent as it is. `before` is the last id of the previous page.

    Without an organization: every novel of the caller's organizations. With one: its
    novels the caller can read (all of them for members, the public ones for everybody
    else).
    """
    after, bound = ("", ()) if before is None else (" AND n.id < ?", (before,))
    if organization_id is not None:
        sql = (
            "SELECT n.id, n.item FROM novel n WHERE n.organization_id = ?"
            " AND (n.visibility = 'public' OR EXISTS (SELECT 1 FROM member m"
            " WHERE m.organization_id = n.organization_id AND m.user_id = ?))" + after + _PAGE
        )
        return tuples(conn, sql, (organization_id, user_id, *bound, limit))
    organizations = tuples(conn, "SELECT organization_id FROM member WHERE user_id = ?", (user_id,))
    if len(organizations) > MERGE_UP_TO:
        sql = (
            "SELECT n.id, n.item FROM novel n WHERE n.organization_id IN"
            " (SELECT organization_id FROM member WHERE user_id = ?)" + after + _PAGE
        )
        return tuples(conn, sql, (user_id, *bound, limit))
    sql = "SELECT n.id, n.item FROM novel n WHERE n.organization_id = ?" + after + _PAGE
    pages = [tuples(conn, sql, (org_id, *bound, limit)) for (org_id,) in organizations]
    if len(pages) == 1:
        return pages[0]
    merged = heapq.merge(*pages, key=itemgetter(0), reverse=True)
    return list(itertools.islice(merged, limit))


def update_novel(conn: apsw.Connection, novel_id: str, fields: dict[str, Any]) -> Row:
    changes = {k: v for k, v in fields.items() if k in EDITABLE}
    if changes:
        assignments = ", ".join(f"{k} = ?" for k in changes)
        conn.execute(
            f"UPDATE novel SET {assignments}, updated_at = ? WHERE id = ?",
            (*changes.values(), now(), novel_id),
        )
    return get_novel(conn, novel_id)


def delete_novel(conn: apsw.Connection, novel_id: str) -> None:
    conn.execute("DELETE FROM novel WHERE id = ?", (novel_id,))
