"""The SQLite handle: rows as dicts, reads on reader threads, writes on the writer thread,
and what a caller sees when a call fails, is abandoned, or outlives the database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

import storage.db as storage_db
from storage.db import Database, open_database, query, query_one


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    db = open_database(tmp_path / "openwrite.db", readers=1)
    db.write_sync(lambda conn: conn.execute("CREATE TABLE shelf (id INTEGER, title TEXT)"))
    yield db
    db.close()


def test_rows_come_back_as_dicts_named_by_their_columns(db: Database):
    db.write_sync(
        lambda conn: conn.execute("INSERT INTO shelf VALUES (1, 'Dune'), (2, 'Emma'), (3, NULL)")
    )
    rows = db.read_sync(query, "SELECT id AS n, title FROM shelf ORDER BY id DESC")
    assert rows == [{"n": 3, "title": None}, {"n": 2, "title": "Emma"}, {"n": 1, "title": "Dune"}]
    assert db.read_sync(query, "SELECT * FROM shelf WHERE id > ?", (9,)) == []
    assert db.read_sync(query_one, "SELECT title FROM shelf WHERE id = 2") == {"title": "Emma"}
    # Other cursors of the connection still get dicts from its row tracer.
    assert db.read_sync(lambda conn: conn.execute("SELECT 1 AS one").fetchall()) == [{"one": 1}]


async def test_reads_and_writes_run_on_their_own_threads_and_raise_to_the_caller(db: Database):
    assert (await db.read(lambda conn: threading.current_thread().name)).startswith("sqlite-read")
    assert await db.write(lambda conn: threading.current_thread().name) == "sqlite-write_0"

    def insert_then_fail(conn: apsw.Connection) -> None:
        conn.execute("INSERT INTO shelf VALUES (1, 'Dune')")
        raise LookupError("refused")

    with pytest.raises(LookupError, match="refused"):
        await db.write(insert_then_fail)
    assert await db.read(query, "SELECT * FROM shelf") == []
    with pytest.raises(apsw.SQLError):
        await db.read(query, "SELECT * FROM no_such_table")


async def test_writes_from_any_thread_of_the_process_take_turns_before_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A commit writes SQLite on its Git thread, other writes on the writer thread: the
    process lets one write at a time into SQLite, so none waits in SQLite's busy handler
    (which sleeps in steps of milliseconds). With a busy timeout of zero, two writers
    meeting inside SQLite would fail with BusyError instead."""
    real_connect = storage_db.connect
    monkeypatch.setattr(
        storage_db, "connect", lambda path, **_: real_connect(path, busy_timeout_ms=0)
    )
    db = open_database(tmp_path / "openwrite.db", readers=1)
    db.write_sync(lambda conn: conn.execute("CREATE TABLE shelf (id INTEGER, title TEXT)"))

    def shelve(conn: apsw.Connection, n: int) -> None:
        conn.execute("INSERT INTO shelf VALUES (?, 'kept')", (n,))
        time.sleep(0.001)  # hold the write transaction a while
        conn.execute("UPDATE shelf SET title = 'shelved' WHERE id = ?", (n,))

    def thread_writes(first: int) -> None:
        for n in range(first, first + 25):
            db.write_sync(shelve, n)

    try:
        threads = [threading.Thread(target=thread_writes, args=(k * 100,)) for k in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.gather(*(db.write(shelve, 1000 + n) for n in range(25)))
        for thread in threads:
            thread.join()
        rows = db.read_sync(query, "SELECT title, count(*) AS n FROM shelf GROUP BY title")
    finally:
        db.close()
    assert rows == [{"title": "shelved", "n": 125}]


async def test_a_read_abandoned_before_it_started_never_runs(db: Database):
    started, release, ran = threading.Event(), threading.Event(), []

    def hold(conn: apsw.Connection) -> str:
        started.set()
        release.wait()
        return "held"

    holding = asyncio.ensure_future(db.read(hold))  # the only reader thread is busy
    await asyncio.get_running_loop().run_in_executor(None, started.wait)
    abandoned = asyncio.ensure_future(db.read(lambda conn: ran.append(True)))
    await asyncio.sleep(0)
    abandoned.cancel()
    release.set()
    assert await holding == "held"
    assert await db.read(lambda conn: "after") == "after"
    assert abandoned.cancelled() and ran == []


async def test_closing_finishes_queued_reads_and_refuses_new_ones(tmp_path: Path):
    db = open_database(tmp_path / "openwrite.db", readers=1)
    queued = [asyncio.ensure_future(db.read(lambda conn, n=n: n)) for n in range(5)]
    await asyncio.sleep(0)
    db.close()
    assert await asyncio.gather(*queued) == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError):
        await db.read(lambda conn: None)
    db.close()


async def test_a_quick_read_runs_on_the_event_loops_thread_and_raises_to_the_caller(db: Database):
    db.write_sync(lambda conn: conn.execute("INSERT INTO shelf VALUES (1, 'Dune')"))
    here = threading.current_thread().name

    def titles(conn: apsw.Connection) -> tuple[str, list]:
        return threading.current_thread().name, query(conn, "SELECT title FROM shelf")

    assert await db.read_quick(titles) == (here, [{"title": "Dune"}])
    # It sees a write committed after its connection opened.
    await db.write(lambda conn: conn.execute("INSERT INTO shelf VALUES (2, 'Emma')"))
    assert (await db.read_quick(titles))[1] == [{"title": "Dune"}, {"title": "Emma"}]
    with pytest.raises(apsw.SQLError):
        await db.read_quick(query, "SELECT * FROM no_such_table")
    db.close()
    with pytest.raises(RuntimeError):
        await db.read_quick(titles)


async def test_quick_reads_can_be_turned_off(tmp_path: Path):
    db = open_database(tmp_path / "openwrite.db", readers=1, quick_reads=False)
    try:
        name = await db.read_quick(lambda conn: threading.current_thread().name)
        assert name.startswith("sqlite-read")
    finally:
        db.close()


async def test_a_quick_read_that_would_wait_for_a_lock_waits_on_a_reader_thread(tmp_path: Path):
    """Another process holding the database in exclusive locking mode: the event loop's
    connection cannot even open, the read waits on a reader thread (busy timeout) instead,
    and the loop keeps running meanwhile."""
    path = tmp_path / "openwrite.db"
    db = open_database(path, readers=1)
    db.write_sync(lambda conn: conn.execute("CREATE TABLE shelf (id INTEGER)"))
    db.close()
    db = open_database(path, readers=1)
    holder = apsw.Connection(str(path))
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE; INSERT INTO shelf VALUES (7); COMMIT")  # keeps the lock
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    threading.Timer(0.3, holder.close).start()
    try:
        name, rows = await db.read_quick(
            lambda conn: (threading.current_thread().name, query(conn, "SELECT id FROM shelf"))
        )
        assert name.startswith("sqlite-read") and rows == [{"id": 7}]
        assert ticks >= 5  # the loop ran while the read waited for the lock
    finally:
        ticker.cancel()
        db.close()


async def test_a_quick_read_answered_busy_is_read_again_on_a_reader_thread(db: Database):
    threads = []

    def busy_on_the_loop(conn: apsw.Connection) -> str:
        threads.append(threading.current_thread().name)
        if len(threads) == 1:
            raise apsw.BusyError("database is locked")
        return "read"

    assert await db.read_quick(busy_on_the_loop) == "read"
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("sqlite-read")
