"""Head movements fanned out to Server-Sent Events listeners.

One poller per process reads the change feed from SQLite, so heads moved by another
server process on the same data directory reach this process's listeners too; a
local commit wakes the poller at once instead of waiting for the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from storage import feed
from storage.db import Database

log = logging.getLogger("openwrite.events")


@dataclass(eq=False)
class Listener:
    user_id: str | None
    organizations: set[str]
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=1000))


class EventHub:
    def __init__(self, db: Database, *, interval: float = 0.5):
        self.db = db
        self.interval = interval
        self._listeners: set[Listener] = set()
        self._wake = asyncio.Event()
        self._seq = 0
        self._task: asyncio.Task | None = None
        self._stopped = False

    async def start(self) -> None:
        self._seq = await self.db.read(feed.latest_seq)
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        """End the poller and every stream, also one still being opened."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for listener in list(self._listeners):
            if listener.queue.full():  # a stalled reader: the end matters more than an event
                listener.queue.get_nowait()
            listener.queue.put_nowait(None)

    def poke(self) -> None:
        """A head moved here: deliver without waiting for the next tick."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def listen(self, user_id: str | None) -> AsyncIterator[Listener]:
        organizations = (
            await self.db.read(feed.readable_organizations, user_id) if user_id else set()
        )
        listener = Listener(user_id, organizations)
        self._listeners.add(listener)
        if self._stopped:  # shutting down while this stream was being opened
            listener.queue.put_nowait(None)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    async def _run(self) -> None:
        # Ends on `_stopped` as well as on cancellation: Python 3.11's `asyncio.wait_for`
        # drops a cancellation that arrives in the turn its wait ends (a poke just
        # before shutdown), and shutdown waits for this task.
        while not self._stopped:
            try:
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._stopped:
                return
            self._wake.clear()
            if not self._listeners:
                self._seq = await self.db.read(feed.latest_seq)
                continue
            try:
                changes = await self.db.read(feed.changes_after, self._seq)
            except Exception:
                log.exception("reading the change feed failed")
                continue
            for change in changes:
                self._seq = change["seq"]
                for listener in list(self._listeners):
                    if (
                        change["visibility"] == "public"
                        or change["organization_id"] in listener.organizations
                    ):
                        if listener.queue.full():
                            continue  # a stalled reader; it will catch up via the feed
                        listener.queue.put_nowait(
                            {"novel_id": change["novel_id"], "head": change["head"]}
                        )
