"""SQLite through apsw: connections, the reader pool, the one writer thread, migrations.

Reads run as small functions on a pool of threads, each with its own connection;
every write runs on one writer thread inside `BEGIN IMMEDIATE`, so a
read-then-write never fails with SQLITE_BUSY_SNAPSHOT and the event loop never
waits on SQLite. Other processes on the same file are held off by the busy timeout.

A quick read (`read_quick`: a few index lookups, a bounded page) runs on the event
loop's own connection instead, whose busy timeout is zero: in WAL mode a reader takes
no lock a writer holds, so it never waits; in the rare moment SQLite does answer busy
(another process recovering the WAL, say) the read goes to a reader thread. That saves
the thread hop, which cost more than the read (docs/benchmarks.md, "Quick reads").
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import apsw

from storage.errors import (
    Unavailable,
    storage_full,
    storage_read_only,
    unavailable_by_filesystem,
)

T = TypeVar("T")
Row = dict[str, Any]

BUSY_TIMEOUT_MS = 30_000
# What SQLite raises when it would have to wait. `read_quick` catches it to read again on
# a reader thread, so a read function that catches errors itself must let it through.
Busy = apsw.BusyError
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def _dict_rows(cursor: apsw.Cursor, row: tuple[Any, ...]) -> Row:
    return {d[0]: v for d, v in zip(cursor.get_description(), row, strict=True)}


def connect(path: Path | str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> apsw.Connection:
    """Open one connection configured the way the whole server expects."""
    conn = apsw.Connection(str(path))
    try:
        conn.set_busy_timeout(busy_timeout_ms)
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: an acknowledged sync's bookkeeping (conflict records, idempotency rows)
        # must survive a power cut, not only a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    conn.row_trace = _dict_rows
    return conn


def query(conn: apsw.Connection, sql: str, params: Any = ()) -> list[Row]:
    """All rows of `sql` (one statement) as dicts.

    The column names are read once for the statement, not once per row as the
    connection's row tracer does: a 20-row listing takes ~69 µs instead of ~75.
    """
    cursor = conn.cursor()
    cursor.row_trace = None
    cursor.execute(sql, params)
    try:
        names = [name for name, _type in cursor.get_description()]
    except apsw.ExecutionCompleteError:  # no rows at all
        return []
    # Not strict: every row has the statement's columns; checking them all costs ~6 µs.
    return [dict(zip(names, row, strict=False)) for row in cursor]


def tuples(conn: apsw.Connection, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    """All rows of `sql` as plain tuples, for code that unpacks them by position."""
    cursor = conn.cursor()
    cursor.row_trace = None
    return list(cursor.execute(sql, params))


def query_one(conn: apsw.Connection, sql: str, params: Any = ()) -> Row | None:
    """The first row of `sql` as a dict, or None."""
    for row in conn.execute(sql, params):
        return row
    return None


@contextmanager
def immediate(conn: apsw.Connection) -> Iterator[apsw.Connection]:
    """A write transaction that takes the write lock up front.

    Whatever fails, the connection leaves it outside a transaction: SQLite may already
    have rolled back by itself (after SQLITE_FULL or an I/O error, even in COMMIT), and a
    transaction left open would refuse every later write of this connection.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# SQLite's errors that a full or read-only disk causes; `_unavailable` tells which.
_STORAGE_ERRORS = (apsw.FullError, apsw.ReadOnlyError, apsw.IOError, apsw.CantOpenError)


def _unavailable(exc: apsw.Error, path: Path) -> Unavailable | None:
    action = "write to the database"
    if isinstance(exc, apsw.FullError):
        return storage_full(action)
    if isinstance(exc, apsw.ReadOnlyError):
        return storage_read_only(action)
    return unavailable_by_filesystem(path.parent, action)


def migrations() -> list[tuple[int, str, str]]:
    """Numbered migrations shipped with the package: (number, name, sql), in order."""
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {numbers}")
    return found


def migrate(conn: apsw.Connection, target: int | None = None) -> int:
    """Apply every migration above `PRAGMA user_version`, one transaction each.

    Safe when several processes start at once: the version is re-read under the
    write lock, so each migration runs exactly once. Returns the final version.
    """
    for number, _name, sql in migrations():
        if target is not None and number > target:
            break
        with immediate(conn):
            current = conn.execute("PRAGMA user_version").fetchall()[0]["user_version"]
            if number <= current:
                continue
            conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {number}")
    return schema_version(conn)


def schema_version(conn: apsw.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchall()[0]["user_version"]


class _Threads:
    """Threads running functions for the event loop, each answer handed back as an asyncio
    future.

    A lighter hop than `loop.run_in_executor`: no concurrent.futures.Future (with its
    condition variable and chained callbacks) per call, only a queue put and one
    `call_soon_threadsafe` with the outcome — about half the CPU per hop (19 µs instead
    of 37 in a loop of 32 concurrent callers). A call whose awaiting task was cancelled
    before it started is skipped. Daemon threads: a Database left open does not keep the
    process alive; `close()` finishes what was queued.
    """

    def __init__(self, count: int, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError("the database is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            _run_job(*job)
            del job  # hold on to nothing (a large argument) while waiting for the next

    def close(self) -> None:
        """Finish what was queued, then stop every thread."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()


def _run_job(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future, fn: Callable, args: tuple
) -> None:
    if future.cancelled():
        return
    try:
        outcome, failed = fn(*args), False
    except BaseException as exc:  # handed to the awaiting task, as run_in_executor does
        outcome, failed = exc, True
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, future, outcome, failed)


def _settle(future: asyncio.Future, outcome: Any, failed: bool) -> None:
    if future.cancelled():
        return
    if failed:
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class Database:
    """The server's handle on one SQLite file.

    `await db.read(fn, *args)` runs `fn(conn, *args)` on a reader thread;
    `await db.write(fn, *args)` runs it on the writer thread inside BEGIN IMMEDIATE
    and commits, or rolls back if `fn` raises (so a refused request writes nothing).
    """

    def __init__(self, path: Path | str, *, readers: int = 4, quick_reads: bool = True):
        self.path = Path(path)
        self.quick_reads = quick_reads
        self._local = threading.local()
        self._connections: list[apsw.Connection] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._readers = _Threads(readers, "sqlite-read")
        self._writer = _Threads(1, "sqlite-write")
        self._closed = False

    def _connection(self) -> apsw.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _quick_connection(self) -> apsw.Connection:
        """This thread's connection that never waits for a lock (busy timeout zero)."""
        conn = getattr(self._local, "quick", None)
        if conn is None:
            conn = connect(self.path, busy_timeout_ms=0)
            self._local.quick = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    # A full or read-only disk under the database is Unavailable (503 `storage_full` /
    # `storage_read_only`), as under a repository. A plain try, not a context manager:
    # every read and write of the server passes here.
    def _run_read(
        self, fn: Callable[..., T], args: tuple[Any, ...], conn: apsw.Connection | None = None
    ) -> T:
        try:
            return fn(conn or self._connection(), *args)
        except _STORAGE_ERRORS as exc:
            mapped = _unavailable(exc, self.path)
            if mapped is None:
                raise
            raise mapped from exc

    def _run_write(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            conn = self._connection()
            # One writer at a time in this process, whichever thread: writers meeting
            # in SQLite would wait in its busy handler, which sleeps in steps of
            # milliseconds. Other processes still meet there.
            with self._write_lock, immediate(conn):
                return fn(conn, *args)
        except _STORAGE_ERRORS as exc:
            mapped = _unavailable(exc, self.path)
            if mapped is None:
                raise
            raise mapped from exc

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._readers.run(self._run_read, fn, args)

    async def read_quick(self, fn: Callable[..., T], *args: Any) -> T:
        """`read` for a bounded read of a few index lookups (a token, a row, a page):
        run here, on the event loop's thread, unless SQLite would make it wait.

        `fn` may run twice (here, busy, then on a reader thread), so it must not do
        anything but read. Slow or unbounded reads (statistics over a whole history, a
        scan) belong in `read`: this one holds up every other request while it runs.
        """
        if not self.quick_reads:
            return await self.read(fn, *args)
        if self._closed:
            raise RuntimeError("the database is closed")
        try:
            conn = self._quick_connection()
        except Busy:  # even opening it met a lock: let a reader thread wait
            return await self.read(fn, *args)
        try:
            return self._run_read(fn, args, conn)
        except Busy:
            return await self.read(fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._writer.run(self._run_write, fn, args)

    def read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """For command-line tools and start-up: run a read on the calling thread."""
        return self._run_read(fn, args)

    def write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """For command-line tools, start-up and worker threads: a write on this thread."""
        return self._run_write(fn, args)

    def close(self) -> None:
        """Stop the threads and close every connection. Idempotent: a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._readers.close()
        self._writer.close()
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


def open_database(path: Path | str, *, readers: int = 4, quick_reads: bool = True) -> Database:
    """Open (creating if needed) and migrate the database at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        migrate(conn)
    finally:
        conn.close()
    return Database(path, readers=readers, quick_reads=quick_reads)
