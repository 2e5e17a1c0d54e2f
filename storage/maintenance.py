"""Upkeep of novel repositories: counting packs and loose objects, folding them with Git.

Safe while syncs write: see `repack` for why. Runs `git` as a subprocess (no shell);
call it from a worker thread or a scheduled job, never on the event loop.
"""

from __future__ import annotations

import fcntl
import os
import re
import string
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from storage import packs as pack_format
from storage.errors import NotFound, Unavailable
from storage.repository import PACK_TEMPORARY_PREFIX, novel_lock, publish_pack

MAINTENANCE_LOCK_FILE = "openwrite-maintenance.lock"
DEFAULT_LOOSE_THRESHOLD = 1000
# Each sync (a merged one: both its commits) adds one small pack; past this many packs
# they are folded together. Every pack is one more index libgit2 searches on a lookup:
# with no folding a server at 60 syncs/s went from p99 75 ms to 700-880 ms in 5 s. 8, 16
# and 32 measured alike within noise (paced p99 47-69, 52-63, 70-122 ms), 8 at twice
# the repack CPU of 16 (`docs/benchmarks.md`, session 6).
DEFAULT_PACK_THRESHOLD = 16
STALE_TEMPORARY_SECONDS = 3600
# Each kept pack holds at least this many times the objects of the packs below it, as
# `git repack --geometric=2` keeps them; the packs below the progression are folded.
GEOMETRIC_FACTOR = 2
_FOLD_PREFIX = ".tmp-fold"
# Temporary files in objects/pack: ours (`_write_pack`), pack-objects' and repack's own.
_TEMPORARY_PREFIXES = (
    PACK_TEMPORARY_PREFIX, "tmp_pack_", "tmp_idx_", "tmp_rev_", "tmp_bitmap_", ".tmp-",
)  # fmt: skip

_HEX = set(string.hexdigits.lower())
_HEX_ID = re.compile(r"[0-9a-f]{40}")


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
    """Fold the small packs each commit leaves into one, as `git repack --geometric=2 -d`
    does (`fold_packs`; with loose objects about, that command itself); `full` merges
    everything into one pack.

    Safe while syncs of this novel run, without holding them up:
    - The server writes objects only as new packs (`NovelRepository.flush`), never
      loose, and never changes a pack once its index is in place. A fold picks whole
      packs, copies every object they hold, reachable or not (an in-flight sync's
      commit is not reachable yet), into a new pack fsync'd before it is renamed into
      place, and only then deletes the packs it copied. A pack written meanwhile is
      not among them.
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
        elif loose_before:  # an older server's loose objects: Git packs and prunes them
            _run_git(path, ["repack", "--geometric=2", "-d", "-q"], timeout)
        else:
            fold_packs(path, timeout=timeout)
        return RepackResult(
            loose_before=loose_before,
            loose_after=loose_object_count(path),
            packs_before=packs_before,
            packs_after=pack_count(path),
        )
    finally:
        os.close(lock_fd)


def geometric_split(sizes: list[int], factor: int = GEOMETRIC_FACTOR) -> int:
    """How many of the packs of `sizes` (object counts, smallest first) to fold so that
    the rest, with the folded pack, form a geometric progression: Git's own rule for
    `git repack --geometric` (`split_pack_geometry` in builtin/repack.c). The large
    packs of a long history are left alone; only the small ones are rewritten."""
    split = max(len(sizes) - 1, 0)
    while split > 0 and sizes[split] >= factor * sizes[split - 1]:
        split -= 1
    if split > 0:
        split += 1  # the upper pack of the pair that broke the progression is kept
    folded = sum(sizes[:split])
    while split < len(sizes) and sizes[split] < factor * folded:
        folded += sizes[split]  # the folded pack would outgrow it: fold it too
        split += 1
    return split


def fold_packs(path: Path, *, timeout: float = 600.0) -> int:
    """`git repack --geometric=2 -d` for a repository whose objects are all in packs, for a
    fraction of its cost on a long history; returns how many packs were folded.

    Git's geometric repack has `git pack-objects --stdin-packs` walk the whole history
    to find each object's path, for its delta search: 80-120 ms a fold on a novel of
    20,000 commits, run every 16 syncs. Fed the objects of the packs it folds by id,
    with their paths from the folded commits' trees (`_named`), `pack-objects` makes a
    pack of the same size in 20-32 ms.

    The new pack is put in place durably (`publish_pack`, as a sync's own packs are),
    and only then are the folded packs deleted, each index first, so that no reader
    finds an index without its pack. Packs with a `.keep` are left alone. Call
    under the maintenance lock (`repack`).
    """
    folder = _objects_dir(path) / "pack"
    found = []
    for name in os.listdir(folder):
        stem = name.removesuffix(".idx")
        if not name.startswith("pack-") or stem == name:
            continue
        if os.path.exists(folder / f"{stem}.keep") or not os.path.exists(folder / f"{stem}.pack"):
            continue  # kept on purpose, or a pack a crash left without its index's pair
        try:
            # The count only: the index of a 20,000-commit history lists ~25,000 ids, and
            # reading them all in Python held the GIL ~4 ms a fold, a pause for every sync.
            with open(folder / name, "rb") as index:
                header = index.read(pack_format.INDEX_HEADER_BYTES)
            found.append((pack_format.index_object_count(header), stem))
        except (FileNotFoundError, ValueError):
            continue  # not a whole index: not for us to fold (fsck reports it)
    found.sort()
    folded = [stem for _, stem in found[: geometric_split([size for size, _ in found])]]
    if len(folded) < 2:
        return 0
    try:
        ids = [
            pack_format.index_object_ids((folder / f"{stem}.idx").read_bytes()) for stem in folded
        ]
    except ValueError as exc:
        raise Unavailable(
            f"a pack index of {path} is damaged: {exc}", code="maintenance_failed"
        ) from exc
    objects = dict.fromkeys(oid for listed in ids for oid in listed)
    # One object a line, with its path when it has one: `pack-objects`' own input format.
    lines = [
        f"{oid} {name}\n" if name else f"{oid}\n" for oid, name in _named(path, objects, timeout)
    ]
    digest = _run_git(
        path,
        ["pack-objects", "--quiet", "--delta-base-offset", "--non-empty",
         str(folder / _FOLD_PREFIX)],
        timeout,
        stdin="".join(lines),
    ).strip()  # fmt: skip
    prefix = f"{_FOLD_PREFIX}-{digest}."
    made = [folder / name for name in os.listdir(folder) if name.startswith(prefix)]
    if not _HEX_ID.fullmatch(digest) or {m.suffix for m in made} < {".pack", ".idx"}:
        for temporary in made:
            temporary.unlink(missing_ok=True)
        # Nothing is deleted without its objects in place in a new pack.
        raise Unavailable(
            f"git pack-objects of {path} left no pack (it answered {digest!r})",
            code="maintenance_failed",
        )
    publish_pack(folder, digest, [(temporary, temporary.suffix) for temporary in made])
    for stem in folded:
        if stem == f"pack-{digest}":
            continue  # the folded pack came out as one of those it folds: it stays
        for suffix in (".idx", ".pack", ".rev", ".bitmap", ".mtimes", ".promisor"):
            (folder / f"{stem}{suffix}").unlink(missing_ok=True)
    return len(folded)


def _named(path: Path, objects: dict[str, None], timeout: float) -> list[tuple[str, str]]:
    """`objects` each with the path it has in a commit among them ("" if none: commits,
    and objects no commit there names), those named in the order Git lists them.

    `pack-objects` looks for deltas among objects of the same name first: without the
    paths, versions of different chapters (all ~50 KB) were deltified against each
    other, and a 20-chapter novel took 10.8 MB of disk against 6.9 MB (the clone bench).
    The paths come from the trees of the folded commits alone (`--no-walk`): a few
    hundred entries, however long the history.
    """
    listing = "".join(f"{oid}\n" for oid in objects)
    kinds = _run_git(path, ["cat-file", "--batch-check=%(objectname) %(objecttype)"], timeout,
                     stdin=listing)  # fmt: skip
    commits = [line.split()[0] for line in kinds.splitlines() if line.endswith(" commit")]
    named: dict[str, str] = {}
    if commits:
        trees = _run_git(path, ["rev-list", "--objects", "--no-walk", "--stdin"], timeout,
                         stdin="".join(f"{oid}\n" for oid in commits))  # fmt: skip
        for line in trees.splitlines():
            oid, _, name = line.partition(" ")
            if oid in objects and oid not in named:
                named[oid] = name
    return [*named.items(), *((oid, "") for oid in objects if oid not in named)]


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


def _run_git(path: Path, args: list[str], timeout: float, stdin: str | None = None) -> str:
    """Run `git args` on the repository; its standard output. Unavailable if it fails."""
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
            input=stdin,
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
    return done.stdout


def _objects_dir(path: Path) -> Path:
    objects = Path(path) / "objects"
    if not objects.is_dir():
        raise NotFound(f"No novel repository at {path}", code="repository_missing")
    return objects
