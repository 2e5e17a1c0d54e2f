"""Storage faults under a running server: a novel whose repository sits on a full disk, a
repository made read-only, a corrupt loose object, the whole data directory full.

Each fault answers a clear JSON error for the novel it hits (503 `storage_full` or
`storage_read_only`, 500 `repository_corrupt`), writes nothing (Git head and SQLite rows
where they were), leaves reads of that novel and every other novel working, and once the
fault is gone the same requests succeed with nothing acknowledged lost: every answered
commit in the head's history, `git fsck --strict` clean, SQLite intact, the index head
equal to the Git ref.

Full and read-only disks are real tmpfs mounts (a repository's copy bind-mounted over it,
or the whole data directory), not mocks: they need root, and where `CI` is set a test that
cannot mount fails rather than skips. The tests at the end are what the faults showed
wrong at first (a token stamp failing reads on a full disk, an index left behind Git, a
head moved before a damaged read, a damaged novel stopping start-up), fixed since.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pygit2
import pytest
from aiohttp.test_utils import TestClient, TestServer

from server.app import create_app
from server.config import Settings
from storage.db import connect, query, query_one
from tests.conftest import Writer, sign_up
from tests.db_snapshot import table_rows

NOTES = "chapters/notes.md"
GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")


# -- mounts ------------------------------------------------------------------------------


def cannot_mount(reason: str) -> None:
    """Skip locally; in CI a fault test that cannot run is a failure, never a silent skip."""
    if os.environ.get("CI"):
        pytest.fail(f"fault injection needs mounts in CI: {reason}")
    pytest.skip(reason)


class Mounts:
    """The mounts one test made, undone in reverse order however the test ends."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def run(self, *args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"

    def tmpfs(self, where: Path, size: str) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        self.run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
        self.points.append(where)
        return where

    def bind(self, source: Path, target: Path) -> None:
        self.run("mount", "--bind", str(source), str(target))
        self.points.append(target)

    def remount(self, where: Path, mode: str) -> None:
        self.run("mount", "-o", f"remount,{mode}", str(where))

    def undo(self) -> None:
        while self.points:
            point = self.points.pop()
            # A file still open under the mount (a server not yet closed) makes a plain
            # umount fail; detach lazily then, so no mount outlives the test.
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], check=True)


@pytest.fixture
def mounts(tmp_path: Path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        cannot_mount("needs root and mount(8) to mount a tmpfs")
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
    )
    if done.returncode != 0:
        cannot_mount(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    subprocess.run(["umount", str(probe)], check=True)
    made = Mounts()
    try:
        yield made
    finally:
        made.undo()


def fill(disk: Path) -> Path:
    """Write a filler file until the disk refuses another byte; returns it (unlink to free)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    stats = os.statvfs(disk)
    assert stats.f_bavail == 0, f"{disk} still has {stats.f_bavail} free blocks"
    return filler


def move_onto_own_disk(mounts: Mounts, repo: Path, disk: Path, size: str) -> Path:
    """Put a repository on a tmpfs of its own, seen by the server at its usual path:
    the tmpfs holds a copy, bind-mounted over the original. Returns the tmpfs."""
    mounts.tmpfs(disk, size)
    shutil.copytree(repo, disk / "repo", symlinks=True)
    mounts.bind(disk / "repo", repo)
    return disk


# -- the novels and what they acknowledged ------------------------------------------------


def repo_path(settings: Settings, novel_id: str) -> Path:
    return settings.repositories_dir / f"{novel_id}.git"


def git_head(settings: Settings, novel_id: str) -> str:
    repo = pygit2.Repository(str(repo_path(settings, novel_id)))
    return str(repo.references["refs/heads/main"].target)


def index_heads(settings: Settings) -> dict[str, str]:
    conn = connect(settings.database_path)
    try:
        return {r["id"]: r["head"] for r in query(conn, "SELECT id, head FROM novel")}
    finally:
        conn.close()


def assert_error(status: int, answer: Any, expected: int, code: str) -> None:
    assert status == expected, (status, answer)
    assert isinstance(answer, dict) and set(answer) == {"error"}, answer
    assert set(answer["error"]) == {"code", "message", "details"}, answer
    assert answer["error"]["code"] == code, answer
    assert answer["error"]["message"], answer


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def assert_intact(settings: Settings, acknowledged: dict[str, list[str]]) -> None:
    """Nothing acknowledged lost: every answered head in its novel's history, `git fsck
    --strict` clean, SQLite's integrity check ok, every index head equal to its Git ref."""
    for novel_id, heads in acknowledged.items():
        path = repo_path(settings, novel_id)
        repo = pygit2.Repository(str(path))
        head = repo.references["refs/heads/main"].target
        for answered in heads:
            answered_id = pygit2.Oid(hex=answered)
            assert answered_id == head or repo.descendant_of(head, answered_id), (
                f"acknowledged commit {answered} of novel {novel_id} is not in its history"
            )
        fsck = git(path, "fsck", "--strict", "--no-progress")
        assert fsck.returncode == 0, f"git fsck of {novel_id}: {fsck.stdout}{fsck.stderr}"
    conn = connect(settings.database_path)
    try:
        assert query_one(conn, "PRAGMA integrity_check") == {"integrity_check": "ok"}
    finally:
        conn.close()
    for novel_id, head in index_heads(settings).items():
        assert head == git_head(settings, novel_id), f"index head of {novel_id} is not Git's"


class Novel:
    """A novel of one writer, with the heads its writes were answered with."""

    def __init__(self, writer: Writer, novel_id: str, chapter: dict[str, Any], head: str):
        self.writer = writer
        self.id = novel_id
        self.chapter_id = chapter["id"]
        self.chapter_path = chapter["path"]
        self.head = head
        self.acknowledged = [head]
        self.ops = 0

    @property
    def url(self) -> str:
        return f"/api/v1/novels/{self.id}"

    def sync_body(self, text: str, path: str = NOTES) -> dict[str, Any]:
        """A new operation of the novel's one device, made on the last head it was told."""
        self.ops += 1
        return {
            "device_id": "laptop",
            "op_id": f"op-{self.ops}",
            "base": self.head,
            "changes": [{"path": path, "content": text}],
        }

    async def sync(self, body: dict[str, Any]) -> tuple[int, Any]:
        status, answer = await self.writer.call("POST", self.url + "/sync", body)
        if status == 200:
            self.head = answer["head"]
            self.acknowledged.append(answer["head"])
        return status, answer

    async def edit_chapter(self, text: str) -> tuple[int, Any]:
        status, answer = await self.writer.call(
            "PATCH", f"{self.url}/chapters/{self.chapter_id}", {"content": text}
        )
        if status == 200:
            self.head = answer["head"]
            self.acknowledged.append(answer["head"])
        return status, answer

    async def assert_readable(self) -> None:
        """The novel's reads answer: files, chapters, one chapter, history, a pull."""
        for path in (
            f"{self.url}/files/novel.md",
            f"{self.url}/chapters",
            f"{self.url}/chapters/{self.chapter_id}",
            f"{self.url}/history",
            f"{self.url}/sync",
        ):
            status, answer = await self.writer.call("GET", path)
            assert status == 200, (path, status, answer)


async def new_novel(writer: Writer, title: str) -> Novel:
    status, novel = await writer.call("POST", "/api/v1/novels", {"title": title})
    assert status == 201, novel
    status, made = await writer.call(
        "POST",
        f"/api/v1/novels/{novel['id']}/chapters",
        {"title": "One", "content": "The first words.\n"},
    )
    assert status == 201, made
    result = Novel(writer, novel["id"], made["chapter"], made["head"])
    status, answer = await result.sync(result.sync_body("Notes, first.\n"))
    assert status == 200, answer
    status, answer = await result.edit_chapter("The first words, edited.\n")
    assert status == 200, answer
    return result


# -- one novel's repository on a full disk -------------------------------------------------


async def test_a_full_disk_under_one_novel_refuses_its_writes_and_loses_nothing(
    client: TestClient, settings: Settings, mounts: Mounts, tmp_path: Path
) -> None:
    ann = await sign_up(client)
    a, b = await new_novel(ann, "On a small disk"), await new_novel(ann, "Elsewhere")
    disk = move_onto_own_disk(mounts, repo_path(settings, a.id), tmp_path / "disk-a", "1m")
    filler = fill(disk)
    before = table_rows(settings.database_path), git_head(settings, a.id)

    refused = a.sync_body("Notes, written on a full disk.\n" * 200)
    status, answer = await a.sync(refused)
    assert_error(status, answer, 503, "storage_full")
    status, answer = await a.edit_chapter("A chapter edit on a full disk.\n" * 200)
    assert_error(status, answer, 503, "storage_full")

    assert (table_rows(settings.database_path), git_head(settings, a.id)) == before
    # The pack files whose writes failed are gone too, not left for maintenance.
    assert not list((repo_path(settings, a.id) / "objects" / "pack").glob("tmp*"))
    await a.assert_readable()
    status, answer = await b.sync(b.sync_body("The other novel writes on.\n"))
    assert status == 200, answer

    filler.unlink()
    status, answer = await a.sync(refused)
    assert status == 200 and answer["status"] == "fast_forward", answer
    status, answer = await a.edit_chapter("A chapter edit once there is room.\n")
    assert status == 200, answer
    await a.assert_readable()
    assert_intact(settings, {a.id: a.acknowledged, b.id: b.acknowledged})


# -- a repository made read-only ------------------------------------------------------------


async def test_a_read_only_repository_refuses_its_writes_until_writable_again(
    client: TestClient, settings: Settings, mounts: Mounts, tmp_path: Path
) -> None:
    ann = await sign_up(client)
    a, b = await new_novel(ann, "Read-only for a while"), await new_novel(ann, "Elsewhere")
    disk = move_onto_own_disk(mounts, repo_path(settings, a.id), tmp_path / "disk-a", "1m")
    mounts.remount(disk, "ro")
    before = table_rows(settings.database_path), git_head(settings, a.id)

    refused = a.sync_body("Notes on a read-only disk.\n")
    status, answer = await a.sync(refused)
    assert_error(status, answer, 503, "storage_read_only")
    status, answer = await a.edit_chapter("A chapter edit on a read-only disk.\n")
    assert_error(status, answer, 503, "storage_read_only")

    assert (table_rows(settings.database_path), git_head(settings, a.id)) == before
    # The pack files whose writes failed are gone too, not left for maintenance.
    assert not list((repo_path(settings, a.id) / "objects" / "pack").glob("tmp*"))
    await a.assert_readable()
    status, answer = await b.sync(b.sync_body("The other novel writes on.\n"))
    assert status == 200, answer

    mounts.remount(disk, "rw")
    status, answer = await a.sync(refused)
    assert status == 200 and answer["status"] == "fast_forward", answer
    status, answer = await a.edit_chapter("A chapter edit once writable.\n")
    assert status == 200, answer
    assert_intact(settings, {a.id: a.acknowledged, b.id: b.acknowledged})


# -- a corrupt loose object -------------------------------------------------------------------


def unpack_all(path: Path) -> None:
    """Every object of the repository as a loose file, as servers before packed writes
    left them (`tests/test_repository.py` damages a pack)."""
    for pack in (path / "objects" / "pack").glob("*.pack"):
        data = pack.read_bytes()
        pack.with_suffix(".idx").unlink()
        pack.unlink()
        git = ["git", f"--git-dir={path}", "unpack-objects", "-q"]
        subprocess.run(git, input=data, check=True, env=GIT_ENV)


def damage_chapter(settings: Settings, novel: Novel) -> tuple[str, Path, bytes]:
    """Overwrite the loose object of the novel's chapter at its head with garbage; returns
    the blob id, its file and the intact bytes (the backup to restore)."""
    path = repo_path(settings, novel.id)
    unpack_all(path)
    blob = str(pygit2.Repository(str(path)).revparse_single(f"main:{novel.chapter_path}").id)
    loose = path / "objects" / blob[:2] / blob[2:]
    assert loose.is_file(), f"{novel.chapter_path} of {novel.id} is not a loose object"
    intact = loose.read_bytes()
    loose.chmod(0o644)
    loose.write_bytes(b"this is not a Git object\n")
    return blob, loose, intact


async def clone(client: TestClient, writer: Writer, novel_id: str, into: Path) -> int:
    """`git clone` of a novel over the server's smart HTTP; its exit code. A clone that
    hangs is killed after a minute and fails the test (a guard, not a measurement)."""
    url = str(client.make_url(f"/git/{novel_id}.git"))
    url = url.replace("http://", f"http://writer:{writer.token}@", 1)
    process = await asyncio.create_subprocess_exec(
        "git", "clone", "--quiet", url, str(into), env=GIT_ENV,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        return await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"git clone of {novel_id} hung")


async def test_a_corrupt_object_is_a_clear_error_for_its_novel_and_writes_nothing(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    ann = await sign_up(client)
    a, b = await new_novel(ann, "Damaged"), await new_novel(ann, "Elsewhere")
    blob, loose, intact = damage_chapter(settings, a)
    before = table_rows(settings.database_path), git_head(settings, a.id)
    refused = a.sync_body("An edit of the damaged chapter.\n", path=a.chapter_path)
    caplog.set_level(logging.ERROR, logger="openwrite.http")
    caplog.set_level(logging.WARNING, logger="openwrite.git")
    caplog.clear()

    needs_the_object = [
        ("GET", f"{a.url}/chapters/{a.chapter_id}", None),
        ("GET", f"{a.url}/files/{a.chapter_path}", None),
        ("GET", f"{a.url}/sync", None),
        ("GET", f"{a.url}/diff?from={a.acknowledged[0]}", None),
        ("PATCH", f"{a.url}/chapters/{a.chapter_id}", {"content": "Edited while damaged.\n"}),
        ("POST", f"{a.url}/sync", refused),
    ]
    for method, path, body in needs_the_object:
        status, answer = await ann.call(method, path, body)
        assert_error(status, answer, 500, "repository_corrupt")
        assert a.id in answer["error"]["message"] and blob in answer["error"]["message"], answer
        assert answer["error"]["details"]["object"] == blob, answer

    assert (table_rows(settings.database_path), git_head(settings, a.id)) == before
    logged = [r.getMessage() for r in caplog.records if r.name == "openwrite.http"]
    assert len(logged) == len(needs_the_object), logged
    for line, (method, path, _body) in zip(logged, needs_the_object, strict=True):
        assert line.startswith(f"{method} {path.split('?')[0]} failed: "), line
        assert a.id in line and blob in line and "damaged" in line, line
    # The index (chapter list, history) and the files the object is not part of still answer.
    for path in (f"{a.url}/chapters", f"{a.url}/history", f"{a.url}/files/novel.md"):
        status, answer = await ann.call("GET", path)
        assert status == 200, (path, status, answer)
    assert await clone(client, ann, a.id, tmp_path / "clone-a") != 0
    git_log = [r.getMessage() for r in caplog.records if r.name == "openwrite.git"]
    assert any("corruption" in line for line in git_log), git_log
    await b.assert_readable()
    status, answer = await b.sync(b.sync_body("The other novel writes on.\n"))
    assert status == 200, answer
    assert await clone(client, ann, b.id, tmp_path / "clone-b") == 0

    loose.write_bytes(intact)  # restored from a backup
    loose.chmod(0o444)
    await a.assert_readable()
    status, answer = await a.sync(refused)
    assert status == 200 and answer["status"] == "fast_forward", answer
    assert_intact(settings, {a.id: a.acknowledged, b.id: b.acknowledged})


async def test_a_missing_object_is_reported_like_a_corrupt_one(
    client: TestClient, settings: Settings
) -> None:
    ann = await sign_up(client)
    novel = await new_novel(ann, "Lost an object")
    blob, loose, _intact = damage_chapter(settings, novel)
    loose.unlink()

    for path in (f"{novel.url}/chapters/{novel.chapter_id}", f"{novel.url}/sync"):
        status, answer = await ann.call("GET", path)
        assert_error(status, answer, 500, "repository_corrupt")
        assert answer["error"]["details"] == {
            "novel_id": novel.id,
            "object": blob,
            "reason": "object missing",
        }, answer


# -- the whole data directory on a full disk ---------------------------------------------------


def empty_the_wal(settings: Settings) -> None:
    """Checkpoint SQLite's WAL into the database and truncate it, so the next write must
    grow the WAL file: on a full disk it cannot reuse room the file already had."""
    conn = connect(settings.database_path)
    try:
        done = query_one(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    assert done is not None and done["busy"] == 0, done
    assert os.path.getsize(f"{settings.database_path}-wal") == 0


async def server_on_small_disk(
    mounts: Mounts, aiohttp_client, tmp_path: Path
) -> tuple[Settings, TestClient, Writer]:
    """A server whose whole data directory is a 4 MB tmpfs, and a writer signed up on it."""
    data = mounts.tmpfs(tmp_path / "data", "4m")
    settings = Settings(data_dir=data, scrypt_n=2**12)
    client = await aiohttp_client(create_app(settings))
    return settings, client, await sign_up(client)


async def test_a_full_data_directory_refuses_writes_keeps_reads_and_loses_nothing(
    mounts: Mounts, aiohttp_client, tmp_path: Path
) -> None:
    settings, client, ann = await server_on_small_disk(mounts, aiohttp_client, tmp_path)
    data = settings.data_dir
    a, b = await new_novel(ann, "On a full disk"), await new_novel(ann, "Also on it")
    empty_the_wal(settings)
    filler = fill(data)
    before = table_rows(settings.database_path), index_heads(settings)

    refused = a.sync_body("Notes, written on a full disk.\n")
    status, answer = await a.sync(refused)
    assert_error(status, answer, 503, "storage_full")  # Git's objects do not fit
    status, answer = await a.edit_chapter("A chapter edit on a full disk.\n")
    assert_error(status, answer, 503, "storage_full")
    token = {"name": "backup", "scopes": ["read"]}
    status, answer = await ann.call("POST", "/api/v1/tokens", token)
    assert_error(status, answer, 503, "storage_full")  # SQLite's WAL cannot grow
    status, answer = await ann.call("POST", "/api/v1/orgs", {"name": "Press", "slug": "press"})
    assert_error(status, answer, 503, "storage_full")

    assert (table_rows(settings.database_path), index_heads(settings)) == before
    assert {n: git_head(settings, n) for n in (a.id, b.id)} == before[1]
    for novel in (a, b):
        await novel.assert_readable()
    for path in ("/api/v1/me", "/api/v1/novels", "/healthz"):
        status, answer = await ann.call("GET", path)
        assert status == 200, (path, status, answer)

    filler.unlink()
    status, answer = await a.sync(refused)
    assert status == 200 and answer["status"] == "fast_forward", answer
    status, answer = await a.edit_chapter("A chapter edit once there is room.\n")
    assert status == 200, answer
    status, answer = await ann.call("POST", "/api/v1/tokens", token)
    assert status == 201, answer
    status, answer = await b.sync(b.sync_body("The other novel writes again.\n"))
    assert status == 200, answer
    assert_intact(settings, {a.id: a.acknowledged, b.id: b.acknowledged})


async def test_the_openapi_document_lists_the_fault_statuses_of_the_routes_that_meet_them(
    client: TestClient,
) -> None:
    document = await (await client.get("/api/v1/openapi.json")).json()
    novel = "/api/v1/novels/{novel_id}"
    for method, path, statuses in [
        ("post", novel + "/sync", {"500", "503"}),
        ("get", novel + "/sync", {"500"}),
        ("patch", novel + "/chapters/{item_id}", {"500", "503"}),
        ("get", novel + "/chapters/{item_id}", {"500"}),
        ("get", novel + "/diff", {"500"}),
        ("post", "/api/v1/tokens", {"503"}),
        ("post", "/api/v1/orgs", {"503"}),
    ]:
        responses = document["paths"][path][method]["responses"]
        assert statuses <= set(responses), (method, path, sorted(responses))


# -- faults this suite found, fixed since ------------------------------------------------------


async def test_reads_on_a_full_disk_answer_when_the_token_stamp_is_due(
    mounts: Mounts, aiohttp_client, tmp_path: Path
) -> None:
    settings, client, ann = await server_on_small_disk(mounts, aiohttp_client, tmp_path)
    data = settings.data_dir
    novel = await new_novel(ann, "Read on a full disk")
    conn = connect(settings.database_path)
    try:
        conn.execute("UPDATE session SET last_used_at = '2000-01-01T00:00:00.000Z'")
    finally:
        conn.close()
    empty_the_wal(settings)
    fill(data)

    await novel.assert_readable()


async def test_a_sync_the_database_refused_after_its_commit_is_indexed_when_resent(
    mounts: Mounts, aiohttp_client, tmp_path: Path
) -> None:
    data = mounts.tmpfs(tmp_path / "data", "4m")
    repositories = tmp_path / "repositories"  # on a disk with room: only SQLite is full
    repositories.mkdir()
    (data / "novels").mkdir()
    mounts.bind(repositories, data / "novels")
    settings = Settings(data_dir=data, scrypt_n=2**12)
    client = await aiohttp_client(create_app(settings))
    ann = await sign_up(client)
    novel = await new_novel(ann, "Committed, not recorded")
    empty_the_wal(settings)
    filler = fill(data)
    refused = novel.sync_body("A new chapter.\n", path="chapters/late.md")
    status, answer = await novel.sync(refused)
    assert_error(status, answer, 503, "storage_full")
    assert git_head(settings, novel.id) != novel.head, "Git took the commit before SQLite"

    filler.unlink()
    status, answer = await novel.sync(refused)
    assert status == 200, answer
    status, chapters = await ann.call("GET", f"{novel.url}/chapters")
    assert status == 200 and "chapters/late.md" in [c["path"] for c in chapters["items"]]
    assert_intact(settings, {novel.id: novel.acknowledged})


async def test_a_first_sync_to_a_damaged_novel_moves_no_head(
    client: TestClient, settings: Settings
) -> None:
    ann = await sign_up(client)
    novel = await new_novel(ann, "Damaged")
    damage_chapter(settings, novel)
    before = table_rows(settings.database_path), git_head(settings, novel.id)
    change = {"path": "chapters/two.md", "content": "From a new phone.\n"}
    first = {"device_id": "new-phone", "op_id": "op-1", "base": None, "changes": [change]}

    status, answer = await ann.call("POST", f"{novel.url}/sync", first)

    assert_error(status, answer, 500, "repository_corrupt")
    assert (table_rows(settings.database_path), git_head(settings, novel.id)) == before


async def test_a_server_restarted_beside_a_damaged_ref_serves_the_other_novels(
    client: TestClient, settings: Settings
) -> None:
    ann = await sign_up(client)
    a, b = await new_novel(ann, "Damaged ref"), await new_novel(ann, "Elsewhere")
    await client.close()
    (repo_path(settings, a.id) / "refs" / "heads" / "main").write_text("not a commit id\n")
    restarted = TestClient(TestServer(create_app(settings)))
    try:
        await restarted.start_server()

        b.writer = Writer(restarted, ann.user, ann.token, ann.org)
        await b.assert_readable()
        status, answer = await b.writer.call("GET", f"{a.url}/sync")
        assert_error(status, answer, 500, "repository_corrupt")
    finally:
        await restarted.close()
