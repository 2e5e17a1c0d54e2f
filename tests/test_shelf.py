"""Repositories kept open between calls (`storage.library.Shelf`): reused while nothing
they may have mapped has gone, closed when a call fails, when the shelf is full, when a
fold or anyone else removes a pack, and when the novel is removed; and never hiding a
commit written elsewhere or damage done between two calls."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pygit2
import pytest

from server.app import create_app
from server.config import Settings
from server.state import LIBRARY
from storage import maintenance
from storage.errors import NotFound, RepositoryCorrupt
from storage.library import Library
from storage.repository import Author, NovelRepository, enable_durability
from tests.conftest import sign_up

ANN = Author("Ann Writer", "ann@example.org")
FILES = {
    "novel.md": "---\ntitle: Kept Open\n---\nA synopsis.\n",
    "chapters/one.md": "---\ntitle: One\n---\nIt began.\n",
}
NOVELS = [f"{n:026d}" for n in range(3)]


@pytest.fixture(autouse=True, scope="module")
def durable() -> None:
    enable_durability()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[NovelRepository]:
    """Every instance `NovelRepository.open` makes, in order."""
    made: list[NovelRepository] = []
    real_open = NovelRepository.open.__func__

    def recording(cls: type[NovelRepository], path: Path) -> NovelRepository:
        made.append(real_open(cls, path))
        return made[-1]

    monkeypatch.setattr(NovelRepository, "open", classmethod(recording))
    return made


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[NovelRepository]:
    """Every instance closed, in order."""
    ended: list[NovelRepository] = []
    real_close = NovelRepository.close

    def recording(self: NovelRepository) -> None:
        ended.append(self)
        real_close(self)

    monkeypatch.setattr(NovelRepository, "close", recording)
    return ended


@pytest.fixture
def library(tmp_path: Path):
    library = Library(tmp_path, keep_open=2)
    for novel_id in NOVELS:
        NovelRepository.create(library.path(novel_id), files=FILES, author=ANN, message="Start")
    yield library
    library.close()


def same(repo: NovelRepository) -> NovelRepository:
    return repo


def text_of(path: str):
    def read(repo: NovelRepository) -> str | None:
        found = repo.read_text(path)
        return None if found is None else found.text

    return read


def write(repo: NovelRepository, path: str, text: str) -> str:
    head = repo.head()
    new = repo.write_commit(parent=head, changes={path: text}, author=ANN, message="Edit")
    repo.advance_head(new, head)
    return new


def deleted_files_held(path: Path) -> list[str]:
    """Files under `path` that this process still maps or holds open after their deletion."""
    held = []
    with open("/proc/self/maps") as maps:
        held += [line for line in maps if str(path) in line and "(deleted)" in line]
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if str(path) in target and "(deleted)" in target:
            held.append(target)
    return held


async def test_a_call_gets_the_instance_the_last_one_put_back_and_a_failed_call_closes_its(
    library: Library, opened: list[NovelRepository], closed: list[NovelRepository]
) -> None:
    first = await library.run(NOVELS[0], same)
    assert await library.run(NOVELS[0], same) is first
    assert opened == [first] and closed == [] and len(library.shelf) == 1

    def failing(repo: NovelRepository) -> None:
        assert repo is first
        raise LookupError("refused")

    with pytest.raises(LookupError):
        await library.run(NOVELS[0], failing)
    assert closed == [first] and len(library.shelf) == 0
    second = await library.run(NOVELS[0], same)
    assert second is not first and opened == [first, second]
    library.close()
    assert closed == [first, second] and len(library.shelf) == 0


async def test_beyond_its_capacity_the_shelf_closes_the_least_recently_used(
    library: Library, opened: list[NovelRepository], closed: list[NovelRepository]
) -> None:
    kept = [await library.run(novel_id, same) for novel_id in NOVELS]
    assert len(library.shelf) == 2 and closed == [kept[0]]
    assert await library.run(NOVELS[2], same) is kept[2]
    assert await library.run(NOVELS[0], same) is not kept[0]
    assert closed == [kept[0], kept[1]] and len(opened) == 4


async def four_packs(library: Library, novel_id: str) -> set[Path]:
    for n in range(4):  # a pack each
        async with library.writing(novel_id):
            await library.run(novel_id, write, f"chapters/c{n}.md", f"Chapter {n}.\n")
    assert await library.run(novel_id, text_of("chapters/c0.md")) == "Chapter 0.\n"
    packs = set((library.path(novel_id) / "objects" / "pack").glob("*.pack"))
    assert len(packs) >= 4
    return packs


async def test_the_librarys_own_fold_closes_the_novels_idle_instances_at_once(
    library: Library, opened: list[NovelRepository], closed: list[NovelRepository]
) -> None:
    novel_id, path = NOVELS[0], library.path(NOVELS[0])
    await four_packs(library, novel_id)
    kept = await library.run(novel_id, same)
    other = await library.run(NOVELS[1], same)

    result = library.maintain(novel_id, force=True)
    assert result is not None and result.packs_after == 1
    assert closed == [kept] and deleted_files_held(path) == []
    assert await library.run(novel_id, text_of("chapters/c3.md")) == "Chapter 3.\n"
    assert await library.run(NOVELS[1], same) is other


async def test_after_a_fold_elsewhere_a_call_opens_afresh_and_no_deleted_pack_stays_mapped(
    library: Library, opened: list[NovelRepository], closed: list[NovelRepository]
) -> None:
    novel_id, path = NOVELS[0], library.path(NOVELS[0])
    packs = await four_packs(library, novel_id)
    kept = await library.run(novel_id, same)

    result = maintenance.repack(path, full=True)  # another server process's upkeep, say
    assert result.packs_after == 1
    assert not packs & set((path / "objects" / "pack").glob("*.pack"))
    # The kept instance still maps the folded packs until the next call gives it up.
    assert deleted_files_held(path)

    assert await library.run(novel_id, text_of("chapters/c3.md")) == "Chapter 3.\n"
    assert kept in closed and opened[-1] is not kept
    assert deleted_files_held(path) == []


async def test_a_kept_instance_reads_commits_written_elsewhere_at_once(library: Library) -> None:
    novel_id, path = NOVELS[1], library.path(NOVELS[1])
    await library.run(novel_id, same)
    elsewhere = NovelRepository.open(path)  # another process's writer, say
    try:
        for n in range(5):  # well within a second: no pack rescan may be skipped
            head = write(elsewhere, "chapters/one.md", f"Version {n}.\n")
            assert await library.run(novel_id, lambda repo: repo.head()) == head
            assert await library.run(novel_id, text_of("chapters/one.md")) == f"Version {n}.\n"
    finally:
        elsewhere.close()
    # A loose object, as `git` itself writes them.
    blob = subprocess.run(
        ["git", f"--git-dir={path}", "hash-object", "-w", "--stdin"],
        input="Written by git.\n", capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert await library.run(novel_id, lambda repo: repo._repo[blob].data) == b"Written by git.\n"


async def test_damage_between_two_calls_is_met_by_the_second(library: Library) -> None:
    novel_id, path = NOVELS[2], library.path(NOVELS[2])
    for pack in (path / "objects" / "pack").glob("*.pack"):  # every object loose
        data = pack.read_bytes()
        pack.with_suffix(".idx").unlink()
        pack.unlink()
        subprocess.run(["git", f"--git-dir={path}", "unpack-objects", "-q"], input=data)
    read = text_of("chapters/one.md")
    assert await library.run(novel_id, read) == FILES["chapters/one.md"]
    assert len(library.shelf) == 1

    blob = str(pygit2.Repository(str(path)).revparse_single("main:chapters/one.md").id)
    loose = path / "objects" / blob[:2] / blob[2:]
    loose.chmod(0o644)
    loose.write_bytes(b"this is not a Git object\n")
    with pytest.raises(RepositoryCorrupt):
        await library.run(novel_id, read)


async def test_a_removed_novel_is_not_found_and_its_kept_instances_are_closed(
    library: Library, closed: list[NovelRepository]
) -> None:
    kept = [await library.run(novel_id, same) for novel_id in NOVELS[:2]]
    assert await library.remove(NOVELS[0]) is True
    assert closed == [kept[0]] and len(library.shelf) == 1
    with pytest.raises(NotFound):
        await library.run(NOVELS[0], same)

    shutil.rmtree(library.path(NOVELS[1]))  # behind the server's back
    with pytest.raises(NotFound):
        await library.run(NOVELS[1], same)
    assert closed == kept and len(library.shelf) == 0


async def test_a_fold_during_a_call_closes_that_calls_instance_when_it_ends(
    library: Library, opened: list[NovelRepository], closed: list[NovelRepository]
) -> None:
    novel_id, path = NOVELS[0], library.path(NOVELS[0])
    await four_packs(library, novel_id)
    reading, fold_done = threading.Event(), threading.Event()

    def long_read(repo: NovelRepository) -> NovelRepository:
        assert repo.read_text("chapters/c1.md") is not None  # maps the packs
        reading.set()
        assert fold_done.wait(30)
        return repo

    call = asyncio.ensure_future(library.run(novel_id, long_read))
    assert await asyncio.to_thread(reading.wait, 30)
    result = await asyncio.to_thread(library.maintain, novel_id, force=True)
    assert result is not None and result.packs_after == 1
    assert deleted_files_held(path)  # the call in flight still maps the folded packs
    fold_done.set()
    in_flight = await call

    assert in_flight in closed and len(library.shelf) == 0
    assert deleted_files_held(path) == []
    assert await library.run(novel_id, text_of("chapters/c1.md")) == "Chapter 1.\n"


async def test_with_no_room_on_the_shelf_every_call_opens_and_closes_its_own(
    tmp_path: Path, opened: list[NovelRepository], closed: list[NovelRepository]
) -> None:
    library = Library(tmp_path, keep_open=0)
    try:
        path = library.path(NOVELS[0])
        NovelRepository.create(path, files=FILES, author=ANN, message="Start")
        opened.clear()  # the creation's own
        closed.clear()
        first = await library.run(NOVELS[0], same)
        second = await library.run(NOVELS[0], same)
        assert first is not second
        assert opened == [first, second], opened
        assert closed == [first, second], closed
    finally:
        library.close()


async def test_instances_unused_for_a_while_are_closed_and_the_others_kept(
    library: Library, closed: list[NovelRepository]
) -> None:
    old, recent = [await library.run(novel_id, same) for novel_id in NOVELS[:2]]
    entries = {repo: since for stack in library.shelf._idle.values() for repo, _, since in stack}
    between = (entries[old] + entries[recent]) / 2
    assert entries[old] < between < entries[recent]

    assert library.shelf.close_idle(0.0, now=between) == 1
    assert closed == [old] and len(library.shelf) == 1
    assert await library.run(NOVELS[1], same) is recent
    assert await library.close_idle(0.0) == 1
    assert closed == [old, recent] and len(library.shelf) == 0


async def novel_read_through_the_server(aiohttp_client, settings: Settings) -> Library:
    """A server on `settings`, and a novel made, written and read through it: the
    server's library, after those calls."""
    client = await aiohttp_client(create_app(settings))
    writer = await sign_up(client)
    status, novel = await writer.call("POST", "/api/v1/novels", {"title": "Kept Open"})
    assert status == 201, novel
    chapter = {"title": "One", "content": "It began.\n"}
    status, answer = await writer.call("POST", f"/api/v1/novels/{novel['id']}/chapters", chapter)
    assert status == 201, answer
    status, answer = await writer.call("GET", f"/api/v1/novels/{novel['id']}/files/novel.md")
    assert status == 200, answer
    return client.server.app[LIBRARY]


async def test_the_server_closes_repositories_left_unused(aiohttp_client, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", scrypt_n=2**12, repository_idle_seconds=1)
    library = await novel_read_through_the_server(aiohttp_client, settings)
    assert len(library.shelf) == 1
    for _ in range(100):  # checked every half second: closed within about 1.5 s
        if len(library.shelf) == 0:
            break
        await asyncio.sleep(0.05)
    assert len(library.shelf) == 0


async def test_with_repository_idle_seconds_0_the_server_keeps_none_open(
    aiohttp_client, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", scrypt_n=2**12, repository_idle_seconds=0)
    library = await novel_read_through_the_server(aiohttp_client, settings)
    assert library.shelf.capacity == 0 and len(library.shelf) == 0
