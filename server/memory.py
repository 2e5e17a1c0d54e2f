"""Giving memory the process has freed back to the system, and keeping the garbage
collector's pauses short.

glibc's malloc keeps what threads free in its arenas, for the next allocation. The
server's threads (SQLite readers and writer, Git workers, flushers) allocate in turn
from a dozen arenas, and with free space scattered among live blocks an arena rarely
shrinks by itself: under the soak the RSS crept up ~1 MB a minute for a whole hour, and
one `malloc_trim(0)` at the end handed back 35 MB of 212. `trim` asks for that now and
then, on a worker thread (it holds each arena's lock while it walks it).

Elsewhere than glibc (musl, macOS) there is no `malloc_trim`: `trim` does nothing.

The collector's full passes (generation 2) walk every object the process holds, and
most of them were made at start-up and live as long as the server: modules, the API's
models, the OpenAPI document, Unicode tables. Under the sync bench such a pass came
every ~2.5 s and held the GIL for 15-35 ms, every sync in flight waiting for it; with
the start-up objects set aside (`gc.freeze`) the same passes took 0.5-0.7 ms.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc

from server.periodic import every


def _malloc_trim() -> ctypes._CFuncPtr | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library the process already uses
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def trim() -> bool:
    """Return freed heap memory to the system; True if any was returned."""
    if _TRIM is None:
        return False
    return bool(_TRIM(0))


def start_trimming(seconds: float) -> asyncio.Task | None:
    """A task that calls `trim` on a worker thread every `seconds`, until cancelled; None
    if 0 or less, or where there is nothing to call."""
    if _TRIM is None:
        return None
    return every(seconds, lambda: asyncio.to_thread(trim), "malloc_trim")


def freeze_start_up_objects() -> int:
    """Set every object alive now aside from the collector's passes, for good (what is
    garbage already is collected first); returns how many objects are set aside.

    For the end of start-up: what a server made to serve with stays until it stops, and
    the collector need not walk it again on each full pass. Objects set aside are still
    freed when their last reference goes; only a cycle among them would stay.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
