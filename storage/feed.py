"""The change feed: every head movement in order, read by cursor (`novel_change.seq`)."""

from __future__ import annotations

import apsw

from storage.db import Row, query, query_one


def latest_seq(conn: apsw.Connection) -> int:
    return query_one(conn, "SELECT coalesce(max(seq), 0) AS n FROM novel_change")["n"]


def changes_for_member(
    conn: apsw.Connection, user_id: str, after: int, limit: int
) -> tuple[list[Row], int]:
    """The newest head of each novel the user can read that moved after `after`.

    Returns the items and the cursor to use next (the last sequence number looked at).
    """
    window = query(
        conn,
        "SELECT seq, novel_id, head, changed_at FROM novel_change"
        " WHERE seq > ? ORDER BY seq LIMIT ?",
        (after, limit),
    )
    if not window:
        return [], after
    upto = window[-1]["seq"]
    rows = query(
        conn,
        "SELECT c.novel_id, c.head, c.changed_at AS updated_at FROM novel_change c"
        " JOIN novel n ON n.id = c.novel_id"
        " WHERE c.seq IN (SELECT max(seq) FROM novel_change WHERE seq > ? AND seq <= ?"
        "                 GROUP BY novel_id)"
        " AND (n.visibility = 'public' OR n.organization_id IN"
        "      (SELECT organization_id FROM member WHERE user_id = ?))"
        " ORDER BY c.seq",
        (after, upto, user_id),
    )
    return rows, upto


def changes_after(conn: apsw.Connection, after: int, limit: int = 1000) -> list[Row]:
    return query(
        conn,
        "SELECT c.seq, c.novel_id, c.head, n.organization_id, n.visibility FROM novel_change c"
        " JOIN novel n ON n.id = c.novel_id WHERE c.seq > ? ORDER BY c.seq LIMIT ?",
        (after, limit),
    )


def readable_organizations(conn: apsw.Connection, user_id: str) -> set[str]:
    return {
        r["organization_id"]
        for r in query(conn, "SELECT organization_id FROM member WHERE user_id = ?", (user_id,))
    }
