"""Where novel repositories live, and how work reaches them: Git runs on worker threads
(never the event loop), and writes to one novel are serialized in this process (an
asyncio lock) and across processes (the repository's file lock)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import threading
from collections import Counter
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


class Library:
    def __init__(
        self,
        root: Path,
        *,
        workers: int = 4,
        lock_timeout: float = 60.0,
        loose_threshold: int = maintenance.DEFAULT_LOOSE_THRESHOLD,
        pack_threshold: int = maintenance.DEFAULT_PACK_THRESHOLD,
    ):
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.loose_threshold = loose_threshold
        self.pack_threshold = pack_threshold
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="git")
        # Repacks get their own thread so they never hold up a sync waiting for a Git thread.
        self._maintenance_pool = ThreadPoolExecutor(1, thread_name_prefix="repack")
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        self._writes: Counter[str] = Counter()
        self._counting = threading.Lock()
        self._maintaining: dict[str, Future] = {}

    def path(self, novel_id: str) -> Path:
        """The repository directory of a novel; ids are checked so no path escapes the root."""
        if not _NOVEL_ID.match(novel_id):
            raise NotFound("novel not found")
        return self.root / f"{novel_id}.git"

    def _open_and_run(self, novel_id: str, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        repo = NovelRepository.open(self.path(novel_id))
        try:
            return fn(repo, *args)
        finally:
            repo.close()

    async def run(self, novel_id: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(repository, *args)` on a Git thread, with the repository freshly opened there."""
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
            await self.call(held.__enter__)
            try:
                yield
            finally:
                held.__exit__(None, None, None)

    async def run_writing(self, novel_id: str, fn: Callable[..., T], *args: Any) -> T:
        """`run` under the novel's write lock, taken in one hop: this process's lock here,
        the file lock on the Git thread, before the repository is opened.

        `writing` around `run` costs two hops to a Git thread and back. Under load each
        return to the event loop can wait a GIL switch interval (5 ms) for a busy thread,
        and every such wait is spent holding the novel's lock, which the novel's other
        writers queue for.
        """
        async with self._lock(novel_id):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._pool, self._open_locked_and_run, novel_id, fn, args
            )

    def _open_locked_and_run(self, novel_id: str, fn: Callable[..., T], args: tuple) -> T:
        with novel_lock(self.path(novel_id), timeout=self.lock_timeout):
            return self._open_and_run(novel_id, fn, args)

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
        log.info(
            "novel %s repacked: %d loose objects -> %d, %d packs -> %d",
            novel_id,
            result.loose_before,
            result.loose_after,
            result.packs_before,
            result.packs_after,
        )
        return result

    def close(self) -> None:
        """Wait for running Git work and repacks, then stop the threads. Idempotent."""
        self._pool.shutdown(wait=True)
        self._maintenance_pool.shutdown(wait=True)
