"""The per-novel Git content store: one bare repository per novel, branch `main`.

Owns creating and opening repositories, building commits from file texts, the
compare-and-swap of the head, the inter-process novel lock and write durability.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import logging
import os
import queue
import random
import re
import shutil
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pygit2
from pygit2.enums import DeltaStatus, FileMode, RepositoryOpenFlag, SortMode

from storage import packs
from storage.errors import (
    Conflict,
    Invalid,
    NotFound,
    RepositoryCorrupt,
    Unavailable,
    storage_full,
    storage_read_only,
    unavailable_by_filesystem,
)

BRANCH = "refs/heads/main"
LOCK_FILE = "openwrite.lock"
# Pack files being written (`_write_pack`); one left by a crash is removed by maintenance.
PACK_TEMPORARY_PREFIX = "tmp_openwrite_"

log = logging.getLogger(__name__)

# The server, not the device, writes every commit: Git's author/committer split
# records exactly that (author = the writer whose edit it is, committer = us).
COMMITTER_NAME = "OpenWrite"
COMMITTER_EMAIL = "server@openwrite.local"

# Why each setting, for repositories that are served to `git clone` and only ever
# written through our compare-and-swap:
_CONFIG: dict[str, str | bool | int] = {
    # Every head move leaves a reflog line: an audit trail of who moved `main` and
    # a recovery path should a bug ever move it wrongly.
    "core.logAllRefUpdates": True,
    # Git CLI processes (repack in maintenance.py) fsync what they commit too.
    "core.fsync": "committed,derived-metadata",
    # History is the writer's record: no push may rewrite or delete it, should a
    # push path ever be opened; smart HTTP stays read-only regardless.
    "receive.denyNonFastForwards": True,
    "receive.denyDeletes": True,
    "http.receivepack": False,
    # Maintenance is scheduled by maintenance.py with concurrency-safe options;
    # no Git command spawned for a request may start a gc of its own.
    "gc.auto": 0,
    # Identity for reflog entries and any Git CLI command that needs one.
    "user.name": COMMITTER_NAME,
    "user.email": COMMITTER_EMAIL,
}

_HEX_ID = re.compile(r"[0-9a-f]{40}")
_HEX_PREFIX = re.compile(r"[0-9a-f]{7,40}")
_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")

# libgit2 reports OS failures as text (pygit2 raises OSError/GitError without
# errno), so the cause is recognized from strerror's wording as well.
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
_READ_ONLY_TEXTS = tuple(os.strerror(e) for e in _READ_ONLY_ERRNOS)
# libgit2's words for data it cannot read: an object that does not inflate, parse or
# match its id, one a tree or commit names that is missing, a damaged ref or pack.
_DAMAGE_TEXTS = (
    "inflat", "hash mismatch", "malformed", "failed to parse", "corrupt", "truncated",
    "no match for id", "bad packfile", "invalid pack",
    # zlib's own words, which libgit2 passes on for a damaged entry of a pack
    "incorrect header check", "incorrect data check", "incorrect length check",
    "unknown compression method", "invalid window size", "invalid block type",
    "invalid stored block lengths", "invalid code lengths set", "invalid bit length repeat",
    "invalid literal/lengths set", "invalid distances set", "invalid literal/length code",
    "invalid distance code", "invalid distance too far back",
    "too many length or distance symbols",
)  # fmt: skip

T = TypeVar("T")

_durable = False
# Characters of blob texts a repository instance keeps (`NovelRepository._blob_text`).
_TEXTS_KEPT = 8 * 1024 * 1024
# First parents `is_ancestor` looks through before it asks libgit2 to walk the graph.
_FIRST_PARENT_STEPS = 32


class HeadMoved(Conflict):
    """`main` is no longer at the commit the caller built on; rebuild and retry."""

    code = "head_moved"


def _reports_damage(method: Callable[..., T]) -> Callable[..., T]:
    """A damaged repository met inside `method` becomes RepositoryCorrupt, naming the
    novel and the object, instead of a bare pygit2 error."""

    @functools.wraps(method)
    def checked(self: NovelRepository, *args: Any, **kwargs: Any) -> T:
        with _damage_reported(self.path):
            return method(self, *args, **kwargs)

    return checked


def enable_durability() -> None:
    """Make every write of this module durable (process-wide); the server calls it at start.

    With it, an acknowledged edit survives a power cut: `flush` returns once the
    objects of the commits written are on disk, `advance_head` (which flushes first)
    once the moved ref is, and a new repository is renamed into place once all of it
    is. The fsyncs are this module's own, not libgit2's (`enable_fsync_gitdir`): pygit2
    holds the GIL while libgit2 writes, so its fsyncs would stop every other thread of
    the server; `os.fsync` lets them run meanwhile.
    """
    global _durable
    pygit2.settings.enable_fsync_gitdir(False)
    _durable = True


@dataclass(frozen=True)
class Author:
    """The writer an edit belongs to; `time` defaults to now (naive means UTC)."""

    name: str
    email: str
    time: datetime | None = None

    def signature(self) -> pygit2.Signature:
        try:
            if self.time is None:
                return pygit2.Signature(self.name, self.email)
            when = self.time if self.time.tzinfo else self.time.replace(tzinfo=UTC)
            offset = when.utcoffset() or timedelta(0)
            return pygit2.Signature(
                self.name, self.email, int(when.timestamp()), int(offset.total_seconds() // 60)
            )
        except (ValueError, pygit2.GitError) as exc:
            raise Invalid(
                f"Invalid author for a commit: {exc}",
                code="invalid_author",
                details={"name": self.name, "email": self.email},
            ) from exc


@dataclass(frozen=True)
class FileText:
    path: str
    text: str
    blob: str


@dataclass(frozen=True)
class Revision:
    """One commit as history shows it; `message` excludes the trailer block."""

    id: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    time: datetime
    message: str
    trailers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileChange:
    """One file a commit changed: "added", "modified", "deleted" or "renamed" (from
    `old_path`); blobs are None on the side where the file does not exist."""

    change: str
    path: str
    old_path: str | None
    old_blob: str | None
    new_blob: str | None


_DELTA_KINDS = {
    DeltaStatus.ADDED: "added",
    DeltaStatus.MODIFIED: "modified",
    DeltaStatus.DELETED: "deleted",
    DeltaStatus.RENAMED: "renamed",
    DeltaStatus.TYPECHANGE: "modified",
}


class NovelRepository:
    """One novel's bare repository.

    pygit2 objects are not thread-safe: an instance is used from one thread at a
    time (callers open one per worker thread or hand it over, never share it).
    Writes that move the head belong inside `novel_lock(path)`.
    """

    def __init__(self, path: Path, repo: pygit2.Repository):
        self.path = path
        self._git = repo
        # Objects of commits written and not yet on disk, by raw id: written together
        # as one pack by `flush` (see `write_commit`).
        self._pending: dict[bytes, tuple[int, bytes]] = {}
        # Blob texts read or written here, by id, newest last. A merged sync meets the
        # same chapter versions again and again (the merge, the answer, the revision
        # index), and each read inflates and hashes the whole file under the GIL.
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._texts_size = 0

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def create(
        cls, path: Path, *, files: Mapping[str, str], author: Author, message: str
    ) -> NovelRepository:
        """Create the repository at `path` with a first commit of `files` on `main`.

        Built in a sibling directory and renamed into place, so a crash never
        leaves a half-made repository at `path`. Raises Conflict if it exists.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise Conflict(f"A repository already exists at {path}", code="repository_exists")
        staging = path.parent / f".{path.name}.creating-{uuid.uuid4().hex}"
        try:
            with _storage_errors(f"create the repository {path}", path.parent):
                path.parent.mkdir(parents=True, exist_ok=True)
                repo = pygit2.init_repository(str(staging), bare=True, initial_head="main")
                _add_settings(staging / "config")
                (staging / LOCK_FILE).touch()
                novel = cls(staging, repo)
                first = novel._commit_tree(None, [], files, author, message, None)
                novel.flush()
                repo.create_reference_direct(BRANCH, first, False, message="openwrite: create")
                repo.free()
                _fsync_tree(staging)
                try:
                    os.rename(staging, path)
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        raise Conflict(
                            f"A repository already exists at {path}", code="repository_exists"
                        ) from exc
                    raise
                _fsync_dir(path.parent)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> NovelRepository:
        """Open an existing repository; NotFound(repository_missing) if there is none."""
        path = Path(path)
        try:
            # NO_SEARCH: a missing novel must not resolve to a repository above it.
            repo = pygit2.Repository(str(path), RepositoryOpenFlag.NO_SEARCH)
        except (pygit2.GitError, OSError, KeyError) as exc:
            raise _missing(path) from exc
        if not repo.is_bare:
            raise _missing(path)
        return cls(path, repo)

    def settle(self) -> None:
        """End a call: write pending objects (`flush`) and forget the texts read, so an
        instance kept open for the next call reads every blob from disk again and finds
        damage done since. libgit2 keeps its parsed commits and trees, and its pack maps."""
        try:
            self.flush()
        finally:
            self._texts.clear()
            self._texts_size = 0

    def close(self) -> None:
        """Release libgit2's handles (object database, caches, pack maps) and the texts
        remembered here, now.

        pygit2's Repository is in a reference cycle with its own collections (`branches`,
        `references`, ...), so only a full pass of the cyclic garbage collector frees it,
        and in a long-running server those are rare (11 repositories of finished calls
        were waiting at one look into a soak server). The instance stays usable:
        libgit2 opens again what a later call needs. Objects of commits written and not
        flushed yet are written first.
        """
        try:
            self.settle()
        finally:
            _free(self._git)

    @staticmethod
    def remove(path: Path) -> bool:
        """Delete the repository directory; returns False if there was none.

        Renamed aside first, so a half-deleted tree never looks like a novel.
        """
        path = Path(path)
        if not path.exists():
            return False
        if not (path / "HEAD").is_file() or not (path / "objects").is_dir():
            # Never delete a directory that is not a repository: a wrong path
            # from a caller must not cost anyone their files.
            raise _missing(path)
        tomb = path.parent / f".{path.name}.removing-{uuid.uuid4().hex}"
        with _storage_errors(f"remove the repository {path}", path.parent):
            os.rename(path, tomb)
            _fsync_dir(path.parent)
            try:
                shutil.rmtree(tomb)
            except OSError:
                # A directory made read-only (by hand, by a restore tool) blocks
                # unlinking its entries; make them writable and try once more.
                for root, dirs, _files in os.walk(tomb):
                    os.chmod(root, 0o700)
                    for name in dirs:
                        os.chmod(os.path.join(root, name), 0o700)
                shutil.rmtree(tomb)
        return True

    def lock(self, timeout: float | None = None) -> AbstractContextManager[None]:
        """`novel_lock` for this repository."""
        return novel_lock(self.path, timeout=timeout)

    @property
    def _repo(self) -> pygit2.Repository:
        """libgit2's view of the repository, with every commit written here on disk first:
        any read through it sees the objects `write_commit` has only kept so far."""
        if self._pending:
            self.flush()
        return self._git

    # -- reading ---------------------------------------------------------------

    @_reports_damage
    def head(self) -> str:
        """The commit id `main` points to, read fresh from disk."""
        ref = self._repo.references.get(BRANCH)
        if ref is None:
            raise NotFound(f"The novel at {self.path} has no {BRANCH}", code="head_missing")
        return str(ref.target)

    def has_commit(self, rev: str) -> bool:
        """True if `rev` is a full commit id present here; never raises on garbage."""
        return self._find_commit(self._repo, rev) is not None

    @_reports_damage
    def read_text(self, path: str, rev: str | None = None) -> FileText | None:
        """The UTF-8 text of `path` at `rev` (default: head); None if no such file."""
        tree = self._commit(rev).tree
        try:
            entry = tree[_entry_name(path)]
        except (KeyError, ValueError):
            return None
        if entry.filemode not in (FileMode.BLOB, FileMode.BLOB_EXECUTABLE):
            return None
        blob = str(entry.id)
        text = self._blob_text(blob)
        if text is None:
            raise Invalid(f"{path} is not UTF-8 text", code="file_not_utf8", details={"path": path})
        return FileText(path=path, text=text, blob=blob)

    @_reports_damage
    def files(self, rev: str | None = None, prefix: str | None = None) -> dict[str, str]:
        """Every file (recursively) at `rev` → its blob id, sorted by path.

        `prefix` ("chapters" or "chapters/") limits the answer to that directory;
        paths stay full paths.
        """
        tree: pygit2.Tree = self._commit(rev).tree
        base = ""
        if prefix:
            base = prefix.strip("/")
            try:
                entry = tree[_entry_name(base)]
            except (KeyError, ValueError):
                return {}
            if entry.filemode != FileMode.TREE:
                return {}
            tree = self._repo[entry.id]
            base += "/"
        found: dict[str, str] = {}
        stack = [(base, tree)]
        while stack:
            where, current = stack.pop()
            for entry in current:
                if entry.filemode == FileMode.TREE:
                    stack.append((f"{where}{entry.name}/", self._repo[entry.id]))
                elif entry.filemode in (FileMode.BLOB, FileMode.BLOB_EXECUTABLE):
                    found[f"{where}{entry.name}"] = str(entry.id)
        return dict(sorted(found.items()))

    @_reports_damage
    def changed_paths(self, old: str | None, new: str) -> list[str]:
        """Sorted paths whose content differs between two commits (old None = empty).

        A tree-to-tree diff: compares blob ids, never reads file contents.
        """
        new_tree = self._commit(new).tree
        if old is None:
            diff = new_tree.diff_to_tree(swap=True)
        else:
            diff = self._repo.diff(self._commit(old).tree, new_tree)
        paths: set[str] = set()
        for delta in diff.deltas:
            paths.add(delta.old_file.path)
            paths.add(delta.new_file.path)
        return sorted(paths)

    @_reports_damage
    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of two commits, None if histories are unrelated."""
        base = self._repo.merge_base(self._commit(a).id, self._commit(b).id)
        return str(base) if base is not None else None

    @_reports_damage
    def is_ancestor(self, a: str, b: str) -> bool:
        """True if `a` is in `b`'s history (a commit is its own ancestor)."""
        return self._reaches(self._commit(b), self._commit(a).id)

    @_reports_damage
    def log(self, rev: str | None = None) -> Iterator[Revision]:
        """History from `rev` (default: head), newest first, parents after children."""
        start = self._commit(rev).id
        walker = self._repo.walk(start, SortMode.TOPOLOGICAL | SortMode.TIME)
        return _damage_checked(self.path, (_revision(commit) for commit in walker))

    @_reports_damage
    def revision(self, rev: str) -> Revision:
        """One commit as history shows it."""
        return _revision(self._commit(rev))

    @_reports_damage
    def commits_between(self, old: str | None, new: str) -> list[Revision]:
        """Commits in `new`'s history but not in `old`'s, oldest first, parents first."""
        walker = self._repo.walk(self._commit(new).id, SortMode.TOPOLOGICAL | SortMode.REVERSE)
        if old is not None:
            walker.hide(self._commit(old).id)
        return [_revision(commit) for commit in walker]

    @_reports_damage
    def file_changes(self, rev: str) -> list[FileChange]:
        """What `rev` changed against its first parent (a root commit: against nothing)."""
        parents = self._commit(rev).parent_ids
        return self.changes_between(str(parents[0]) if parents else None, rev)

    @_reports_damage
    def changes_between(self, old: str | None, new: str) -> list[FileChange]:
        """The files that differ between two commits (`old` None: the empty tree), sorted.

        Renames are detected the way `git log --follow` does (similar content), so a
        chapter moved through Git keeps its history.
        """
        new_tree = self._commit(new).tree
        if old is None:
            diff = new_tree.diff_to_tree(swap=True)
        else:
            diff = self._repo.diff(self._commit(old).tree, new_tree)
            diff.find_similar()
        changes = []
        for delta in diff.deltas:
            kind = _DELTA_KINDS.get(delta.status)
            if kind is None:
                continue
            before, after = delta.old_file, delta.new_file
            changes.append(
                FileChange(
                    change=kind,
                    path=before.path if kind == "deleted" else after.path,
                    old_path=before.path if kind == "renamed" else None,
                    old_blob=None if kind == "added" else str(before.id),
                    new_blob=None if kind == "deleted" else str(after.id),
                )
            )
        return sorted(changes, key=lambda change: change.path)

    @_reports_damage
    def blob_text(self, blob: str) -> str | None:
        """The UTF-8 text of a blob; None if it is not UTF-8 (an image, say)."""
        try:
            return self._blob_text(blob)
        except (KeyError, ValueError) as exc:
            raise NotFound(f"No object {blob!r} in {self.path}", code="blob_missing") from exc

    def resolve(self, rev: str) -> str:
        """The full id of the commit `rev` names: 40 hex digits, or a unique prefix of 7+."""
        if isinstance(rev, str) and _HEX_PREFIX.fullmatch(rev.lower()):
            try:
                obj = self._repo.revparse_single(rev.lower())
            except (KeyError, ValueError, pygit2.GitError):
                obj = None
            if isinstance(obj, pygit2.Commit):
                return str(obj.id)
        raise NotFound(
            "no such revision in this novel", code="unknown_revision", details={"rev": rev}
        )

    # -- writing ---------------------------------------------------------------

    @_reports_damage
    def write_commit(
        self,
        *,
        parent: str | None,
        changes: Mapping[str, str | None],
        author: Author,
        message: str,
        trailers: Mapping[str, str] | None = None,
        extra_parents: Sequence[str] = (),
    ) -> str:
        """Make a commit of `parent`'s tree with `changes` applied; returns its id.

        `changes` maps a path to its new text, or None to delete it (missing
        paths are ignored); directories are created and emptied ones pruned.
        `extra_parents` makes a merge commit: parents = [parent, *extra_parents].
        `parent` None means no parent: a root commit built from the empty tree, as
        for a device that has never synced (like `changed_paths(None, ...)`).
        A parent may be a commit written here and not flushed yet.

        No ref moves: publish the commit with `advance_head`. Its objects are kept in
        memory until then, or until `flush`, `close` or any read of this repository,
        whichever comes first, and are then written with those of every other commit
        kept so far as one pack, durably (`storage/packs.py` says why).
        """
        base = None if parent is None else self._commit_parts(parent)
        parents = [] if base is None else [base[0]]
        parents += [self._commit_parts(p)[0] for p in extra_parents]
        tree = None if base is None else base[1]
        kept = len(self._pending)
        try:
            return self._commit_tree(tree, parents, changes, author, message, trailers)
        except BaseException:
            # A refused change (a file over a folder, text that is not UTF-8) leaves
            # nothing of this commit behind: what it kept so far is dropped.
            for oid in list(self._pending)[kept:]:
                del self._pending[oid]
            raise

    def flush(self) -> None:
        """Write the objects of the commits made since the last flush, as one pack and its
        index, each flushed to disk before it is renamed into place and the pack
        directory after: on return they survive a power cut. A failed write drops them
        (no ref names them yet); the error says why."""
        if not self._pending:
            return
        objects, self._pending = self._pending, {}
        with _storage_errors(f"write a commit in {self.path}", self.path):
            _write_pack(self.path / "objects" / "pack", packs.build_pack(objects))

    @_reports_damage
    def advance_head(self, new: str, expected: str, *, reason: str = "sync") -> None:
        """Move `main` from `expected` to `new`, atomically against other processes;
        commits written here are flushed first.

        Raises HeadMoved if `main` is not at `expected`, Invalid if `new` does not
        descend from it (history only grows), Unavailable(novel_busy) if another
        writer holds the ref's lock file.
        """
        self.flush()
        actual = _read_branch(self.path, BRANCH)
        if actual != expected:
            raise _head_moved(expected, actual)
        target = self._commit(new)
        if new == expected:
            return
        # The usual case, a child or merge of the head or a lot's chain of them
        # (`sync.engine._commit_all`), needs no graph walk.
        if not self._reaches(target, pygit2.Oid(hex=expected)):
            raise Invalid(
                f"{new} does not descend from the head {expected}",
                code="not_fast_forward",
                details={"new": new, "expected": expected},
            )
        message = f"openwrite {reason}: {expected[:12]} -> {new[:12]}"
        with _storage_errors(f"move the head of {self.path}", self.path):
            _swap_ref(self.path, BRANCH, expected, new, message)

    # -- internals -------------------------------------------------------------

    def _blob_text(self, blob: str) -> str | None:
        """The UTF-8 text of the blob `blob` (an id), None if it is not UTF-8; remembered."""
        text = self._texts.get(blob)
        if text is not None:
            self._texts.move_to_end(blob)
            return text
        # The object's own buffer: `Blob.data` would read and inflate the object again.
        with memoryview(self._repo[blob]) as data:
            try:
                text = str(data, "utf-8")
            except UnicodeDecodeError:
                return None
        self._remember(blob, text)
        return text

    def _remember(self, blob: str, text: str) -> None:
        if blob in self._texts or len(text) > _TEXTS_KEPT:
            return
        self._texts[blob] = text
        self._texts_size += len(text)
        while self._texts_size > _TEXTS_KEPT:
            self._texts_size -= len(self._texts.popitem(last=False)[1])

    def _reaches(self, commit: pygit2.Commit, ancestor: pygit2.Oid) -> bool:
        """True if `ancestor` is in `commit`'s history (a commit is its own ancestor).

        A device's base is most often a recent head, and a lot moves the head a few
        merges at once: a few steps down the first parents, where libgit2's merge-base
        walk would read every commit made in the same second (`describe_revisions`)."""
        start = commit.id
        for _ in range(_FIRST_PARENT_STEPS):
            if commit.id == ancestor:
                return True
            if not commit.parent_ids:
                break  # a root: `ancestor` may still be behind a merge's other parent
            commit = self._repo[commit.parent_ids[0]]
        return self._repo.descendant_of(start, ancestor)

    def _commit(self, rev: str | None) -> pygit2.Commit:
        if rev is None:
            rev = self.head()
        commit = self._find_commit(self._repo, rev)
        if commit is None:
            raise _revision_missing(self.path, rev)
        return commit

    def _find_commit(self, repo: pygit2.Repository, rev: str) -> pygit2.Commit | None:
        """Commit `rev` (a full id) in `repo`, None for anything else or an unknown id.
        An id we hold but cannot read is damage, not an unknown revision: raised."""
        if not isinstance(rev, str) or not _HEX_ID.fullmatch(rev.lower()):
            return None
        try:
            found = repo.get(rev.lower())
        except (ValueError, KeyError, pygit2.GitError) as exc:
            damage = _damage(self.path, exc)
            if damage is not None:
                raise damage from exc
            return None
        return found if isinstance(found, pygit2.Commit) else None

    def _commit_parts(self, rev: str) -> tuple[bytes, bytes]:
        """The raw ids of commit `rev` and of its tree; `rev` may be a commit written here
        and not flushed yet (nothing is flushed to find it). NotFound like `_commit`."""
        if isinstance(rev, str) and _HEX_ID.fullmatch(rev.lower()):
            pending = self._pending.get(bytes.fromhex(rev))
            if pending is not None and pending[0] == packs.COMMIT:
                # A commit's first line: "tree <hex id>".
                return bytes.fromhex(rev), bytes.fromhex(pending[1][5:45].decode())
        commit = self._find_commit(self._git, rev)
        if commit is None:
            raise _revision_missing(self.path, rev)
        return commit.id.raw, commit.tree_id.raw

    def _commit_tree(
        self,
        base_tree: bytes | None,
        parents: list[bytes],
        changes: Mapping[str, str | None],
        author: Author,
        message: str,
        trailers: Mapping[str, str] | None,
    ) -> str:
        split: dict[str, str | None] = {}
        for path, text in changes.items():
            _check_path(path)
            split[path] = text
        tree = self._build_tree(base_tree, split, "")
        if tree is None:
            tree = self._keep(packs.TREE, b"")
        committer = pygit2.Signature(COMMITTER_NAME, COMMITTER_EMAIL)
        data = packs.commit_data(
            tree, parents, author.signature(), committer, _message(message, trailers)
        )
        return self._keep(packs.COMMIT, data).hex()

    def _build_tree(
        self, tree: bytes | None, changes: Mapping[str, str | None], where: str
    ) -> bytes | None:
        """The raw id of tree `tree` (a raw id) with `changes` (paths relative to it)
        applied, None if that leaves it empty; what it makes is kept for `flush`."""
        entries = self._tree_entries(tree) if tree is not None else {}
        nested: dict[str, dict[str, str | None]] = {}
        for path, text in changes.items():
            name, slash, rest = path.partition("/")
            if slash:
                nested.setdefault(name, {})[rest] = text
                continue
            key = name.encode("utf-8")
            existing = entries.get(key)
            if existing is not None and existing[0] == packs.TREE_MODE:
                raise _not_a_file(where + name)
            if text is None:
                entries.pop(key, None)
                continue
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise Invalid(
                    f"{where}{name} is not encodable as UTF-8",
                    code="invalid_text",
                    details={"path": where + name},
                ) from exc
            blob = self._keep(packs.BLOB, data)
            self._remember(blob.hex(), text)
            entries[key] = (packs.FILE_MODE, blob)
        for name, sub in nested.items():
            key = name.encode("utf-8")
            existing = entries.get(key)
            subtree = None
            if existing is not None:
                if existing[0] != packs.TREE_MODE:
                    if all(text is None for text in sub.values()):
                        continue
                    raise _not_a_file(where + name, directory=False)
                subtree = existing[1]
            new_id = self._build_tree(subtree, sub, f"{where}{name}/")
            if new_id is None:
                entries.pop(key, None)
            else:
                entries[key] = (packs.TREE_MODE, new_id)
        if not entries:
            return None
        return self._keep(packs.TREE, packs.tree_data(entries))

    def _tree_entries(self, oid: bytes) -> packs.TreeEntries:
        """The entries of tree `oid` (raw), kept or on disk, without flushing what is kept."""
        pending = self._pending.get(oid)
        if pending is not None:
            return packs.parse_tree(pending[1], oid.hex())
        try:
            kind, data = self._git.odb.read(oid.hex())
        except KeyError as exc:
            raise KeyError(oid.hex()) from exc  # named by a commit or tree: damage
        if kind != pygit2.enums.ObjectType.TREE:
            raise pygit2.GitError(f"{oid.hex()}: malformed tree: the object is a {kind.name}")
        return packs.parse_tree(data, oid.hex())

    def _keep(self, kind: int, data: bytes) -> bytes:
        """Keep an object for the next `flush`; its raw id."""
        oid = packs.object_id(kind, data)
        self._pending.setdefault(oid, (kind, data))
        return oid


def _free(git: pygit2.Repository) -> None:
    """pygit2's `Repository.free` (libgit2's `git_repository__cleanup`: the object
    database, its pack maps and descriptors, the caches), with the GIL released for
    the bulk of it.

    pygit2 holds the GIL through that call, and under load it took ~3 ms, not the
    0.01-0.03 ms it takes alone (unmapping packs waits for the process's memory map,
    which every thread reading a pack uses): a stop of the whole server ~4 times a
    second, after each fold (`Library.maintain`). The same libgit2 function called
    through ctypes runs without the GIL; `free` after it finds nothing left to release
    and keeps pygit2's own bookkeeping. The instance stays usable either way: libgit2
    opens again what a later call needs. Only the thread using the instance calls this
    (`Shelf`), so nothing else touches it meanwhile."""
    cleanup = _libgit2_cleanup()
    if cleanup is not None:
        cleanup(int.from_bytes(git._pointer, sys.byteorder))  # the git_repository *
    git.free()


@functools.cache
def _libgit2_cleanup() -> Callable[[int], int] | None:
    """`git_repository__cleanup` of the libgit2 pygit2 loaded (found in this process's
    memory maps), callable through ctypes; None where it cannot be found (then `_free`
    is pygit2's `free` alone)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = sorted(
                {line.split(maxsplit=5)[5].strip() for line in maps if "libgit2" in line}
            )
        function = ctypes.CDLL(paths[0]).git_repository__cleanup
    except (OSError, IndexError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


@contextmanager
def novel_lock(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the novel's exclusive lock: one head-moving writer at a time, machine-wide.

    flock on `<repo>/openwrite.lock`: released by the kernel if the process dies,
    and per open file, so it also serializes threads of one process. Local
    filesystems only. `timeout` None waits forever; on expiry raises
    Unavailable(novel_busy).
    """
    path = Path(path)
    lock_path = path / LOCK_FILE
    if not (path / "HEAD").is_file():
        raise _missing(path)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError as exc:
        raise _missing(path) from exc
    except OSError as exc:
        mapped = _unavailable(exc, f"open the lock of {path}")
        if mapped is None:
            raise
        raise mapped from exc
    try:
        _acquire(fd, path, timeout)
        # The repository may have been removed (renamed away) while we waited:
        # then we hold the lock of a directory that is no longer the novel.
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            raise _missing(path)
        yield
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, timeout: float | None) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(
                    f"The novel at {path} is busy with another change; try again",
                    code="novel_busy",
                    details={"timeout": timeout},
                ) from None
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.05)


def _swap_ref(repository: Path, name: str, expected: str, new: str, message: str) -> None:
    """Move the branch `name` from `expected` to `new`, the way Git does and under Git's
    own lock, so Git and libgit2 writers are kept out as well: `<ref>.lock` created
    exclusively, the ref read again under it (a true compare-and-swap), the new value
    written durably, a reflog line for the branch and for HEAD, the lock renamed over
    the ref, the directory fsynced.

    System calls rather than libgit2's `set_target`: pygit2 holds the GIL through all of
    that one's file work, and creating a file costs up to 1 ms on a disk that has just
    deleted many (ext4's search for a free inode), time every other thread of the server
    waited. Its rename also came before any fsync of the new value.
    """
    ref = repository / name
    lock = ref.with_name(ref.name + ".lock")
    try:
        fd = _create_durable(lock, 0o666)
    except FileExistsError as exc:
        # Another writer's lock: never ours to remove.
        raise Unavailable(
            f"Another writer holds {lock}; if no writer is running, that lock file is "
            "stale and can be removed",
            code="novel_busy",
        ) from exc
    try:
        try:
            actual = _read_branch(repository, name)
            if actual != expected:
                raise _head_moved(expected, actual)
            os.write(fd, f"{new}\n".encode("ascii"))
        finally:
            os.close(fd)
        line = _reflog_line(expected, new, message)
        _append_reflog(repository / "logs" / name, line)
        if _head_names(repository, name):
            _append_reflog(repository / "logs" / "HEAD", line)
        os.rename(lock, ref)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        raise
    _fsync_dir(ref.parent)


def _read_branch(repository: Path, name: str) -> str | None:
    """The commit id branch `name` holds: its loose ref, else its line in packed-refs."""
    try:
        text = _read_small(repository / name).decode("ascii").strip()
    except FileNotFoundError:
        text = None
    if text:
        return text if _HEX_ID.fullmatch(text) else None
    try:
        packed = (repository / "packed-refs").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in packed.splitlines():
        value, _, ref = line.partition(" ")
        if ref == name and _HEX_ID.fullmatch(value):
            return value
    return None


def _head_names(repository: Path, name: str) -> bool:
    try:
        return _read_small(repository / "HEAD").decode("utf-8").strip() == f"ref: {name}"
    except FileNotFoundError:
        return False


def _read_small(path: Path) -> bytes:
    """The bytes of a file of a few bytes (a ref, HEAD): three system calls, where
    `Path.read_text` makes five, each a wait for the GIL under load. Longer than a page,
    it is no ref: what is read of it fails the caller's check."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _reflog_line(old: str, new: str, message: str) -> bytes:
    """A reflog entry as Git writes one: ids, committer, time and zone, a tab, the message
    on one line."""
    one_line = " ".join(message.split())
    moment = int(time.time())
    return (
        f"{old} {new} {COMMITTER_NAME} <{COMMITTER_EMAIL}> {moment} +0000\t{one_line}\n"
    ).encode()


def _append_reflog(path: Path, line: bytes) -> None:
    """One line appended in one write (O_APPEND), as Git does; not fsynced, like Git's: a
    reflog is an audit trail, and the moved ref is what must survive."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _check_path(path: str) -> None:
    """Refuse paths Git cannot store as a tree entry (the product rules live upstream)."""
    parts = path.split("/") if isinstance(path, str) else [""]
    bad = any(part in ("", ".", "..") or part.lower() == ".git" or "\0" in part for part in parts)
    if bad:
        raise Invalid(f"Invalid file path {path!r}", code="invalid_path", details={"path": path})


def _message(message: str, trailers: Mapping[str, str] | None) -> str:
    text = message.strip() + "\n"
    if not trailers:
        return text
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY.fullmatch(key) or "\n" in value or "\r" in value:
            raise Invalid(
                f"Invalid commit trailer {key!r}", code="invalid_trailer", details={"key": key}
            )
        lines.append(f"{key}: {value.strip()}")
    return text + "\n" + "\n".join(lines) + "\n"


def _entry_name(name: str) -> str:
    """`name` (a path or a tree entry's name) as pygit2 gets it to look up or change a tree
    entry: interned.

    pygit2 1.21 keeps a reference to the string it is given by `Tree[...]`, `in tree` and
    `TreeBuilder.get/insert/remove`, and never drops it: every lookup leaked its key,
    ~70 bytes, about half a kilobyte a sync. That was the soak's memory creep (tracemalloc:
    406,000 path strings after 900 syncs and pulls). Interned, the leak is a reference
    to one string per path, which exists anyway, so memory stays bounded by the paths a
    novel has. `tests/test_memory.py` holds a lookup to no growth.
    """
    return sys.intern(name)


def _revision(commit: pygit2.Commit) -> Revision:
    trailers = dict(commit.message_trailers)
    message = commit.message.strip()
    if trailers and "\n\n" in message:
        # The trailer block is the last paragraph by definition of a trailer.
        message = message.rsplit("\n\n", 1)[0].rstrip()
    author = commit.author
    return Revision(
        id=str(commit.id),
        parents=tuple(str(p) for p in commit.parent_ids),
        author_name=author.name,
        author_email=author.email,
        time=datetime.fromtimestamp(author.time, timezone(timedelta(minutes=author.offset))),
        message=message,
        trailers=trailers,
    )


def _add_settings(config: Path) -> None:
    """Append `_CONFIG` to a new repository's config file in one write.

    Setting them one by one through libgit2 rewrites and locks the file once per
    setting (a third of a novel's creation); Git reads repeated sections as one.
    """
    sections: dict[str, list[str]] = {}
    for key, value in _CONFIG.items():
        section, _, name = key.partition(".")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        sections.setdefault(section, []).append(f"\t{name} = {text}\n")
    text = "".join(f"[{section}]\n" + "".join(lines) for section, lines in sections.items())
    with open(config, "a", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        if _durable:
            os.fsync(file.fileno())


def _fsync_dir(path: Path, *, missing_ok: bool = False) -> None:
    if not _durable:
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> bool:
    """fsync one file; False if it is not there."""
    if not _durable:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


class _Flushers:
    """Threads that run fsyncs issued together (`_fsync_all`): the filesystem flushes
    what they wait for in one journal commit, where one after the other each waited for
    its own. A queue put per fsync and one wait for the lot: ThreadPoolExecutor's futures
    cost ~1 ms of GIL-held CPU for a merged sync's 20 fsyncs (py-spy), more than the
    flushing saved in CPU."""

    def __init__(self, count: int):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._count = count
        self._started = 0

    def run(self, jobs: list[tuple[Callable[[Path], object], Path]]) -> None:
        """Run every job, return when all have ended; raise the first failure, if any."""
        self._start_threads()
        batch = _Batch(len(jobs))
        for fn, path in jobs:
            self._jobs.put((fn, path, batch))
        batch.done.wait()
        if batch.failures:
            raise batch.failures[0]

    def _start_threads(self) -> None:
        if self._started == self._count:
            return
        with self._lock:  # started on first use: no threads in a process that never writes
            while self._started < self._count:
                self._started += 1
                name = f"fsync_{self._started}"
                threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            fn, path, batch = self._jobs.get()
            try:
                fn(path)
            except BaseException as exc:  # handed to the waiting caller
                batch.failures.append(exc)
            finally:
                batch.finish_one()
            del fn, path, batch


class _Batch:
    def __init__(self, size: int):
        self.left = size
        self.failures: list[BaseException] = []
        self.done = threading.Event()
        self._lock = threading.Lock()

    def finish_one(self) -> None:
        with self._lock:
            self.left -= 1
            if self.left == 0:
                self.done.set()


_FLUSHERS = _Flushers(8)


def _fsync_all(files: Sequence[Path], folders: Sequence[Path] = ()) -> None:
    """fsync `files` and `folders` all at once, and return when every one is durable; a
    file or folder that is not there is passed over. Order among them does not matter:
    nothing points at what they hold until the caller moves a ref (or, for maintenance's
    folded pack, deletes the packs it copied), after this returns. Nothing is flushed
    unless `enable_durability` was called."""
    jobs: list[tuple[Callable[[Path], object], Path]] = [(_fsync_file, path) for path in files]
    jobs += [(_fsync_missing_ok_dir, path) for path in folders]
    if len(jobs) == 1:
        jobs[0][0](jobs[0][1])
    elif jobs:
        _FLUSHERS.run(jobs)


def _fsync_missing_ok_dir(path: Path) -> None:
    _fsync_dir(path, missing_ok=True)


def _write_pack(folder: Path, pack: packs.Pack) -> None:
    """Put `pack` in the pack directory `folder` durably (`publish_pack`), both files
    written under temporary names first.

    A crash leaves at most a temporary file (cleared by maintenance) or a pack without
    its index, which Git and libgit2 pass over; never a named file with missing data.
    """
    temporaries: list[tuple[Path, str]] = []
    published = False
    try:
        for data, suffix in ((pack.pack, ".pack"), (pack.index, ".idx")):
            temporaries.append((_write_new(folder, data), suffix))
        publish_pack(folder, pack.name, temporaries, written_durably=True)
        published = True
    finally:
        if not published:
            for temporary, _ in temporaries:
                temporary.unlink(missing_ok=True)


def _create_durable(path: Path, mode: int) -> int:
    """A new file (never an existing one: FileExistsError), open for writing, each write
    to it durable when it returns (O_SYNC, what an fsync after it would give; nothing is
    flushed unless `enable_durability` was called)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | (os.O_SYNC if _durable else 0)
    return os.open(path, flags, mode)


def _write_new(folder: Path, data: bytes) -> Path:
    """A new read-only temporary file in `folder` (made if missing) holding `data`, on
    disk when this returns; its path.

    Written with O_SYNC, each write returning once it is durable, rather than written,
    closed, opened again and fsynced on a flusher thread: every system call and every
    hop between threads waits for the GIL again, and under load those waits, not the
    disk, were most of a sync's flush (`docs/benchmarks.md`, session 11). Created
    read-only, as Git leaves its pack files: the descriptor opened it for writing."""
    made_folder = False
    while True:
        # Drawn from Python's generator, not the system's (`uuid4`): one call fewer.
        path = folder / f"{PACK_TEMPORARY_PREFIX}{random.getrandbits(64):016x}"
        try:
            fd = _create_durable(path, 0o444)
            break
        except FileExistsError:
            continue  # a temporary of that name already: draw another
        except FileNotFoundError:
            if made_folder:
                raise
            folder.mkdir(exist_ok=True)
            made_folder = True
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path


def publish_pack(
    folder: Path, name: str, files: Sequence[tuple[Path, str]], *, written_durably: bool = False
) -> None:
    """Rename the finished pack files `files` (each a temporary in `folder` and the suffix
    it takes: ".pack", ".idx", Git's ".rev") into place as `pack-<name>`, durably: each
    flushed first (unless `written_durably`: read-only and on disk already, as
    `_write_new` leaves them), renamed in Git's order (the pack first, the index last:
    Git and libgit2 find a pack by its index), then the folder flushed. On return a
    reader finds every object of the pack, and it survives a power cut.

    A pack of that name already there holds the same objects: it is kept, as Git keeps
    it, rather than replaced under a reader that may have it open; the temporaries are
    then removed.
    """
    if (folder / f"pack-{name}.idx").exists():
        for temporary, _ in files:
            temporary.unlink(missing_ok=True)
        return
    ordered = sorted(files, key=lambda file: (file[1] == ".idx", file[1] != ".pack"))
    if not written_durably:
        _fsync_all([temporary for temporary, _ in ordered])
        for temporary, _ in ordered:
            os.chmod(temporary, 0o444)  # as Git leaves its packs
    for temporary, suffix in ordered:
        temporary.rename(folder / f"pack-{name}{suffix}")
    _fsync_dir(folder)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root`, `root` included."""
    if not _durable:
        return
    files, folders = [], []
    for folder, _dirs, names in os.walk(root):
        folders.append(Path(folder))
        files.extend(Path(folder) / name for name in names)
    _fsync_all(files, folders)


@contextmanager
def _storage_errors(action: str, where: Path) -> Iterator[None]:
    """Turn a full or read-only disk under a write into Unavailable; the head stays put."""
    try:
        yield
    except (OSError, pygit2.GitError) as exc:
        if _is_damage(exc):
            raise  # reported by _damage_reported, whatever room the disk has left
        mapped = _unavailable(exc, action) or unavailable_by_filesystem(where, action)
        if mapped is None:
            raise
        raise mapped from exc


@contextmanager
def _damage_reported(path: Path) -> Iterator[None]:
    try:
        yield
    except (pygit2.GitError, KeyError) as exc:
        damage = _damage(path, exc)
        if damage is None:
            raise
        raise damage from exc


def _damage_checked(path: Path, items: Iterator[T]) -> Iterator[T]:
    """`items`, a lazy walk over the repository, with damage reported as it is met."""
    with _damage_reported(path):
        yield from items


def _is_damage(exc: BaseException) -> bool:
    """True if `exc` is libgit2 failing to read what the repository holds.

    A corrupt object is a GitError in words (`_DAMAGE_TEXTS`); a missing one is a
    KeyError carrying its id, from a lookup of an id a tree or commit gave us.
    """
    if isinstance(exc, pygit2.GitError):
        text = str(exc)
        return any(t in text for t in _DAMAGE_TEXTS)
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return _HEX_ID.fullmatch(str(exc.args[0])) is not None
    return False


def _damage(path: Path, exc: BaseException) -> RepositoryCorrupt | None:
    if not _is_damage(exc):
        return None
    reason = str(exc) if isinstance(exc, pygit2.GitError) else f"{exc.args[0]}: object missing"
    found = _HEX_ID.search(reason)
    obj = found.group(0) if found else None
    reason = reason.removeprefix(f"{obj}: ")  # libgit2 starts with the id; say it once
    novel = path.name.removesuffix(".git")
    what = f"Git object {obj}" if obj else "Git data"
    return RepositoryCorrupt(
        f"The repository of novel {novel} is damaged: {what} cannot be read ({reason}). "
        "Restore the novel from a clone or a backup; `git fsck` lists what is affected",
        details={"novel_id": novel, "object": obj, "reason": reason},
    )


def _unavailable(exc: BaseException, action: str) -> Unavailable | None:
    number = getattr(exc, "errno", None)
    text = str(exc)
    if number in _FULL_ERRNOS or any(t in text for t in _FULL_TEXTS):
        return storage_full(action)
    if number in _READ_ONLY_ERRNOS or any(t in text for t in _READ_ONLY_TEXTS):
        return storage_read_only(action)
    return None


def _revision_missing(path: Path, rev: object) -> NotFound:
    return NotFound(
        f"No commit {rev!r} in {path}", code="revision_missing", details={"revision": rev}
    )


def _missing(path: Path) -> NotFound:
    return NotFound(f"No novel repository at {path}", code="repository_missing")


def _head_moved(expected: str, actual: str | None) -> HeadMoved:
    return HeadMoved(
        "The novel changed while this edit was being saved",
        details={"expected": expected, "actual": actual},
    )


def _not_a_file(path: str, *, directory: bool = True) -> Invalid:
    what = "a directory" if directory else "a file, not a directory"
    return Invalid(f"{path} is {what}", code="path_kind", details={"path": path})
