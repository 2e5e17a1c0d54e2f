"""Memory: freed memory handed back to the system (`malloc_trim` now and then, off the
loop), and reading and writing files of a novel keeps nothing behind."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import re
import threading
import tracemalloc
import weakref
from pathlib import Path

import pytest

from server import memory
from storage.repository import Author, NovelRepository
from tests.servers import start_server


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


class _Node:
    def __init__(self) -> None:
        self.other = self  # a cycle: only the collector frees it


def test_freezing_sets_live_objects_aside_and_collects_the_garbage_first():
    live = [["held for the life of the process"]]
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    frozen_before = gc.get_freeze_count()
    try:
        kept = memory.freeze_start_up_objects()
        assert gone() is None  # collected, not set aside for good
        assert kept > frozen_before
        assert not any(o is live for o in gc.get_objects())  # out of the passes' reach
        assert live[0][0] == "held for the life of the process"
    finally:
        gc.unfreeze()


def test_the_server_sets_its_start_up_objects_aside(tmp_path: Path):
    server = start_server(tmp_path / "data")
    try:
        found = re.search(r"start-up done: (\d+) objects set aside", server.log())
        assert found, server.log()
        assert int(found.group(1)) > 10_000  # modules, models, the OpenAPI document
    finally:
        server.stop()


def _blocks_kept(work) -> int:  # noqa: ANN001
    """Memory blocks still allocated after `work()` ran 1,000 times (after a warm-up)."""
    for _ in range(50):
        work()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(1000):
            work()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(stat.count_diff for stat in after.compare_to(before, "filename"))


def test_reading_and_writing_files_keeps_no_path_string_behind(tmp_path: Path):
    """pygit2 1.21 keeps every string it is given to look up a tree entry: each read
    or write of a file leaked its path, half a kilobyte a sync, which was the soak's
    memory creep. Paths are interned before pygit2 sees them (storage/repository.py,
    `_entry_name`), so reading a file a thousand times keeps nothing."""
    author = Author("Ann Writer", "ann@example.org")
    files = {"novel.md": "---\ntitle: Road\n---\n", "chapters/one.md": "It began.\n"}
    novel = NovelRepository.create(tmp_path / "n.git", files=files, author=author, message="m")
    head = novel.head()
    # A fresh string each time, as a request's JSON gives one.
    read = lambda: novel.read_text("chapters/" + "one.md", head)  # noqa: E731
    assert _blocks_kept(read) < 100

    def write() -> None:
        novel.write_commit(parent=head, changes={"chapters/" + "one.md": "Again.\n"},
                           author=author, message="m")  # fmt: skip

    assert _blocks_kept(write) < 100
