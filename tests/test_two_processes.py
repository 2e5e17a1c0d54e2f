"""Two server processes on one data directory: concurrent writes through both succeed,
neither reports a locked database, and every row lands in the one SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from storage.db import connect, query
from tests.servers import ServerProcess, start_server

WRITERS = 40
NOVELS_EACH = 2


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    try:
        second = start_server(data_dir)
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


async def sign_up_and_write(
    session: aiohttp.ClientSession, urls: list[str], n: int
) -> list[tuple[str, int, dict]]:
    """One writer signs up through one server, then creates novels through both."""
    answers = []
    async with session.post(
        urls[n % 2] + "/api/v1/auth/signup",
        json={
            "name": f"Writer {n}",
            "email": f"writer{n}@example.com",
            "password": "correct horse",
        },
    ) as response:
        signup = await response.json()
        answers.append(("signup", response.status, signup))
    if response.status != 201:
        return answers
    headers = {"Authorization": f"Bearer {signup['token']}"}

    async def create(i: int) -> tuple[str, int, dict]:
        async with session.post(
            urls[(n + i + 1) % 2] + "/api/v1/novels",
            json={"title": f"Novel {n}.{i}"},
            headers=headers,
        ) as response:
            return "novel", response.status, await response.json()

    answers += await asyncio.gather(*(create(i) for i in range(NOVELS_EACH)))
    return answers


async def served_log(server: ServerProcess, requests: list[str]) -> str:
    """The server's log once it shows `requests`: access lines go out in batches, a quarter
    of a second apart (server/access_log.py), later still on a loaded machine."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        log = server.log()
        if all(r in log for r in requests) or asyncio.get_running_loop().time() > deadline:
            return log
        await asyncio.sleep(0.1)


async def test_two_servers_on_one_data_directory_accept_concurrent_signups_and_novels(
    two_servers: tuple[ServerProcess, ServerProcess],
):
    urls = [server.url for server in two_servers]
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.gather(
            *(sign_up_and_write(session, urls, n) for n in range(WRITERS))
        )
    answers = [answer for writer in results for answer in writer]
    failures = [(kind, status, body) for kind, status, body in answers if status != 201]
    assert failures == []
    assert sum(kind == "signup" for kind, _, _ in answers) == WRITERS
    assert sum(kind == "novel" for kind, _, _ in answers) == WRITERS * NOVELS_EACH

    for server in two_servers:
        log = await served_log(server, ["POST /api/v1/novels", "POST /api/v1/auth/signup"])
        assert "database is locked" not in log and "Traceback" not in log
        assert "POST /api/v1/novels" in log and "POST /api/v1/auth/signup" in log

    conn = connect(two_servers[0].data_dir / "openwrite.db")
    try:
        counts = {
            table: query(conn, f"SELECT count(*) AS n FROM {table}")[0]["n"]
            for table in ("user", "account", "organization", "member", "session", "novel")
        }
        titles = {r["title"] for r in query(conn, "SELECT title FROM novel")}
    finally:
        conn.close()
    assert counts == {
        "user": WRITERS,
        "account": WRITERS,
        "organization": WRITERS,
        "member": WRITERS,
        "session": WRITERS,
        "novel": WRITERS * NOVELS_EACH,
    }
    assert titles == {f"Novel {n}.{i}" for n in range(WRITERS) for i in range(NOVELS_EACH)}
