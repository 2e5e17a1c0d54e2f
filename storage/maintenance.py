"""Upkeep of novel repositories: counting packs and loose objects, folding them with `git repack`.

Safe while syncs write: see `repack` for why. Runs `git` as a subprocess (no shell);
call it from a worker thread or a scheduled job, never on the event loop.
"""

from __future__ import annotations

import fcntl
import os
import string
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from storage.errors import NotFound, Unavailable
from storage.repository import PACK_TEMPORARY_PREFIX, novel_lock

MAINTENANCE_LOCK_FILE = "openwrite-maintenance.lock"
DEFAULT_LOOSE_THRESHOLD = 1000
# Each sync (a merged one: both its commits) adds one small pack; past this many packs
# they are folded together. Every pack is one more index libgit2 searches on a lookup:
# with no folding a server at 60 syncs/s went from p99 75 ms to 700-880 ms in 5 s. 8, 16
# and 32 measured alike within noise (paced p99 47-69, 52-63, 70-122 ms), 8 at twice
# the repack CPU of 16 (`docs/benchmarks.md`, session 6).
DEFAULT_PACK_THRESHOLD = 16
STALE_TEMPORARY_SECONDS = 3600
# Temporary files in objects/pack: ours (`_write_pack`), pack-objects' and repack's own.
_TEMPORARY_PREFIXES = (
    PACK_TEMPORARY_PREFIX, "tmp_pack_", "tmp_idx_", "tmp_rev_", "tmp_bitmap_", ".tmp-",
)  # fmt: skip

_HEX = set(string.hexdigits.lower())


@dataclass(frozen=True)
class RepackResult:
    loose_before: int
    loose_after: int
    packs_before: int
    packs_after: int
    skipped: bool = False


def loose_object_count(path: Path) -> int:
    """Loose objects in the repository: files in objects/??/, no Git call."""
    objects = _objects_dir(path)
    count = 0
    with os.scandir(objects) as entries:
        for entry in entries:
            if len(entry.name) == 2 and set(entry.name) <= _HEX and entry.is_dir():
                # Skip libgit2/git temporaries: only finished objects count.
                count += sum(1 for name in os.listdir(entry.path) if not name.startswith("tmp"))
    return count


def pack_count(path: Path) -> int:
    """Packs Git and libgit2 read: those with their index (a pack whose index a crash
    kept from its name is passed over by both, and by this count)."""
    pack_dir = _objects_dir(path) / "pack"
    if not pack_dir.is_dir():
        return 0
    return sum(1 for name in os.listdir(pack_dir) if name.endswith(".idx"))


def needs_repack(
    path: Path,
    threshold: int = DEFAULT_LOOSE_THRESHOLD,
    packs: int = DEFAULT_PACK_THRESHOLD,
) -> bool:
    """True when the repository holds `threshold` loose objects or `packs` packs."""
    return pack_count(path) >= packs or loose_object_count(path) >= threshold


def repack(
    path: Path, *, full: bool = False, timeout: float = 600.0, lock_timeout: float = 30.0
) -> RepackResult:
    """Fold the small packs each commit leaves (and any loose objects) into one with Git's
    own `git repack --geometric=2 -d`; `full` merges everything into one pack.

    Safe while syncs of this novel run, without holding them up:
    - The server writes objects only as new packs (`NovelRepository.flush`), never
      loose, and never changes a pack once its index is in place. The geometric
      repack picks whole packs, copies every object they hold, reachable or not
      (an in-flight sync's commit is not reachable yet), into a new pack fsync'd
      before it is renamed into place, and only then deletes the packs it copied.
      A pack written meanwhile is not among them.
    - A reader that finds a deleted pack gone (libgit2 or Git) looks the object up
      again after re-reading the pack directory, and finds it in the new pack.
    - `-d` also deletes loose objects now packed (`git prune-packed`), emptied
      objects/xx/ directories included. Nothing of ours writes loose objects, so no
      write can lose its directory under it.
    - `full` runs `git repack -A -d` wholly under the novel lock. `-A`, not `-a`:
      unreachable objects of old packs are turned loose, never dropped.
    Nothing is pruned by age (`git prune` is never run). Pack files a crash left
    half-written (ours, by name, an hour old) are removed first.
    Two repacks of one repository never run at once: a second caller gets
    `skipped=True` back instead of waiting.
    """
    path = Path(path)
    _objects_dir(path)
    lock_fd = os.open(path / MAINTENANCE_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            loose, packs = loose_object_count(path), pack_count(path)
            return RepackResult(loose, loose, packs, packs, skipped=True)
        _remove_stale_temporaries(path)
        loose_before, packs_before = loose_object_count(path), pack_count(path)
        if full:
            with novel_lock(path, timeout=lock_timeout):
                _run_git(path, ["repack", "-A", "-d", "-q"], timeout)
        else:
            _run_git(path, ["repack", "--geometric=2", "-d", "-q"], timeout)
        return RepackResult(
            loose_before=loose_before,
            loose_after=loose_object_count(path),
            packs_before=packs_before,
            packs_after=pack_count(path),
        )
    finally:
        os.close(lock_fd)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete pack files left half-written by a crash, ours and those of a `git repack`
    killed with the server (one can be the size of the novel): a write takes at most
    minutes (a repack is stopped after `timeout`), so one an hour old has no writer."""
    folder = _objects_dir(path) / "pack"
    if not folder.is_dir():
        return
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    for entry in os.scandir(folder):
        if not entry.name.startswith(_TEMPORARY_PREFIXES):
            continue
        try:
            stale = entry.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue  # renamed into place meanwhile by the write it belongs to
        if stale:
            Path(entry.path).unlink(missing_ok=True)


def _run_git(path: Path, args: list[str], timeout: float) -> None:
    env = {
        **os.environ,
        # Our config only: no user or system config may change what repack does.
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
    }
    try:
        done = subprocess.run(
            ["git", f"--git-dir={path}", *args],
            cwd=path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(
            f"git {args[0]} of {path} did not finish in {timeout:.0f}s", code="maintenance_timeout"
        ) from exc
    if done.returncode != 0:
        stderr = done.stderr.strip()
        code = "storage_full" if "No space left" in stderr else "maintenance_failed"
        raise Unavailable(
            f"git {args[0]} of {path} failed: {stderr or done.returncode}",
            code=code,
            details={"returncode": done.returncode},
        )


def _objects_dir(path: Path) -> Path:
    objects = Path(path) / "objects"
    if not objects.is_dir():
        raise NotFound(f"No novel repository at {path}", code="repository_missing")
    return objects
