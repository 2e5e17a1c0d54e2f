"""Freed memory handed back to the system: `malloc_trim` now and then, off the loop."""

from __future__ import annotations

import asyncio
import ctypes
import threading

import pytest

from server import memory


def test_trim_returns_freed_heap_memory_to_the_system_where_glibc_runs_the_process():
    if memory._TRIM is None:
        pytest.skip("no malloc_trim in this C library (not glibc)")
    # Free a few MB in small blocks, beneath a block still in use, so they stay in the
    # heap; trim must find some to return.
    blocks = [ctypes.create_string_buffer(4096) for _ in range(2000)]
    keep = ctypes.create_string_buffer(64)
    del blocks
    assert memory.trim() is True
    assert keep.raw == b"\0" * 64


async def test_trimming_runs_on_a_worker_thread_every_period_until_cancelled(monkeypatch):
    if memory._TRIM is None:
        pytest.skip("no malloc_trim in this C library (not glibc)")
    threads: list[str] = []
    monkeypatch.setattr(memory, "trim", lambda: threads.append(threading.current_thread().name))
    task = memory.start_trimming(0.01)
    assert task is not None
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.sleep(0.05)
    count = len(threads)
    assert count >= 3
    assert threading.current_thread().name not in threads
    await asyncio.sleep(0.05)
    assert len(threads) == count  # none after the cancel


async def test_no_trimming_when_the_period_is_zero():
    assert memory.start_trimming(0) is None
