"""The content index: SQLite rows derived from a novel's Git files (chapter list, word
counts, the novel's head and counters). Rebuildable from Git at any time."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import apsw

from storage.db import Row, query, query_one
from storage.documents import parse_document
from storage.errors import Invalid
from storage.ids import now
from storage.layout import kind_of
from storage.words import recount, word_count

CHAPTER_STATUSES = ("draft", "in_progress", "completed", "published")
NOVEL_STATUSES = ("draft", "in_progress", "completed", "published", "archived")
_TABLE = {"chapter": "chapter", "character": "character", "location": "location"}


def derived_id(path: str) -> str:
    """A stable id for a file whose front matter has none (or a duplicate one)."""
    return "f" + hashlib.sha1(path.encode("utf-8")).hexdigest()[:20]


def read_document(text: str) -> tuple[dict[str, Any], str]:
    """Front matter and body; a file whose front matter does not parse indexes as body only."""
    try:
        document = parse_document(text)
    except Invalid:
        return {}, text
    return document.meta, document.body


_BODY_WORDS: OrderedDict[str, int] = OrderedDict()
_BODY_WORDS_LOCK = threading.Lock()
_BODY_WORDS_KEPT = 4096


def body_words(
    text: str,
    blob: str | None = None,
    *,
    body: str | None = None,
    before: tuple[str, int] | None = None,
) -> int:
    """Words of a file's body (front matter excluded), with `word_count`.

    Remembered by blob id when one is given (a blob's content never changes): the
    index, the revision index and the statistics count each version of a chapter once.
    `before`, the (body, words) of an earlier version, lets only the lines that differ
    from it be counted (`recount`).
    """
    if blob is not None:
        with _BODY_WORDS_LOCK:
            if blob in _BODY_WORDS:
                _BODY_WORDS.move_to_end(blob)
                return _BODY_WORDS[blob]
    if body is None:
        body = read_document(text)[1]
    count = word_count(body) if before is None else recount(*before, body)
    if blob is not None:
        with _BODY_WORDS_LOCK:
            _BODY_WORDS[blob] = count
            if len(_BODY_WORDS) > _BODY_WORDS_KEPT:
                _BODY_WORDS.popitem(last=False)
    return count


def _text(value: Any, limit: int = 300) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)[:limit]


def _number(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def describe(path: str, text: str, blob: str) -> dict[str, Any]:
    """The index row of one file, from its front matter and body."""
    meta, body = read_document(text)
    kind = kind_of(path)
    row: dict[str, Any] = {
        "path": path,
        "id": _text(meta.get("id"), 64) or derived_id(path),
        "word_count": body_words(text, blob, body=body),
        "blob": blob,
    }
    fallback = path.rsplit("/", 1)[-1].removesuffix(".md")
    if kind == "chapter":
        status = meta.get("status")
        row.update(
            title=_text(meta.get("title")) or fallback,
            number=_number(meta.get("number", meta.get("weight"))),
            status=status if status in CHAPTER_STATUSES else "draft",
        )
    elif kind == "character":
        row.update(name=_text(meta.get("name")) or fallback, role=_text(meta.get("role")))
    elif kind == "location":
        row.update(
            name=_text(meta.get("name")) or fallback,
            type=_text(meta.get("type")),
            parent_id=_text(meta.get("parent"), 64),
        )
    elif kind == "novel":
        row["meta"] = meta
    return row


def _upsert(
    conn: apsw.Connection, novel_id: str, table: str, row: dict[str, Any], moment: str
) -> None:
    clash = query_one(
        conn,
        f"SELECT path FROM {table} WHERE novel_id = ? AND id = ? AND path != ?",
        (novel_id, row["id"], row["path"]),
    )
    if clash:
        row = {**row, "id": derived_id(row["path"])}
    conn.execute(f"DELETE FROM {table} WHERE novel_id = ? AND path = ?", (novel_id, row["path"]))
    columns = [c for c in row if c != "meta"]
    conn.execute(
        f"INSERT INTO {table} (novel_id, {', '.join(columns)}, updated_at)"
        f" VALUES (?, {', '.join('?' for _ in columns)}, ?)",
        (novel_id, *(row[c] for c in columns), moment),
    )


def _novel_fields(meta: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if _text(meta.get("title")):
        fields["title"] = _text(meta.get("title"))
    # novel.md is the truth: a field it does not hold is empty in the registry too.
    for key in ("description", "genre"):
        fields[key] = _text(meta.get(key), 10_000)
    if meta.get("status") in NOVEL_STATUSES:
        fields["status"] = meta["status"]
    value = meta.get("target_word_count")
    fields["target_word_count"] = _number(value) if value is not None else None
    return fields


def describe_files(
    files: Mapping[str, tuple[str, str] | None],
) -> dict[str, dict[str, Any] | None]:
    """The index rows of the given paths ((text, blob), or None if deleted), for
    `index_rows`. Counting words is the costly part: done outside the write transaction."""
    return {
        path: None if content is None else describe(path, *content)
        for path, content in files.items()
        if kind_of(path) is not None
    }


def index_rows(
    conn: apsw.Connection, novel_id: str, rows: Mapping[str, dict[str, Any] | None]
) -> None:
    """Bring the rows of the given paths in line with Git (rows from `describe_files`)."""
    moment = now()
    for path, row in rows.items():
        kind = kind_of(path)
        if kind is None:
            continue
        if kind == "novel":
            if row is not None:
                fields = _novel_fields(row["meta"])
                if fields:
                    assignments = ", ".join(f"{k} = ?" for k in fields)
                    conn.execute(
                        f"UPDATE novel SET {assignments} WHERE id = ?", (*fields.values(), novel_id)
                    )
            continue
        table = _TABLE[kind]
        if row is None:
            conn.execute(f"DELETE FROM {table} WHERE novel_id = ? AND path = ?", (novel_id, path))
        else:
            _upsert(conn, novel_id, table, row, moment)


def index_files(
    conn: apsw.Connection, novel_id: str, files: Mapping[str, tuple[str, str] | None]
) -> None:
    """Bring the rows of the given paths in line with Git: (text, blob), or None if deleted."""
    index_rows(conn, novel_id, describe_files(files))


def record_head(conn: apsw.Connection, novel_id: str, head: str, *, wrote: bool = True) -> None:
    """The novel's head and counters after a commit, and a change-feed entry."""
    moment = now()
    total = query_one(
        conn,
        "SELECT coalesce(sum(word_count), 0) AS n FROM chapter WHERE novel_id = ?",
        (novel_id,),
    )["n"]
    conn.execute(
        "UPDATE novel SET head = ?, current_word_count = ?, updated_at = ?,"
        " last_written_at = CASE WHEN ? THEN ? ELSE last_written_at END WHERE id = ?",
        (head, total, moment, int(wrote), moment, novel_id),
    )
    conn.execute(
        "INSERT INTO novel_change (novel_id, head, changed_at) VALUES (?, ?, ?)",
        (novel_id, head, moment),
    )


def clear_index(conn: apsw.Connection, novel_id: str) -> None:
    for table in _TABLE.values():
        conn.execute(f"DELETE FROM {table} WHERE novel_id = ?", (novel_id,))


def chapters(conn: apsw.Connection, novel_id: str) -> list[Row]:
    return query(
        conn,
        "SELECT id, path, title, number, status, word_count, blob, updated_at FROM chapter"
        " WHERE novel_id = ? ORDER BY number, path",
        (novel_id,),
    )


def items(conn: apsw.Connection, novel_id: str, kind: str) -> list[Row]:
    table = _TABLE[kind]
    extra = {"character": "name, role", "location": "name, type, parent_id"}[kind]
    return query(
        conn,
        f"SELECT id, path, {extra}, word_count, blob, updated_at FROM {table}"
        " WHERE novel_id = ? ORDER BY name, path",
        (novel_id,),
    )


def find_item(conn: apsw.Connection, novel_id: str, kind: str, item_id: str) -> Row | None:
    return query_one(
        conn, f"SELECT * FROM {_TABLE[kind]} WHERE novel_id = ? AND id = ?", (novel_id, item_id)
    )


def indexed_head(conn: apsw.Connection, novel_id: str) -> str | None:
    """The head SQLite's rows describe (Git's may be ahead after a crash or a full disk)."""
    row = query_one(conn, "SELECT head FROM novel WHERE id = ?", (novel_id,))
    return row["head"] if row else None


def novel_heads(conn: apsw.Connection) -> list[Row]:
    return query(conn, "SELECT id, head FROM novel ORDER BY id")
