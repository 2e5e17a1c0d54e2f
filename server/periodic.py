"""Work the server repeats while it runs: handing freed memory back to the system
(server/memory.py), closing repositories left unused (storage/library.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("openwrite")


def every(seconds: float, work: Callable[[], Awaitable[object]], what: str) -> asyncio.Task | None:
    """A task that awaits `work()` every `seconds`, until cancelled; None if `seconds` is 0
    or less. A round that fails is logged (`what` names it) and the next one still comes:
    upkeep is never worth stopping the server for."""
    if seconds <= 0:
        return None

    async def loop() -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception:
                log.exception("%s failed", what)

    return asyncio.ensure_future(loop())
