"""The revision index: a row per commit in a novel's history, with the files it touched
and the words it added and removed, written in the same SQLite transaction that moves
the novel's head there. History pages, a chapter's history (across renames) and the
writing statistics read it and never walk Git. Rebuildable from Git at any time."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import apsw

from storage.content_index import body_words, read_document
from storage.db import Database, query, query_one, tuples
from storage.diff import diff_texts, word_changes
from storage.errors import Invalid
from storage.layout import kind_of
from storage.repository import FileChange, NovelRepository, Revision


@dataclass(frozen=True)
class PathChange:
    """One file of a revision: how it changed and the words of its body before and after."""

    change: str
    path: str
    old_path: str | None
    words_added: int
    words_removed: int
    words_before: int
    words_after: int

    @property
    def chapter_delta(self) -> int:
        """How much this change moved the novel's total (the words of its chapters)."""
        before = self.words_before if kind_of(self.old_path or self.path) == "chapter" else 0
        after = self.words_after if kind_of(self.path) == "chapter" else 0
        return after - before


@dataclass(frozen=True)
class RevisionEntry:
    """A commit as the index records it; `mainline` is true on the head's first-parent
    line (the head's own past), false for a device's commit merged beside it."""

    rev: str
    parents: tuple[str, ...]
    author_id: str | None
    author_name: str
    author_email: str
    device_id: str | None
    message: str
    time: str
    mainline: bool
    changes: tuple[PathChange, ...]


# -- from Git (on a Git thread) ------------------------------------------------------


def describe_revisions(
    repo: NovelRepository,
    old_head: str | None,
    new_head: str,
    *,
    written: Sequence[str] | None = None,
) -> list[RevisionEntry]:
    """Every commit that reaching `new_head` from `old_head` adds, oldest first.

    `written`: those commits (parents first, `new_head` last), when the caller has just
    written them on `old_head` and so knows them without walking the history. The walk
    costs more than it looks: libgit2 stops a walk that hides a commit only after commits
    older than the hidden side's, by the second, so it reads every commit made in the
    same second as the old head (at 100 syncs a second, ~200 of them: 1.2 ms a sync).
    """
    if written is not None:
        if not written or written[-1] != new_head:
            raise ValueError("`written` must end with the new head")
        commits = [repo.revision(rev) for rev in written]
    else:
        commits = repo.commits_between(old_head, new_head)
    parents = {commit.id: commit.parents for commit in commits}
    mainline: set[str] = set()
    rev: str | None = new_head
    while rev in parents:
        mainline.add(rev)
        rev = parents[rev][0] if parents[rev] else None
    return [_entry(repo, commit, commit.id in mainline) for commit in commits]


def _entry(repo: NovelRepository, commit: Revision, mainline: bool) -> RevisionEntry:
    return RevisionEntry(
        rev=commit.id,
        parents=commit.parents,
        author_id=commit.trailers.get("User-Id"),
        author_name=commit.author_name,
        author_email=commit.author_email,
        device_id=commit.trailers.get("Device-Id"),
        message=commit.message,
        time=commit.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        mainline=mainline,
        changes=tuple(_path_change(repo, change) for change in repo.file_changes(commit.id)),
    )


def _prose(
    repo: NovelRepository, path: str, blob: str | None, before: tuple[str, int] | None = None
) -> tuple[str, int] | None:
    """(body, words) of a Markdown file's version; None where it does not exist or is not
    text. `before`: the (body, words) of the version it replaced, to count only changes."""
    if blob is None or not path.endswith(".md"):
        return None
    text = repo.blob_text(blob)
    if text is None:
        return None
    body = read_document(text)[1]
    return body, body_words(text, blob, body=body, before=before)


def _path_change(repo: NovelRepository, change: FileChange) -> PathChange:
    old = _prose(repo, change.old_path or change.path, change.old_blob)
    new = _prose(repo, change.path, change.new_blob, before=old)
    if change.old_blob == change.new_blob:
        added = removed = 0
    else:
        added, removed = word_changes(old[0] if old else "", new[0] if new else "")
    return PathChange(
        change=change.change,
        path=change.path,
        old_path=change.old_path,
        words_added=added,
        words_removed=removed,
        words_before=old[1] if old else 0,
        words_after=new[1] if new else 0,
    )


# -- into SQLite (inside the transaction that records the head) -----------------------


def record_revisions(
    conn: apsw.Connection, novel_id: str, entries: Iterable[RevisionEntry]
) -> None:
    """Append `entries` (oldest first, from `describe_revisions`) to the novel's index."""
    last = query_one(
        conn,
        "SELECT total_words FROM revision WHERE novel_id = ? AND mainline = 1"
        " ORDER BY seq DESC LIMIT 1",
        (novel_id,),
    )
    total = last["total_words"] if last else 0
    for entry in entries:
        delta = sum(change.chapter_delta for change in entry.changes) if entry.mainline else 0
        conn.execute(
            "INSERT INTO revision (novel_id, rev, parents, author_id, author_name, author_email,"
            " device_id, message, time, mainline, words_added, words_removed, total_words,"
            " item) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (novel_id, rev) DO NOTHING",
            (
                novel_id, entry.rev, json.dumps(list(entry.parents)), entry.author_id,
                entry.author_name, entry.author_email, entry.device_id, entry.message,
                entry.time, int(entry.mainline), sum(c.words_added for c in entry.changes),
                sum(c.words_removed for c in entry.changes),
                total + delta if entry.mainline else None, revision_item(entry),
            ),
        )  # fmt: skip
        if conn.changes() == 0:
            continue  # already indexed
        total += delta
        seq = conn.last_insert_rowid()
        conn.executemany(
            "INSERT INTO revision_path (novel_id, seq, path, old_path, change, words_added,"
            " words_removed, words_before, words_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    novel_id, seq, c.path, c.old_path, c.change, c.words_added, c.words_removed,
                    c.words_before, c.words_after,
                )
                for c in entry.changes
            ],
        )  # fmt: skip


def revision_item(entry: RevisionEntry) -> str:
    """The revision as `GET /history` shows it (a `RevisionItem`), as JSON: stored with the
    revision, which never changes, so pages are read as text."""
    changes = sorted(entry.changes, key=lambda c: c.path)
    return json.dumps(
        {
            "rev": entry.rev,
            "parents": list(entry.parents),
            "author": {"id": entry.author_id, "name": entry.author_name},
            "device_id": entry.device_id,
            "message": entry.message,
            "time": entry.time,
            "paths": [c.path for c in changes],
            "words_added": sum(c.words_added for c in changes),
            "words_removed": sum(c.words_removed for c in changes),
            "changes": [
                {"path": c.path, "old_path": c.old_path, "change": c.change,
                 "words_added": c.words_added, "words_removed": c.words_removed}
                for c in changes
            ],
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )  # fmt: skip


def clear_history(conn: apsw.Connection, novel_id: str) -> None:
    conn.execute("DELETE FROM revision_path WHERE novel_id = ?", (novel_id,))
    conn.execute("DELETE FROM revision WHERE novel_id = ?", (novel_id,))


def last_mainline(conn: apsw.Connection, novel_id: str) -> str | None:
    row = query_one(
        conn,
        "SELECT rev FROM revision WHERE novel_id = ? AND mainline = 1 ORDER BY seq DESC LIMIT 1",
        (novel_id,),
    )
    return row["rev"] if row else None


@dataclass(frozen=True)
class HistoryPlan:
    """What the revision index lacks, read from Git: the revisions from `known` (the
    newest indexed first-parent revision; None: rebuild the novel's rows) to `head`."""

    known: str | None
    head: str
    entries: list[RevisionEntry]


def plan_history(
    db: Database, repo: NovelRepository, novel_id: str, *, full: bool = False
) -> HistoryPlan:
    """Read from Git what the novel's revision index lacks (all of it when `full`).

    The long part of a rebuild, and safe without the novel's lock: `apply_history`,
    under the lock, adds whatever the head gained meanwhile.
    """
    head = repo.head()
    known = None if full else db.read_sync(last_mainline, novel_id)
    if known is not None and (not repo.has_commit(known) or not repo.is_ancestor(known, head)):
        known = None
    entries = [] if known == head else describe_revisions(repo, known, head)
    return HistoryPlan(known, head, entries)


def apply_history(db: Database, repo: NovelRepository, novel_id: str, plan: HistoryPlan) -> int:
    """Write a plan, with the revisions the head gained since it was read; returns how
    many revisions it added. Call under the novel's lock, so no commit lands between
    reading the head and writing the rows."""
    head = repo.head()
    entries = plan.entries
    if head != plan.head:
        if not repo.is_ancestor(plan.head, head):
            return apply_history(db, repo, novel_id, plan_history(db, repo, novel_id, full=True))
        entries = entries + describe_revisions(repo, plan.head, head)
    if not entries:
        return 0

    def write(conn: apsw.Connection) -> None:
        if query_one(conn, "SELECT 1 FROM novel WHERE id = ?", (novel_id,)) is None:
            return
        if plan.known is None:
            clear_history(conn, novel_id)
        record_revisions(conn, novel_id, entries)

    db.write_sync(write)
    return len(entries)


# -- reading -------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPosition:
    """Where a page of history stops: before revision `seq`, following `path` (which a
    rename can make differ from the path asked for)."""

    seq: int
    path: str | None


def history_page(
    conn: apsw.Connection,
    novel_id: str,
    *,
    path: str | None,
    limit: int,
    after: HistoryPosition | None,
) -> tuple[list[dict[str, Any]], HistoryPosition | None]:
    """`history_page_json`, its items decoded."""
    items, following = history_page_json(conn, novel_id, path=path, limit=limit, after=after)
    return json.loads(items), following


def history_page_json(
    conn: apsw.Connection,
    novel_id: str,
    *,
    path: str | None,
    limit: int,
    after: HistoryPosition | None,
) -> tuple[str, HistoryPosition | None]:
    """A page of revisions, newest first, as a JSON array, and the position of the next
    page (None: no more).

    With `path`, the revisions that touched that file, and before a rename the ones that
    touched its earlier name, as `git log --follow` does. Revisions are numbered in the
    order they were recorded, so a page boundary holds still while new commits arrive.
    Each revision's JSON is stored with it (`revision_item`): a page is one query, most
    often, and the items are joined as text.
    """
    following, before = (after.path, after.seq) if after else (path, None)
    items: list[str] = []
    seqs: list[int] = []
    positions: list[tuple[int, str | None]] = []  # made a HistoryPosition only if needed
    while len(seqs) <= limit:
        wanted = limit + 1 - len(seqs)
        batch = _revisions_before(conn, novel_id, following, before, wanted)
        renamed = False
        for seq, old_path, item in batch:
            if seqs and seqs[-1] == seq:
                continue  # the file was renamed away and another took its name at once
            seqs.append(seq)
            items.append(item)
            before = seq
            if following is not None and old_path is not None:
                following, renamed = old_path, True
            positions.append((seq, following))
            if renamed:
                break
        if not renamed and len(batch) < wanted:
            break
    next_page = HistoryPosition(*positions[limit - 1]) if len(seqs) > limit else None
    return "[" + ",".join(items[:limit]) + "]", next_page


def _revisions_before(
    conn: apsw.Connection, novel_id: str, path: str | None, before: int | None, limit: int
) -> list[tuple[int, str | None, str]]:
    """Up to `limit` revisions below `before`, newest first, as (seq, the file's earlier
    name where this revision renamed it here, the stored item); with `path`, those that
    touched it."""
    below = before if before is not None else 1 << 62
    if path is None:
        return tuples(
            conn,
            "SELECT seq, NULL, item FROM revision WHERE novel_id = ? AND seq < ?"
            " ORDER BY seq DESC LIMIT ?",
            (novel_id, below, limit),
        )
    # Both ends of a rename touched the file: its new name (the rename row's `path`) and
    # its old one (`old_path`). Each side reads a short run from its own index.
    return tuples(
        conn,
        "SELECT touched.seq, touched.followed_from, r.item FROM ("
        " SELECT * FROM (SELECT seq, old_path AS followed_from FROM revision_path"
        "  WHERE novel_id = ? AND path = ? AND seq < ? ORDER BY seq DESC LIMIT ?)"
        " UNION ALL"
        " SELECT * FROM (SELECT seq, NULL AS followed_from FROM revision_path"
        "  WHERE novel_id = ? AND old_path = ? AND seq < ? ORDER BY seq DESC LIMIT ?)"
        ") AS touched JOIN revision r ON r.seq = touched.seq"
        " ORDER BY touched.seq DESC LIMIT ?",
        (novel_id, path, below, limit, novel_id, path, below, limit, limit),
    )


def writing_stats(conn: apsw.Connection, novel_id: str) -> dict[str, Any]:
    """Words now; for each UTC day the novel changed, the words at its end and the net
    words written that day; and the same per chapter."""
    days = []
    previous = 0
    for row in query(
        conn,
        "SELECT day, total_words, added, removed FROM ("
        " SELECT substr(time, 1, 10) AS day, total_words,"
        "  sum(words_added) OVER w AS added, sum(words_removed) OVER w AS removed,"
        "  row_number() OVER (PARTITION BY substr(time, 1, 10) ORDER BY seq DESC) AS newest"
        " FROM revision WHERE novel_id = ? AND mainline = 1"
        " WINDOW w AS (PARTITION BY substr(time, 1, 10)))"
        " WHERE newest = 1 ORDER BY day",
        (novel_id,),
    ):
        days.append(
            {
                "date": row["day"],
                "words": row["total_words"] - previous,
                "total": row["total_words"],
                "added": row["added"],
                "removed": row["removed"],
            }
        )
        previous = row["total_words"]
    per_chapter: dict[str, list[dict[str, Any]]] = {}
    for row in query(
        conn,
        "SELECT p.path, substr(r.time, 1, 10) AS day,"
        " sum(p.words_after - p.words_before) AS words FROM revision_path p"
        " JOIN revision r ON r.seq = p.seq"
        " WHERE p.novel_id = ? AND r.mainline = 1 AND p.path LIKE 'chapters/%'"
        " GROUP BY p.path, day ORDER BY p.path, day",
        (novel_id,),
    ):
        per_chapter.setdefault(row["path"], []).append({"date": row["day"], "words": row["words"]})
    chapters = [
        {**row, "days": per_chapter.get(row["path"], [])}
        for row in query(
            conn,
            "SELECT id, path, title, number, word_count AS words FROM chapter"
            " WHERE novel_id = ? ORDER BY number, path",
            (novel_id,),
        )
    ]
    total = query_one(conn, "SELECT current_word_count FROM novel WHERE id = ?", (novel_id,))
    return {
        "total_words": total["current_word_count"] if total else 0,
        "days": days,
        "chapters": chapters,
    }


# -- diffs (on a Git thread) ---------------------------------------------------------


def diff_revisions(
    repo: NovelRepository,
    old: str | None,
    new: str,
    *,
    path: str | None = None,
    granularity: str | None = None,
) -> list[dict[str, Any]]:
    """Each file that differs between two commits (`old` None: the empty tree), with the
    runs of text kept, deleted and inserted; words for Markdown unless `granularity`."""
    files = []
    for change in repo.changes_between(old, new):
        if path is not None and path not in (change.path, change.old_path):
            continue
        old_text = repo.blob_text(change.old_blob) if change.old_blob else ""
        new_text = repo.blob_text(change.new_blob) if change.new_blob else ""
        entry: dict[str, Any] = {
            "path": change.path,
            "old_path": change.old_path,
            "change": change.change,
            "binary": old_text is None or new_text is None,
            "ops": [],
        }
        if not entry["binary"]:
            mode = granularity or ("word" if change.path.endswith(".md") else "line")
            entry["ops"] = [
                {"op": op.op, "text": op.text} for op in diff_texts(old_text, new_text, mode)
            ]
        files.append(entry)
    return files


def check_granularity(value: str | None) -> str | None:
    if value not in (None, "word", "line"):
        raise Invalid("granularity is 'word' or 'line'", code="invalid_granularity")
    return value
