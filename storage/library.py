"""Where novel repositories live, and how work reaches them: Git runs on worker threads
(never the event loop), and writes to one novel are serialized in this process (an
asyncio lock) and across processes (the repository's file lock)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from weakref import WeakValueDictionary

from storage import maintenance
from storage.errors import NotFound
from storage.repository import NovelRepository, novel_lock

log = logging.getLogger("openwrite.maintenance")

T = TypeVar("T")
_NOVEL_ID = re.compile(r"^[0-9a-z]{26}$")
# Count a novel's packs and loose objects every this many writes (directory scans, cheap).
CHECK_EVERY = 4
# Still this many packs after the geometric repack: fold them all into one.
MAX_PACKS = 20
# Repositories kept open between calls, all novels together (`Shelf`).
KEEP_OPEN = 16
# Commits taken together in one turn of a novel's lock at most
# (`Library.run_writing_together`): every answer of a lot waits for its last commit.
LOT_LIMIT = 8


def _packs(path: Path) -> frozenset[str]:
    """The names of a repository's packs; OSError if its pack folder is not there."""
    return frozenset(name for name in os.listdir(path / "objects" / "pack") if name[-5:] == ".pack")


def _close(repo: NovelRepository) -> None:
    try:
        repo.close()
    except Exception:  # nothing is pending in an idle instance: only its handles are lost
        log.exception("closing the repository %s failed", repo.path)


class Shelf:
    """Repositories kept open between calls, at most `capacity`, least recently used
    closed first.

    Opening one per call cost ~9% of the server's GIL time under the sync bench (config,
    object database, pack indexes), and each call began with libgit2's caches cold: the
    head's commit and trees were parsed again for every sync.

    An instance is used by one thread at a time: taken off the shelf for a call, put
    back after it. Three rules keep a kept instance as truthful as a fresh one:
    - It keeps every pack it has mapped, deleted or not. So it is kept only while every
      pack that was there when it was last taken still is: a fold (this process's or
      another's) or any removal of a pack means the next call opens a fresh instance.
      New packs need nothing; libgit2 rescans the folder for an object it cannot find.
    - Blob texts are forgotten when it comes back (`NovelRepository.settle`): every call
      reads chapters from disk, and meets damage done to them since.
    - A call that raised closes its instance instead.

    An instance left unused holds its packs' file descriptors and the pages of them it
    read; `close_idle` closes those unused for a while (the server does every half
    minute, `repository_idle_seconds`).
    """

    def __init__(self, capacity: int = KEEP_OPEN):
        self.capacity = capacity
        self._lock = threading.Lock()
        # novel id -> instances, the packs each may have mapped, and when each came back;
        # least recent first.
        self._idle: OrderedDict[str, list[tuple[NovelRepository, frozenset[str], float]]] = (
            OrderedDict()
        )
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def take(self, novel_id: str, path: Path) -> tuple[NovelRepository, frozenset[str]]:
        """An instance for one call, and the packs it may have mapped (hand both to
        `put`). NotFound(repository_missing) if the repository is not there."""
        kept = None
        with self._lock:
            stack = self._idle.get(novel_id)
            if stack:
                kept = stack.pop()
                self._count -= 1
                if not stack:
                    del self._idle[novel_id]
        try:
            now = _packs(path)
        except OSError:
            now = None
        if kept is not None:
            repo, seen, _ = kept
            if now is not None and seen <= now:
                return repo, now
            _close(repo)
        return NovelRepository.open(path), now or frozenset()

    def put(self, novel_id: str, repo: NovelRepository, seen: frozenset[str]) -> None:
        """Keep `repo` after a call that ended well; its pending objects are written first
        (an error there propagates, and the instance is closed)."""
        try:
            repo.settle()
        except BaseException:
            _close(repo)
            raise
        try:
            now = _packs(repo.path)
        except OSError:
            now = None
        if self.capacity <= 0 or now is None or not seen <= now:
            _close(repo)
            return
        evicted = []
        with self._lock:
            self._idle.setdefault(novel_id, []).append((repo, now, time.monotonic()))
            self._idle.move_to_end(novel_id)
            self._count += 1
            while self._count > self.capacity:
                oldest, stack = next(iter(self._idle.items()))
                evicted.append(stack.pop(0)[0])
                self._count -= 1
                if not stack:
                    del self._idle[oldest]
        for old in evicted:
            _close(old)

    def discard(self, novel_id: str | None = None) -> None:
        """Close the idle instances of one novel (before its repository is removed), or
        of all novels."""
        self._close_where(lambda kept_for, _since: novel_id is None or kept_for == novel_id)

    def close_idle(self, seconds: float, *, now: float | None = None) -> int:
        """Close the instances unused for `seconds` or more; how many were closed."""
        cutoff = (time.monotonic() if now is None else now) - seconds
        return self._close_where(lambda _novel_id, since: since <= cutoff)

    def _close_where(self, chosen: Callable[[str, float], bool]) -> int:
        """Take the idle instances `chosen(novel_id, since)` picks off the shelf, then
        close them (outside the lock: a close takes milliseconds); how many."""
        closing: list[NovelRepository] = []
        with self._lock:
            for novel_id in list(self._idle):
                kept = []
                for entry in self._idle[novel_id]:
                    if chosen(novel_id, entry[2]):
                        closing.append(entry[0])
                    else:
                        kept.append(entry)
                if kept:
                    self._idle[novel_id] = kept
                else:
                    del self._idle[novel_id]
            self._count -= len(closing)
        for repo in closing:
            _close(repo)
        return len(closing)


def _any_raised(outcomes: list[Any]) -> bool:
    return any(isinstance(outcome, BaseException) for outcome in outcomes)


def _let_go(held: contextlib.AbstractContextManager, taking: asyncio.Future) -> None:
    """Release a file lock its taker stopped waiting for, once the Git thread has it."""
    if not taking.cancelled() and taking.exception() is None:
        held.__exit__(None, None, None)


def _hand_out(lot: list[tuple[Any, asyncio.Future]], work: asyncio.Future) -> None:
    """Give each caller of a lot (`Library.run_writing_together`) its outcome, or the
    error that stopped the lot; a caller that went away is passed over."""
    if work.cancelled():  # the Git threads were shut down before the lot ran
        for _, future in lot:
            future.cancel()
        return
    failure = work.exception()
    outcomes = work.result() if failure is None else None
    if failure is None and (not isinstance(outcomes, list) or len(outcomes) != len(lot)):
        failure = RuntimeError(f"a lot of {len(lot)} items did not give an outcome for each")
    for position, (_, future) in enumerate(lot):
        if future.done():
            continue
        outcome = failure if failure is not None else outcomes[position]
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class Library:
    def __init__(
        self,
        root: Path,
        *,
        workers: int = 4,
        lock_timeout: float = 60.0,
        loose_threshold: int = maintenance.DEFAULT_LOOSE_THRESHOLD,
        pack_threshold: int = maintenance.DEFAULT_PACK_THRESHOLD,
        keep_open: int = KEEP_OPEN,
    ):
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.loose_threshold = loose_threshold
        self.pack_threshold = pack_threshold
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="git")
        # Repacks get their own thread so they never hold up a sync waiting for a Git thread.
        self._maintenance_pool = ThreadPoolExecutor(1, thread_name_prefix="repack")
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        # Items waiting for `run_writing_together`, by novel and work, in arrival order,
        # and the task taking them in lots.
        self._queued: dict[tuple[str, Callable], list[tuple[Any, asyncio.Future]]] = {}
        self._draining: dict[tuple[str, Callable], asyncio.Task] = {}
        self._writes: Counter[str] = Counter()
        self._counting = threading.Lock()
        self._maintaining: dict[str, Future] = {}
        self.shelf = Shelf(keep_open)

    def path(self, novel_id: str) -> Path:
        """The repository directory of a novel; ids are checked so no path escapes the root."""
        if not _NOVEL_ID.match(novel_id):
            raise NotFound("novel not found")
        return self.root / f"{novel_id}.git"

    def _open_and_run(
        self,
        novel_id: str,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        failed: Callable[[T], bool] | None = None,
    ) -> T:
        """`fn(repo, *args)` with an instance from the shelf, put back after unless the
        call raised, or `failed(result)` says part of it did: then it is closed."""
        repo, seen = self.shelf.take(novel_id, self.path(novel_id))
        try:
            result = fn(repo, *args)
        except BaseException:
            _close(repo)
            raise
        if failed is not None and failed(result):
            _close(repo)
        else:
            self.shelf.put(novel_id, repo, seen)
        return result

    async def run(self, novel_id: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(repository, *args)` on a Git thread, with the novel's repository opened
        there or kept open from an earlier call (`Shelf`)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._open_and_run, novel_id, fn, args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Any blocking Git work (creating, removing repositories) on a Git thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def _lock(self, novel_id: str) -> asyncio.Lock:
        lock = self._locks.get(novel_id)
        if lock is None:
            lock = self._locks[novel_id] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def writing(self, novel_id: str) -> AsyncIterator[None]:
        """Hold the novel's write lock: one writer per novel, across processes too."""
        async with self._lock(novel_id):
            held = novel_lock(self.path(novel_id), timeout=self.lock_timeout)
            taking = asyncio.get_running_loop().run_in_executor(self._pool, held.__enter__)
            try:
                await asyncio.shield(taking)
            except asyncio.CancelledError:
                # The Git thread may still take the file lock: it is let go once taken,
                # or it would be held by nobody until the process ends.
                taking.add_done_callback(functools.partial(_let_go, held))
                raise
            try:
                yield
            finally:
                held.__exit__(None, None, None)

    def _open_locked_and_run(
        self,
        novel_id: str,
        fn: Callable[..., T],
        args: tuple,
        failed: Callable[[T], bool] | None = None,
    ) -> T:
        with novel_lock(self.path(novel_id), timeout=self.lock_timeout):
            return self._open_and_run(novel_id, fn, args, failed)

    async def run_writing_together(
        self, novel_id: str, fn: Callable[[NovelRepository, list[Any]], list[Any]], item: Any
    ) -> Any:
        """Work done in turns under the novel's write lock, the turns that queued taken
        together: `fn(repository, items)` runs on a Git thread, given in arrival order
        this `item` and the others queued for the novel (with the same `fn`) while the
        lock was held, at most LOT_LIMIT of them, and returns one outcome per item: its
        result, or the exception it raised (then raised to that item's caller alone).

        A sync's fixed costs (the hop to a Git thread, the file lock, the SQLite
        transaction, the ref moved and flushed) are then paid once for the lot rather
        than once each while the rest wait in line. The line is longest exactly when the
        server falls behind (a burst of syncs, a stall of the machine), and each item
        taken together shortens it for everyone after.

        The items are taken by one task per novel (`_drain`), not by their callers: a
        caller waits for its own outcome only, and returns as soon as its lot is done.
        The lock is taken in one hop: this process's lock there, the file lock on the
        Git thread, before the repository is opened (`writing` around `run` costs two
        hops, and under load each return to the event loop can wait a GIL switch
        interval, all of it spent holding the lock).

        A caller that goes away before its lot is taken leaves the line: its item is
        never done. One whose lot is running gets no answer, but the lot runs to its
        end for the others. An instance from which any item raised is closed, not kept
        (`Shelf`).
        """
        loop = asyncio.get_running_loop()
        key = (novel_id, fn)
        mine: asyncio.Future = loop.create_future()
        self._queued.setdefault(key, []).append((item, mine))
        if key not in self._draining:
            self._draining[key] = loop.create_task(self._drain(key), name=f"lots-{novel_id}")
        try:
            return await mine
        except asyncio.CancelledError:
            line = self._queued.get(key)
            if line is not None:  # still in line: leave it (by identity, not by value)
                line[:] = [waiting for waiting in line if waiting[1] is not mine]
            raise

    async def _drain(self, key: tuple[str, Callable]) -> None:
        """Run the lots of one novel's line (`run_writing_together`) until it is empty."""
        novel_id, fn = key
        loop = asyncio.get_running_loop()
        try:
            while self._queued.get(key):
                async with self._lock(novel_id):
                    line = self._queued.pop(key, [])
                    lot, rest = line[:LOT_LIMIT], line[LOT_LIMIT:]
                    if rest:
                        self._queued[key] = rest
                    if not lot:
                        continue
                    try:
                        work = loop.run_in_executor(
                            self._pool,
                            self._open_locked_and_run,
                            novel_id,
                            fn,
                            ([item for item, _ in lot],),
                            _any_raised,
                        )
                    except RuntimeError as exc:  # the Git threads are shut down
                        work = loop.create_future()
                        work.set_exception(exc)
                    work.add_done_callback(functools.partial(_hand_out, lot))
                    with contextlib.suppress(Exception):  # handed to the callers
                        await work
        finally:
            del self._draining[key]
            # Left only if cancelled (the server stopping): the callers are told so.
            for _, future in self._queued.pop(key, []):
                future.cancel()

    def note_write(self, novel_id: str) -> None:
        """Count a write of the novel (one pack: a sync's commits); every CHECK_EVERY,
        repack on the upkeep thread if needed. Callable from any thread."""
        with self._counting:
            self._writes[novel_id] += 1
            if self._writes[novel_id] % CHECK_EVERY or novel_id in self._maintaining:
                return
            future = self._maintenance_pool.submit(self.maintain, novel_id)
            self._maintaining[novel_id] = future
        future.add_done_callback(lambda _: self._maintaining.pop(novel_id, None))

    def maintain(self, novel_id: str, *, force: bool = False) -> maintenance.RepackResult | None:
        """Repack one novel when it has too many packs or loose objects: the small packs
        folded together, and everything into one pack if MAX_PACKS remain (or `force`).

        Runs beside syncs of the same novel: see `maintenance.repack` for why that is safe.
        """
        path = self.path(novel_id)
        try:
            if not force and not maintenance.needs_repack(
                path, self.loose_threshold, self.pack_threshold
            ):
                return None
            result = maintenance.repack(path, full=force)
            if not result.skipped and result.packs_after >= MAX_PACKS:
                folded = maintenance.repack(path, full=True)
                result = dataclasses.replace(
                    folded, loose_before=result.loose_before, packs_before=result.packs_before
                )
        except Exception:
            log.exception("repacking novel %s failed", novel_id)
            return None
        if not result.skipped:
            # Idle instances of the novel map the packs the repack deleted: closed here,
            # on the upkeep thread, not by the next sync while it holds the novel's lock.
            self.shelf.discard(novel_id)
        log.info(
            "novel %s repacked: %d loose objects -> %d, %d packs -> %d",
            novel_id,
            result.loose_before,
            result.loose_after,
            result.packs_before,
            result.packs_after,
        )
        return result

    async def close_idle(self, seconds: float) -> int:
        """`Shelf.close_idle` on the upkeep thread (closing holds the GIL for milliseconds;
        the syncs' threads stay free)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._maintenance_pool, self.shelf.close_idle, seconds)

    async def remove(self, novel_id: str) -> bool:
        """Delete a novel's repository (`NovelRepository.remove`), closing the instances
        kept open for it first; False if there was none."""
        path = self.path(novel_id)

        def remove() -> bool:
            self.shelf.discard(novel_id)
            return NovelRepository.remove(path)

        return await self.call(remove)

    def close(self) -> None:
        """Wait for running Git work and repacks, stop the threads, close the repositories
        kept open. Idempotent."""
        self._pool.shutdown(wait=True)
        self._maintenance_pool.shutdown(wait=True)
        self.shelf.discard()
