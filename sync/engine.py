"""The sync protocol and every other commit: build the device's commit on its base,
fast-forward or merge it into the head, move the head by compare-and-swap, then record
the index, conflicts and the idempotency row in SQLite — in that order, so a head never
points at anything that is not durable and an answered request is always in history."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import apsw

from storage import content_index, history
from storage.db import Database, query, query_one
from storage.errors import Conflict, NotFound
from storage.ids import new_id, now
from storage.library import Library
from storage.repository import Author, NovelRepository
from sync.merge import ConflictHunk, merge_documents


@dataclass(frozen=True)
class Edit:
    """Who makes a commit, from which device, and why."""

    user_id: str
    author: Author
    message: str
    device_id: str | None = None
    op_id: str | None = None


@dataclass
class Reconciled:
    """What the Git side did; everything SQLite must learn about it."""

    status: str
    head: str
    device_commit: str | None = None
    conflicts: list[tuple[str, ConflictHunk]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    indexed: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    revisions: list[history.RevisionEntry] = field(default_factory=list)
    # The head the index rows are described from: SQLite's head, or Git's old head.
    indexed_from: str | None = None
    # Why the head moves, for the reflog: "fast-forward" or "merge".
    reason: str = "sync"


def _trailers(edit: Edit) -> dict[str, str]:
    trailers = {"User-Id": edit.user_id}
    if edit.device_id:
        trailers["Device-Id"] = edit.device_id
    if edit.op_id:
        trailers["Op-Id"] = edit.op_id
    return trailers


def _text(repo: NovelRepository, path: str, rev: str | None) -> str | None:
    if rev is None:
        return None
    found = repo.read_text(path, rev)
    return found.text if found else None


def files_between(repo: NovelRepository, old: str | None, new: str) -> list[dict[str, Any]]:
    """Every file that differs between two commits, as the device needs it at `new`."""
    answer = []
    for path in repo.changed_paths(old, new):
        found = repo.read_text(path, new)
        answer.append(
            {
                "path": path,
                "content": found.text if found else None,
                "blob": found.blob if found else None,
            }
        )
    return answer


def reconcile(
    repo: NovelRepository,
    head: str,
    base: str | None,
    changes: Mapping[str, str | None],
    edit: Edit,
    *,
    indexed: str | None = None,
) -> Reconciled:
    """Git work of one sync on `head` (run on a Git thread, under the novel's write lock):
    its commits written and flushed, the answer and the index rows read. The head is not
    moved: the caller moves it to `Reconciled.head` (`_commit_all`, once for a lot).

    `head` is the novel's head, or the head an earlier sync of the same lot left, not
    published yet. A novel whose repository cannot be read fails here with its head
    where it was. `indexed` is the head SQLite holds; when an earlier commit reached Git
    but not SQLite (a full disk between the two), the rows describe everything since it,
    so nothing stays unindexed.
    """
    if base is not None and not (repo.has_commit(base) and repo.is_ancestor(base, head)):
        raise Conflict(
            "the base commit is not in this novel's history; pull with GET .../sync first",
            code="unknown_base",
            details={"base": base},
        )
    effective = {p: c for p, c in changes.items() if _text(repo, p, base) != c}
    result = Reconciled(status="noop", head=head)
    if effective:
        # Everything read first: the commits are then written without a read between
        # them, so both go to disk together, as one pack, at the next read.
        merged = None if base == head else _merge(repo, base, head, effective, result)
        device_commit = repo.write_commit(
            parent=base, changes=effective, author=edit.author, message=edit.message,
            trailers=_trailers(edit),
        )  # fmt: skip
        result.device_commit = device_commit
        if base == head:
            result.status, result.head, result.reason = (
                "fast_forward",
                device_commit,
                "fast-forward",
            )
        else:
            result.reason = "merge"
            if merged is not None:
                device = edit.device_id or "a device"
                result.head = repo.write_commit(
                    parent=head,
                    extra_parents=[device_commit],
                    changes=merged,
                    author=edit.author,
                    message=f"Merge edits from {device}"
                    + (" (conflicts kept the server's text)" if result.conflicts else ""),
                    trailers=_trailers(edit),
                )
    result.files = files_between(repo, base, result.head)
    behind = indexed is not None and indexed != head and repo.has_commit(indexed)
    # SQLite behind Git (its head an ancestor of Git's): catch up on the way.
    since = indexed if behind and repo.is_ancestor(indexed, head) else head
    result.indexed_from = since
    if result.head != since:
        # On a fast-forward from the indexed head, the same files moved as the device's.
        moved_files = result.files if base == since else files_between(repo, since, result.head)
        moved = {
            entry["path"]: None if entry["content"] is None else (entry["content"], entry["blob"])
            for entry in moved_files
        }
        # Revisions first: they count each new version's words from the version before
        # it (only the paragraphs that changed), and the chapter rows reuse those counts.
        # Started from the indexed head: the new commits are the ones written just now.
        written = None
        if since == head and result.device_commit is not None:
            written = [result.device_commit]
            if result.head != result.device_commit:
                written.append(result.head)  # the merge commit
        result.revisions = history.describe_revisions(repo, since, result.head, written=written)
        result.indexed = content_index.describe_files(moved)
    return result


def _merge(
    repo: NovelRepository,
    base: str | None,
    head: str,
    effective: Mapping[str, str | None],
    result: Reconciled,
) -> dict[str, str | None] | None:
    """The changes of the merge commit of the device's edits into the head, None when the
    head already holds the device's texts (no merge commit); sets the status and the
    conflicts in `result`."""
    server_changed = set(repo.changed_paths(base, head))
    merged: dict[str, str | None] = {}
    for path, theirs in effective.items():
        ours = _text(repo, path, head)
        if path in server_changed:
            outcome = merge_documents(path, _text(repo, path, base), ours, theirs)
            text = outcome.text
            result.conflicts.extend((path, hunk) for hunk in outcome.conflicts)
        else:
            text = theirs
        if text != ours:
            merged[path] = text
    result.status = "conflicted" if result.conflicts else "merged"
    # Skip the merge commit only when the head holds the device's texts byte for byte.
    # A merge can also absorb an edit the head already made in a larger one: the
    # device's own version then survives only through its commit, so merge it in.
    held = all(_text(repo, path, head) == text for path, text in effective.items())
    if not merged and not result.conflicts and held:
        return None
    return merged


# The version prefix of `request_hash`'s digests; rows stored before it hold a bare hex
# digest of `_legacy_request_hash`.
_HASH_VERSION = "v2:"


def request_hash(base: str | None, changes: Mapping[str, str | None], message: str | None) -> str:
    """What a replay must match: the base, the changes and the message, each part framed
    by its length, so no two different requests give one digest. Hashed as UTF-8 bytes
    rather than as JSON: escaping a 50 KB chapter into JSON cost ~5% of the server's
    GIL-held time under load, and the digest is taken on every sync."""
    digest = hashlib.sha256()

    def part(value: str | None) -> None:
        if value is None:
            digest.update(b"-")
            return
        data = value.encode("utf-8")
        digest.update(b"%d:" % len(data))
        digest.update(data)

    part(base)
    part(message)
    digest.update(b"%d;" % len(changes))
    for path, content in sorted(changes.items()):
        part(path)
        part(content)
    return _HASH_VERSION + digest.hexdigest()


def _legacy_request_hash(
    base: str | None, changes: Mapping[str, str | None], message: str | None
) -> str:
    """The digest rows kept before `_HASH_VERSION`: sha256 of a canonical JSON."""
    canonical = json.dumps(
        {"base": base, "changes": sorted(changes.items()), "message": message},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _record(
    conn: apsw.Connection,
    novel_id: str,
    edit: Edit,
    done: Reconciled,
    answer: dict[str, Any],
    digest: str | None,
) -> None:
    moment = now()
    if done.head != done.indexed_from:
        content_index.index_rows(conn, novel_id, done.indexed)
        content_index.record_head(conn, novel_id, done.head)
        history.record_revisions(conn, novel_id, done.revisions)
    for item, (path, hunk) in zip(answer["conflicts"], done.conflicts, strict=True):
        conn.execute(
            "INSERT INTO conflict (id, novel_id, path, field, base, ours, theirs, device_id,"
            " user_id, device_commit, merge_commit, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                item["id"], novel_id, path, hunk.field, hunk.base, hunk.ours, hunk.theirs,
                edit.device_id or "", edit.user_id, done.device_commit, done.head, moment,
            ),
        )  # fmt: skip
    if edit.device_id and edit.op_id and digest:
        conn.execute(
            "INSERT INTO device_operation (novel_id, device_id, op_id, request_hash, response,"
            " user_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                novel_id,
                edit.device_id,
                edit.op_id,
                digest,
                json.dumps(_stored(answer), separators=(",", ":")),
                edit.user_id,
                moment,
            ),
        )


def _answer(done: Reconciled) -> dict[str, Any]:
    return {
        "head": done.head,
        "status": done.status,
        "files": done.files,
        "conflicts": [
            {
                "id": new_id(),
                "path": path,
                "field": hunk.field,
                "base": hunk.base,
                "ours": hunk.ours,
                "theirs": hunk.theirs,
            }
            for path, hunk in done.conflicts
        ],
    }


def find_operation(conn: apsw.Connection, novel_id: str, device_id: str, op_id: str) -> dict | None:
    return query_one(
        conn,
        "SELECT request_hash, response FROM device_operation"
        " WHERE novel_id = ? AND device_id = ? AND op_id = ?",
        (novel_id, device_id, op_id),
    )


def _stored(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer as kept for a replay: each file by its blob id, not its text. A chapter
    is tens of KB and Git keeps every version anyway; a row stays a few hundred bytes."""
    files = [{"path": f["path"], "blob": f["blob"]} for f in answer["files"]]
    return {**answer, "files": files}


def _replay(row: dict, digest: str, legacy: Callable[[], str]) -> dict[str, Any]:
    """The kept answer, if the row was kept for this very request: compared with
    `digest`, or, for a row kept before `_HASH_VERSION`, with `legacy()`."""
    stored = row["request_hash"]
    if stored != (digest if stored.startswith(_HASH_VERSION) else legacy()):
        raise _op_id_reused()
    return json.loads(row["response"])


def _op_id_reused() -> Conflict:
    return Conflict("this op_id was already used for a different request", code="op_id_reused")


def _with_texts(repo: NovelRepository, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored files given their texts back from their blobs (rows written before answers
    were stored by blob still hold the text)."""
    filled = []
    for f in files:
        if "content" not in f:
            text = None if f["blob"] is None else repo.blob_text(f["blob"])
            f = {"path": f["path"], "content": text, "blob": f["blob"]}
        filled.append(f)
    return filled


@dataclass(frozen=True)
class _Request:
    """One caller's commit, waiting for its turn under the novel's write lock."""

    db: Database
    library: Library
    novel_id: str
    changes: Mapping[str, str | None]
    edit: Edit
    base: str | None
    use_head: bool
    digest: str | None

    @property
    def replayable(self) -> bool:
        return bool(self.digest and self.edit.device_id)

    def legacy_hash(self) -> str:
        return _legacy_request_hash(self.base, self.changes, self.edit.message)


async def commit_changes(
    db: Database,
    library: Library,
    novel_id: str,
    changes: Mapping[str, str | None],
    edit: Edit,
    *,
    base: str | None = None,
    use_head: bool = False,
) -> dict[str, Any]:
    """Apply `changes` made on `base` (or on the head when `use_head`) and answer like sync.

    A replayed (device_id, op_id) returns the first answer and writes nothing. All of it
    runs on one Git thread under the novel's write lock: the SQLite read, the Git work and
    the SQLite write, with no hop back to the event loop between them while the novel's
    other writers wait. Those that queued meanwhile are taken in the same turn
    (`Library.run_writing_together`, `_commit_all`).
    """
    # Hashed before the lock, not while the novel's other devices wait for it.
    digest = request_hash(base, changes, edit.message) if edit.op_id else None
    request = _Request(db, library, novel_id, changes, edit, base, use_head, digest)
    return await library.run_writing_together(novel_id, _commit_all, request)


async def commit_while_writing(
    db: Database,
    library: Library,
    novel_id: str,
    changes: Mapping[str, str | None],
    edit: Edit,
    *,
    base: str | None = None,
    use_head: bool = False,
) -> dict[str, Any]:
    """`commit_changes` for a caller already inside `library.writing(novel_id)`.

    For edits computed from what the novel holds now (a free path, a file's current
    front matter): reading and committing under one hold of the lock, no other writer
    can slip in between and be overwritten.
    """
    digest = request_hash(base, changes, edit.message) if edit.op_id else None
    request = _Request(db, library, novel_id, changes, edit, base, use_head, digest)
    return await library.run(novel_id, _commit_one, request)


def _commit_one(repo: NovelRepository, request: _Request) -> dict[str, Any]:
    (outcome,) = _commit_all(repo, [request])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _commit_all(
    repo: NovelRepository, requests: list[_Request]
) -> list[dict[str, Any] | Exception]:
    """`commit_changes` for a lot of requests, in order, on their Git thread, the novel's
    write lock held: each reconciled on the head the one before it left, then the head
    moved once to the last of them, then SQLite told of them all in one transaction.

    Outcomes, in order: each request's answer, or the error of that request alone. A
    request refused (an unknown base, an op_id reused) leaves the others as they were.
    If moving the head or the SQLite write fails, every request whose answer named a
    commit of this lot gets that error: none of them was acknowledged.
    """
    # One novel and one library by the lot's making (`run_writing_together`'s line).
    first = requests[0]
    db, library, novel_id = first.db, first.library, first.novel_id
    if any(r.db is not db for r in requests):
        raise ValueError("a lot of commits is for one database")

    def before(conn: apsw.Connection) -> tuple[list[dict | None], str | None]:
        """In one read: the first answer to each operation, if any, and SQLite's head."""
        rows = [
            find_operation(conn, novel_id, r.edit.device_id, r.edit.op_id) if r.replayable else None
            for r in requests
        ]
        return rows, content_index.indexed_head(conn, novel_id)

    rows, indexed = db.read_sync(before)
    published = head = repo.head()
    outcomes: list[dict[str, Any] | Exception] = []
    done_here: list[tuple[_Request, Reconciled, dict[str, Any]]] = []
    # Answers of this lot that rest on its commits (replays of them too), by position.
    resting: list[int] = []
    # (device_id, op_id) answered in this lot: a retry queued behind its first try.
    answered: dict[tuple[str | None, str | None], tuple[str | None, dict[str, Any]]] = {}
    reasons: list[str] = []  # for the reflog: each move the lot makes, in order
    for position, (request, row) in enumerate(zip(requests, rows, strict=True)):
        operation = (request.edit.device_id, request.edit.op_id)
        try:
            if request.replayable and operation in answered:
                digest, first_answer = answered[operation]
                if digest != request.digest:
                    raise _op_id_reused()
                outcomes.append(copy.deepcopy(first_answer))
                resting.append(position)
                continue
            if row is not None:
                answer = _replay(row, request.digest, request.legacy_hash)
                answer["files"] = _with_texts(repo, answer["files"])
                outcomes.append(answer)
                continue
            base = head if request.use_head else request.base
            done = reconcile(repo, head, base, request.changes, request.edit, indexed=indexed)
        except Exception as exc:  # this request's own failure; the lot goes on
            outcomes.append(exc)
            continue
        if done.device_commit is not None:
            library.note_write(novel_id)  # its commits went to disk as one pack
        answer = _answer(done)
        done_here.append((request, done, answer))
        outcomes.append(answer)
        resting.append(position)
        if request.replayable:
            answered[operation] = (request.digest, answer)
        if done.head != head:
            reasons.append(done.reason)
        head = indexed = done.head
    try:
        if head != published:
            repo.advance_head(head, published, reason=", ".join(reasons))
        if done_here:
            db.write_sync(_record_all, novel_id, done_here)
    except Exception as exc:
        for position in resting:
            outcomes[position] = exc
    return outcomes


def _record_all(
    conn: apsw.Connection,
    novel_id: str,
    done_here: list[tuple[_Request, Reconciled, dict[str, Any]]],
) -> None:
    for request, done, answer in done_here:
        _record(conn, novel_id, request.edit, done, answer, request.digest)


async def pull(library: Library, novel_id: str, since: str | None) -> dict[str, Any]:
    def work(repo: NovelRepository) -> dict[str, Any]:
        head = repo.head()
        if since is not None and not (repo.has_commit(since) and repo.is_ancestor(since, head)):
            raise Conflict(
                "the commit is not in this novel's history", code="unknown_base",
                details={"since": since},
            )  # fmt: skip
        return {"head": head, "files": files_between(repo, since, head)}

    return await library.run(novel_id, work)


def open_conflicts(conn: apsw.Connection, novel_id: str) -> list[dict[str, Any]]:
    return query(
        conn,
        "SELECT id, path, field, base, ours, theirs, device_id, device_commit, merge_commit,"
        " created_at FROM conflict WHERE novel_id = ? AND resolved_at IS NULL"
        " ORDER BY created_at, id",
        (novel_id,),
    )


def get_open_conflict(conn: apsw.Connection, novel_id: str, conflict_id: str) -> dict[str, Any]:
    row = query_one(
        conn,
        "SELECT * FROM conflict WHERE novel_id = ? AND id = ? AND resolved_at IS NULL",
        (novel_id, conflict_id),
    )
    if row is None:
        raise NotFound("no open conflict with this id")
    return row


def mark_resolved(
    conn: apsw.Connection, novel_id: str, conflict_ids: list[str], commit: str, user_id: str
) -> None:
    moment = now()
    for conflict_id in conflict_ids:
        conn.execute(
            "UPDATE conflict SET resolved_at = ?, resolved_commit = ?, resolved_by = ?"
            " WHERE novel_id = ? AND id = ? AND resolved_at IS NULL",
            (moment, commit, user_id, novel_id, conflict_id),
        )
