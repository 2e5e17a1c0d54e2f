"""A server process killed with SIGKILL in the middle of a storm of syncs, several times,
then restarted on the same data directory: every sync it answered 200 is in the head's
history, every repository passes `git fsck --strict`, SQLite is intact, and after the
restart the index head of every novel equals its Git ref."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pygit2
import pytest

from storage.db import connect, query
from tests.servers import ServerProcess, free_port, start_server

NOVELS = 3
DEVICES_PER_NOVEL = 3
ROUNDS = 3
STORM_SECONDS = 1.5
CHAPTER = "chapters/storm.md"
PARAGRAPHS = 6

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")


@dataclass
class Answered:
    """What the clients were told: (novel, head) of every sync answered 200."""

    heads: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Endpoint:
    url: str


def paragraph(index: int, word: str) -> str:
    return f"Paragraph {index} begins here and the {word} word changes often."


def opening() -> str:
    body = "\n\n".join(paragraph(i, "first") for i in range(PARAGRAPHS))
    return f"---\ntitle: Storm\n---\n{body}\n"


async def device_loop(
    session: aiohttp.ClientSession, endpoint: Endpoint, headers: dict, novel_id: str,
    name: str, slot: int, answered: Answered, stop: asyncio.Event,
) -> None:  # fmt: skip
    """A client that edits its own paragraph, syncs, and resends an unanswered sync as is."""
    path = f"/api/v1/novels/{novel_id}/sync"
    base, text, pending, op = None, None, None, 0
    while not stop.is_set():
        try:
            if base is None:
                async with session.get(endpoint.url + path, headers=headers) as response:
                    pulled = await response.json()
                base = pulled["head"]
                text = next(f["content"] for f in pulled["files"] if f["path"] == CHAPTER)
            if pending is None:
                op += 1
                word = f"{name}x{op}"
                lines = text.split("\n")
                mine = next(
                    i for i, line in enumerate(lines) if line.startswith(f"Paragraph {slot} ")
                )
                lines[mine] = paragraph(slot, word)
                pending = {"device_id": name, "op_id": f"op-{op}", "base": base,
                           "changes": [{"path": CHAPTER, "content": "\n".join(lines)}]}  # fmt: skip
            timeout = aiohttp.ClientTimeout(total=10)
            async with session.post(
                endpoint.url + path, json=pending, headers=headers, timeout=timeout
            ) as response:
                answer = await response.json()
            if response.status == 200:
                answered.heads.append((novel_id, answer["head"]))
                for entry in answer["files"]:
                    if entry["path"] == CHAPTER:
                        text = entry["content"]
                base, pending = answer["head"], None
            elif response.status == 503:
                await asyncio.sleep(0.05)
            else:
                answered.unexpected.append((response.status, str(answer)[:300]))
                pending = None
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            await asyncio.sleep(0.05)  # the server is down: keep the unanswered sync


async def prepare(url: str) -> tuple[dict, list[str]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/api/v1/auth/signup", json={
            "name": "Storm Writer", "email": "storm@example.com", "password": "correct horse",
        }) as response:  # fmt: skip
            assert response.status == 201
            headers = {"Authorization": f"Bearer {(await response.json())['token']}"}
        novel_ids = []
        for n in range(NOVELS):
            async with session.post(
                url + "/api/v1/novels", json={"title": f"Storm {n}"}, headers=headers
            ) as response:
                novel_id = (await response.json())["id"]
            body = {"device_id": "setup", "op_id": "setup", "base": None,
                    "changes": [{"path": CHAPTER, "content": opening()}]}  # fmt: skip
            async with session.post(
                url + f"/api/v1/novels/{novel_id}/sync", json=body, headers=headers
            ) as response:
                assert response.status == 200
            novel_ids.append(novel_id)
    return headers, novel_ids


async def storm(data_dir: Path, port: int) -> tuple[Answered, list[str], ServerProcess]:
    server = start_server(data_dir, port=port)
    headers, novel_ids = await prepare(server.url)
    endpoint, answered, stop = Endpoint(server.url), Answered(), asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        clients = [
            asyncio.create_task(
                device_loop(
                    session, endpoint, headers, novel_id, f"d{n}{slot}", slot, answered, stop
                )
            )  # fmt: skip
            for n, novel_id in enumerate(novel_ids)
            for slot in range(DEVICES_PER_NOVEL)
        ]
        rng = random.Random(7)
        for round_ in range(ROUNDS):
            await asyncio.sleep(STORM_SECONDS * rng.uniform(0.6, 1.0))
            server.kill()
            if round_ == ROUNDS - 1:
                stop.set()
                await asyncio.gather(*clients)
            # The last restart finds the data as the crash left it, with no client around.
            server = await asyncio.to_thread(start_server, data_dir, port=port)
    return answered, novel_ids, server


def test_syncs_answered_before_a_crash_survive_it(tmp_path: Path):
    data_dir = tmp_path / "data"
    answered, novel_ids, server = asyncio.run(storm(data_dir, free_port()))
    try:
        assert answered.unexpected == []
        assert len(answered.heads) > 20, "the storm should answer a good number of syncs"
        indexed = _index_heads(server, novel_ids)
    finally:
        server.kill()

    for novel_id in novel_ids:
        repo_path = data_dir / "novels" / f"{novel_id}.git"
        repo = pygit2.Repository(str(repo_path))
        head = repo.references["refs/heads/main"].target
        assert indexed[novel_id] == str(head)
        for answered_novel, answered_head in answered.heads:
            if answered_novel == novel_id:
                assert answered_head == str(head) or repo.descendant_of(
                    head, pygit2.Oid(hex=answered_head)
                ), answered_head
        fsck = subprocess.run(
            ["git", "--git-dir", str(repo_path), "fsck", "--strict", "--no-progress"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        assert "error" not in fsck.stderr.lower(), fsck.stderr

    conn = connect(data_dir / "openwrite.db")
    try:
        assert query(conn, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]
        assert query(conn, "PRAGMA foreign_key_check") == []
    finally:
        conn.close()


def _index_heads(server: ServerProcess, novel_ids: list[str]) -> dict[str, str]:
    """The heads SQLite holds after the last restart (its start-up check has run)."""
    conn = connect(server.data_dir / "openwrite.db")
    try:
        rows = query(conn, "SELECT id, head FROM novel")
    finally:
        conn.close()
    heads = {r["id"]: r["head"] for r in rows}
    return {novel_id: heads[novel_id] for novel_id in novel_ids}
