"""Rebuild the content index from Git: `openwrite admin reindex`, and the start-up check
that repairs any novel whose SQLite head differs from its Git ref (a crash between the
Git commit and the SQLite write leaves exactly that), or whose ref lock a crash left."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from storage import content_index, history
from storage.db import Database, Row, query_one
from storage.errors import NotFound, RepositoryCorrupt
from storage.repository import BRANCH, NovelRepository, novel_lock

log = logging.getLogger("openwrite.reindex")


@dataclass
class ReindexReport:
    checked: int = 0
    repaired: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    # Novels whose revision index gained rows (the head's revisions were missing).
    histories: list[str] = field(default_factory=list)
    unlocked: list[str] = field(default_factory=list)
    # Novels whose repository Git cannot read: left as they are, the others go on.
    damaged: list[str] = field(default_factory=list)


def clear_stale_ref_lock(path: Path, *, timeout: float = 60.0) -> bool:
    """Remove `refs/heads/main.lock` left by a process killed while moving the head.

    Every head move holds the novel lock, so a ref lock found under it belongs to no
    living writer; left in place, it would refuse every later write (novel_busy).
    """
    ref_lock = path / f"{BRANCH}.lock"
    if not ref_lock.exists():
        return False
    with novel_lock(path, timeout=timeout):
        try:
            ref_lock.unlink()
        except FileNotFoundError:
            return False
    return True


def reindex_novel(db: Database, repo: NovelRepository, novel_id: str) -> str:
    """Replace every index row of one novel with what its Git head holds; returns the head."""
    head = repo.head()
    files = {}
    for path in repo.files(head):
        found = repo.read_text(path, head)
        if found is not None:
            files[path] = (found.text, found.blob)

    def write(conn: apsw.Connection) -> None:
        if query_one(conn, "SELECT 1 FROM novel WHERE id = ?", (novel_id,)) is None:
            return
        content_index.clear_index(conn, novel_id)
        content_index.index_files(conn, novel_id, files)
        content_index.record_head(conn, novel_id, head, wrote=False)

    db.write_sync(write)
    return head


def _check_novel(db: Database, root: Path, row: Row, force: bool, report: ReindexReport) -> None:
    try:
        repo = NovelRepository.open(root / f"{row['id']}.git")
        if clear_stale_ref_lock(repo.path):
            report.unlocked.append(row["id"])
            log.warning("novel %s: removed a ref lock left by a crash", row["id"])
        repo.head()  # a repository without `main` is as good as missing
    except NotFound:
        report.missing.append(row["id"])
        log.error("novel %s has no repository at %s", row["id"], root)
        return
    try:
        _bring_up_to_date(db, repo, row, force, report)
    finally:
        repo.close()


def _bring_up_to_date(
    db: Database, repo: NovelRepository, row: Row, force: bool, report: ReindexReport
) -> None:
    # Reading a long history takes minutes: done first, without the lock, so that
    # `admin reindex` beside a live server does not hold up its syncs.
    plan = history.plan_history(db, repo, row["id"], full=force)
    # Under the novel's lock: a live server's commits must not land between reading
    # Git and replacing the rows.
    with repo.lock(timeout=60.0):
        head = repo.head()
        if force or head != row["head"]:
            reindex_novel(db, repo, row["id"])
            report.repaired.append(row["id"])
            if not force:
                log.warning("novel %s: index was at %s, Git at %s; rebuilt from Git",
                            row["id"], row["head"], head)  # fmt: skip
        if history.apply_history(db, repo, row["id"], plan):
            report.histories.append(row["id"])


def check_novels(db: Database, root: Path, *, force: bool = False) -> ReindexReport:
    """Compare every novel's SQLite head with Git and rebuild those that differ (all if `force`)."""
    report = ReindexReport()
    for row in db.read_sync(content_index.novel_heads):
        report.checked += 1
        try:
            _check_novel(db, root, row, force, report)
        except RepositoryCorrupt as exc:
            report.damaged.append(row["id"])
            log.error("novel %s: %s", row["id"], exc.message)
    return report
