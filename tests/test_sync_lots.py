"""Syncs that queued for one novel while its lock was held are committed together
(`Library.run_writing_together`, `sync.engine._commit_all`): each reconciled on the head
the one before left, the ref moved once, SQLite written once. Every answer must still be
the one that sync would have had alone, a refused request fails alone, and a failure of
the shared steps fails every answer that rests on them and acknowledges nothing.

Real SQLite files and real Git repositories; the lot is made deterministic by holding
the novel's write lock while the syncs queue."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from storage.content_index import read_document
from storage.db import query
from storage.errors import Conflict, Unavailable
from storage.library import LOT_LIMIT
from storage.repository import NovelRepository, novel_lock
from storage.words import word_count
from sync import engine
from sync.engine import commit_changes
from tests.test_sync_properties import CHAPTER, Store, edit, new_novel, store

PARAGRAPHS = [f"P{n} the tide came in over the stones." for n in range(12)]
OTHER = "chapters/rocks.md"
START = "---\ntitle: Tides\nnumber: 1\nstatus: draft\n---\n" + "\n\n".join(PARAGRAPHS) + "\n"


def edited(n: int, word: str) -> str:
    """START with paragraph `n`'s "stones" replaced by `word`."""
    return START.replace(
        f"P{n} the tide came in over the stones.", f"P{n} the tide came in over the {word}."
    )


async def start_queued(s: Store, novel_id: str, calls: list[Callable[[], Awaitable[Any]]]) -> list:
    """Start every call while the novel's write lock is held, so that all of them queue,
    then let go: the tasks, the first lot taking them together."""
    async with s.library.writing(novel_id):
        tasks = [asyncio.create_task(call()) for call in calls]
        await asyncio.sleep(0.05)  # every task has queued and waits for the lock
    return tasks


async def queued_together(
    s: Store, novel_id: str, calls: list[Callable[[], Awaitable[Any]]]
) -> list:
    """`start_queued`, then every outcome in order, exceptions as values."""
    return await asyncio.gather(*await start_queued(s, novel_id, calls), return_exceptions=True)


@contextmanager
def opened(s: Store, novel_id: str) -> Iterator[NovelRepository]:
    """The novel's repository, opened apart from the library's, closed after."""
    repo = NovelRepository.open(s.library.path(novel_id))
    try:
        yield repo
    finally:
        repo.close()


def git(path: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(path), *args], check=True, capture_output=True, text=True
    ).stdout


def reflog(s: Store, novel_id: str) -> list[str]:
    return git(s.library.path(novel_id), "reflog", "show", "--format=%gs", "main").splitlines()


def sync(s: Store, novel_id: str, device: str, base: str, text: str, op: str | None = None):
    def call() -> Awaitable[dict[str, Any]]:
        return commit_changes(
            s.db, s.library, novel_id, {CHAPTER: text}, edit(s, device, op or f"{device}-1"),
            base=base,
        )  # fmt: skip

    return call


def indexed(s: Store, novel_id: str) -> tuple[str, int]:
    """SQLite's head of the novel and how many revisions it has indexed."""
    head = s.db.read_sync(lambda c: query(c, "SELECT head FROM novel WHERE id = ?", (novel_id,)))
    revisions = s.db.read_sync(
        lambda c: query(c, "SELECT COUNT(*) AS n FROM revision WHERE novel_id = ?", (novel_id,))
    )
    return head[0]["head"], revisions[0]["n"]


def repo_text(s: Store, novel_id: str, path: str) -> str | None:
    with opened(s, novel_id) as repo:
        found = repo.read_text(path)
    return found.text if found else None


def operations(s: Store, novel_id: str) -> list[str]:
    rows = s.db.read_sync(
        lambda c: query(
            c, "SELECT op_id FROM device_operation WHERE novel_id = ? ORDER BY op_id", (novel_id,)
        )
    )
    return [row["op_id"] for row in rows]


async def test_syncs_that_queued_are_committed_in_one_move_each_answered_as_alone() -> None:
    with store() as s:
        novel_id, base = await new_novel(s, START)
        moves_before = len(reflog(s, novel_id))
        words = ["sand", "shells", "weed", "rocks"]
        outcomes = await queued_together(
            s,
            novel_id,
            [sync(s, novel_id, f"d{n}", base, edited(n, w)) for n, w in enumerate(words)],
        )
        assert all(isinstance(o, dict) for o in outcomes), outcomes
        # One move of main for the four syncs, its reflog line naming each step.
        lines = reflog(s, novel_id)
        assert len(lines) == moves_before + 1
        assert lines[0].startswith("openwrite fast-forward, merge, merge, merge: ")

        with opened(s, novel_id) as repo:
            head = repo.head()
            assert outcomes[-1]["head"] == head
            # Each answer names its own head, each a step of the first-parent line.
            heads = [o["head"] for o in outcomes]
            assert len(set(heads)) == 4
            assert [o["status"] for o in outcomes] == ["fast_forward", "merged", "merged", "merged"]
            for earlier, later in zip(heads, heads[1:], strict=False):
                assert repo.revision(later).parents[0] == earlier
            # Each answer's files: what differs between its base and its head, as it is there.
            for outcome in outcomes:
                (entry,) = outcome["files"]
                assert entry["path"] == CHAPTER
                assert entry["content"] == repo.read_text(CHAPTER, outcome["head"]).text
            final = repo.read_text(CHAPTER).text
        for word in words:
            assert f"over the {word}." in final
        # SQLite holds the final head and a revision for every commit of the lot:
        # 1 fast-forward + 3 device commits + 3 merge commits.
        sqlite_head, revisions = indexed(s, novel_id)
        assert sqlite_head == head
        chapter = s.db.read_sync(
            lambda c: query(c, "SELECT word_count FROM chapter WHERE novel_id = ?", (novel_id,))
        )
        assert chapter[0]["word_count"] == word_count(read_document(final)[1])
        assert revisions == 2 + 7  # the novel's first commit, the setup sync, then the lot

        # Every operation of the lot was recorded: a replay writes nothing, same answer.
        for n, w in enumerate(words):
            again = await sync(s, novel_id, f"d{n}", base, edited(n, w))()
            assert again["head"] == outcomes[n]["head"]
            assert again["files"] == outcomes[n]["files"]
        assert len(reflog(s, novel_id)) == moves_before + 1


async def test_a_refused_sync_fails_alone_and_the_rest_of_its_lot_is_committed() -> None:
    with store() as s:
        novel_id, base = await new_novel(s, START)
        outcomes = await queued_together(
            s,
            novel_id,
            [
                sync(s, novel_id, "d0", base, edited(0, "sand")),
                sync(s, novel_id, "d1", "f" * 40, edited(1, "weed")),  # a base it never had
                sync(s, novel_id, "d2", base, edited(2, "rocks")),
            ],
        )
        assert isinstance(outcomes[1], Conflict) and outcomes[1].code == "unknown_base"
        assert outcomes[0]["status"] == "fast_forward" and outcomes[2]["status"] == "merged"
        with opened(s, novel_id) as repo:
            assert repo.head() == outcomes[2]["head"]
            final = repo.read_text(CHAPTER).text
        assert "over the sand." in final and "over the rocks." in final
        assert "over the weed." not in final
        assert indexed(s, novel_id)[0] == outcomes[2]["head"]


async def test_a_retry_queued_behind_its_first_try_gets_the_first_answer() -> None:
    with store() as s:
        novel_id, base = await new_novel(s, START)
        first = sync(s, novel_id, "d0", base, edited(0, "sand"), op="op-1")
        reused = sync(s, novel_id, "d0", base, edited(0, "weed"), op="op-1")
        outcomes = await queued_together(
            s, novel_id, [first, sync(s, novel_id, "d1", base, edited(1, "rocks")), first, reused]
        )
        assert isinstance(outcomes[0], dict) and outcomes[2] == outcomes[0]
        assert outcomes[2] is not outcomes[0]  # a copy: each caller's answer is its own
        assert isinstance(outcomes[3], Conflict) and outcomes[3].code == "op_id_reused"
        # d0's edit was committed once: one device commit from it in the history.
        log = git(s.library.path(novel_id), "log", "--format=%s%n%b", "main")
        assert log.count("Op-Id: op-1") == 1
        # And a later retry, after the lot, replays the same answer.
        assert (await first())["head"] == outcomes[0]["head"]


@pytest.mark.parametrize("step", ["ref", "sqlite"])
async def test_a_failed_shared_step_acknowledges_nothing_and_the_retries_go_through(
    step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store() as s:
        novel_id, base = await new_novel(s, START)
        head_before, revisions_before = indexed(s, novel_id)
        failures = []

        def failing(*args: Any, **kwargs: Any) -> None:
            failures.append(step)
            raise Unavailable("the disk is full", code="storage_full")

        if step == "ref":
            monkeypatch.setattr(NovelRepository, "advance_head", failing)
        else:
            monkeypatch.setattr(engine, "_record_all", failing)
        calls = [
            sync(s, novel_id, f"d{n}", base, edited(n, w)) for n, w in enumerate(["sand", "weed"])
        ]
        outcomes = await queued_together(s, novel_id, calls)
        assert failures == [step]  # one shared step for the lot
        assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
        moved = git(s.library.path(novel_id), "rev-parse", "main").strip()
        # Nothing was recorded: no index rows, no replay rows for the two operations.
        assert indexed(s, novel_id) == (head_before, revisions_before)
        assert operations(s, novel_id) == []
        if step == "ref":
            assert moved == head_before
        else:  # Git moved before SQLite failed: the lot's commits are in history
            assert moved != head_before
        monkeypatch.undo()

        # The devices retry the same operations: nothing was recorded for them, so they
        # are committed now (not replayed), and SQLite catches up on what Git holds.
        retried = [await call() for call in calls]
        with opened(s, novel_id) as repo:
            head = repo.head()
            final = repo.read_text(CHAPTER).text
        assert retried[-1]["head"] == head
        assert "over the sand." in final and "over the weed." in final
        assert indexed(s, novel_id)[0] == head
        assert git(s.library.path(novel_id), "fsck", "--no-progress").strip() == ""


async def test_a_lot_is_finished_and_answered_when_one_of_its_callers_goes_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with store() as s:
        novel_id, base = await new_novel(s, START)
        started, go_on = threading.Event(), threading.Event()
        real = engine.reconcile

        def held(*args: Any, **kwargs: Any) -> engine.Reconciled:
            started.set()
            assert go_on.wait(10)
            return real(*args, **kwargs)

        monkeypatch.setattr(engine, "reconcile", held)
        words = ["sand", "weed", "rocks"]
        calls = [sync(s, novel_id, f"d{n}", base, edited(n, w)) for n, w in enumerate(words)]
        tasks = await start_queued(s, novel_id, calls)
        assert await asyncio.to_thread(started.wait, 10)
        tasks[0].cancel()  # a caller goes away while its lot is being committed
        go_on.set()
        rest = await asyncio.gather(*tasks[1:])
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        assert [r["status"] for r in rest] == ["merged", "merged"]
        # Its sync was committed with the others; a retry of it is a replay of that.
        again = await sync(s, novel_id, "d0", base, edited(0, "sand"))()
        assert again["status"] == "fast_forward"
        assert rest[0]["head"] != again["head"]
        with opened(s, novel_id) as repo:
            assert repo.revision(rest[0]["head"]).parents[0] == again["head"]


async def test_a_caller_returns_as_soon_as_its_lot_is_done_not_after_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The answers of a lot do not wait for the lot queued behind it."""
    with store() as s:
        novel_id, base = await new_novel(s, START)
        started = {"a0": threading.Event(), "b0": threading.Event()}
        go_on = {"a0": threading.Event(), "b0": threading.Event()}
        real = engine.reconcile

        def gated(repo: Any, head: str, base_: Any, changes: Any, edit_: Any, **kw: Any) -> Any:
            device = edit_.device_id
            if device in started:
                started[device].set()
                assert go_on[device].wait(10)
            return real(repo, head, base_, changes, edit_, **kw)

        monkeypatch.setattr(engine, "reconcile", gated)
        first = await start_queued(
            s, novel_id, [sync(s, novel_id, f"a{n}", base, edited(n, "sand")) for n in range(2)]
        )
        assert await asyncio.to_thread(started["a0"].wait, 10)
        second = [
            asyncio.create_task(sync(s, novel_id, f"b{n}", base, edited(5 + n, "weed"))())
            for n in range(2)
        ]
        await asyncio.sleep(0.05)  # queued behind the running lot
        go_on["a0"].set()
        assert await asyncio.to_thread(started["b0"].wait, 10)  # the second lot is running
        answers = await asyncio.wait_for(asyncio.gather(*first), 10)
        assert [a["status"] for a in answers] == ["fast_forward", "merged"]
        assert not any(task.done() for task in second)
        go_on["b0"].set()
        assert [a["status"] for a in await asyncio.gather(*second)] == ["merged", "merged"]


async def test_a_caller_gone_before_its_lot_leaves_the_line_and_nothing_is_committed() -> None:
    with store() as s:
        novel_id, base = await new_novel(s, START)
        async with s.library.writing(novel_id):
            gone = asyncio.create_task(sync(s, novel_id, "d0", base, edited(0, "sand"))())
            kept = asyncio.create_task(sync(s, novel_id, "d1", base, edited(1, "weed"))())
            await asyncio.sleep(0.05)
            gone.cancel()
            await asyncio.sleep(0.05)
        answer = await kept
        assert gone.cancelled()
        assert answer["status"] == "fast_forward"
        log = git(s.library.path(novel_id), "log", "--format=%s", "main")
        assert "Sync from d1" in log and "Sync from d0" not in log
        assert operations(s, novel_id) == ["d1-1"]
        # A later sync of the novel does not find it in the line either.
        later = await sync(s, novel_id, "d2", answer["head"], edited(2, "rocks"))()
        assert later["status"] == "fast_forward"
        assert "Sync from d0" not in git(s.library.path(novel_id), "log", "--format=%s", "main")


async def test_a_lot_with_a_conflict_a_noop_and_a_commit_on_the_head() -> None:
    """Each kind of answer in one lot is the one it would have had alone."""
    with store() as s:
        novel_id, base = await new_novel(s, START)

        def on_head() -> Awaitable[dict[str, Any]]:  # as an item created through the API
            return commit_changes(
                s.db, s.library, novel_id, {OTHER: "---\ntitle: Rocks\n---\nRocks.\n"},
                edit(s, "d3", "d3-1"), use_head=True,
            )  # fmt: skip

        outcomes = await queued_together(
            s,
            novel_id,
            [
                sync(s, novel_id, "d0", base, edited(0, "sand")),
                sync(s, novel_id, "d1", base, edited(0, "weed")),  # the same words
                sync(s, novel_id, "d2", base, START),  # nothing to change
                on_head,
            ],
        )
        assert [o["status"] for o in outcomes] == [
            "fast_forward",
            "conflicted",
            "noop",
            "fast_forward",
        ]
        assert outcomes[2]["head"] == outcomes[1]["head"]  # the head the lot had reached
        lines = reflog(s, novel_id)
        assert lines[0].startswith("openwrite fast-forward, merge, fast-forward: ")
        (conflict,) = outcomes[1]["conflicts"]
        rows = s.db.read_sync(
            lambda c: query(
                c,
                "SELECT id, merge_commit, device_commit, theirs FROM conflict WHERE novel_id = ?",
                (novel_id,),
            )  # fmt: skip
        )
        assert [r["id"] for r in rows] == [conflict["id"]]
        assert rows[0]["merge_commit"] == outcomes[1]["head"] and rows[0]["device_commit"]
        assert "weed" in rows[0]["theirs"]
        with opened(s, novel_id) as repo:
            assert repo.revision(outcomes[3]["head"]).parents == (outcomes[1]["head"],)
            final = repo.read_text(CHAPTER).text
        assert "P0 the tide came in over the sand." in final  # the server's text kept
        assert repo_text(s, novel_id, OTHER) == "---\ntitle: Rocks\n---\nRocks.\n"
        assert indexed(s, novel_id)[0] == outcomes[3]["head"]


async def test_a_lot_takes_at_most_lot_limit_commits() -> None:
    with store() as s:
        novel_id, base = await new_novel(s, START)
        moves_before = len(reflog(s, novel_id))
        count = LOT_LIMIT + 2
        outcomes = await queued_together(
            s, novel_id, [sync(s, novel_id, f"d{n}", base, edited(n, "sand")) for n in range(count)]
        )
        assert all(isinstance(o, dict) for o in outcomes), outcomes
        lines = reflog(s, novel_id)
        assert len(lines) == moves_before + 2
        assert lines[1].count("merge") == LOT_LIMIT - 1 and lines[0].count("merge") == 2


async def test_a_writer_gone_while_its_file_lock_was_being_taken_does_not_keep_it() -> None:
    """`Library.writing` cancelled while a Git thread waits for the novel's file lock:
    once the thread has it, it is let go, or every later write would find the novel busy."""
    with store() as s:
        novel_id, base = await new_novel(s, START)
        s.library.lock_timeout = 3.0
        taken, release = threading.Event(), threading.Event()

        def elsewhere() -> None:  # another process's writer, as far as flock can tell
            with novel_lock(s.library.path(novel_id)):
                taken.set()
                release.wait(10)

        other = threading.Thread(target=elsewhere)
        other.start()
        assert await asyncio.to_thread(taken.wait, 10)

        async def write() -> None:
            async with s.library.writing(novel_id):
                pass

        waiting = asyncio.create_task(write())
        await asyncio.sleep(0.2)  # its Git thread waits in flock
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError) as gone:
            await waiting
        # Its frames stay alive (as a logged traceback would keep them): the lock may
        # not depend on the collector finalizing them.
        frames = gone.value.__traceback__
        release.set()
        await asyncio.to_thread(other.join, 10)
        await asyncio.sleep(0.2)  # the Git thread takes the lock, and lets it go
        answer = await sync(s, novel_id, "d0", base, edited(0, "sand"))()
        assert answer["status"] == "fast_forward"
        assert frames is not None
