"""The per-novel Git store against real bare repositories (and real `git`) in tmp_path."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pygit2
import pytest

from storage import maintenance
from storage.errors import Conflict, Invalid, NotFound, RepositoryCorrupt, Unavailable
from storage.maintenance import (
    fold_packs,
    geometric_split,
    loose_object_count,
    needs_repack,
    pack_count,
    repack,
)
from storage.packs import index_object_ids
from storage.repository import (
    LOCK_FILE,
    PACK_TEMPORARY_PREFIX,
    Author,
    HeadMoved,
    NovelRepository,
    _libgit2_cleanup,
    _swap_ref,
    _write_new,
    enable_durability,
    novel_lock,
)

ANN = Author("Ann Writer", "ann@example.org")
FIRST_FILES = {
    "novel.md": "---\ntitle: The Long Road\n---\nA synopsis.\n",
    "chapters/one.md": "---\ntitle: One\n---\nIt began.\n",
}


@pytest.fixture(autouse=True, scope="module")
def durable() -> None:
    # The server runs with fsync on; so do the tests, or they would prove less.
    enable_durability()


@pytest.fixture
def novel(tmp_path: Path) -> NovelRepository:
    return NovelRepository.create(
        tmp_path / "novel.git", files=FIRST_FILES, author=ANN, message="Create the novel"
    )


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", f"--git-dir={repo}", *args], capture_output=True, text=True, check=False
    )


def assert_fsck_clean(repo: Path) -> None:
    result = git(repo, "fsck", "--strict", "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stderr.lower()


def commit_and_advance(novel: NovelRepository, changes: dict[str, str | None], **kw) -> str:
    head = novel.head()
    new = novel.write_commit(parent=head, changes=changes, author=ANN, message="Edit", **kw)
    novel.advance_head(new, head)
    return new


# -- create / open / remove ------------------------------------------------------


def test_created_novel_has_one_commit_with_its_files_on_main(novel: NovelRepository) -> None:
    reopened = NovelRepository.open(novel.path)

    assert reopened.head() == novel.head()
    assert sorted(reopened.files()) == ["chapters/one.md", "novel.md"]
    assert reopened.read_text("novel.md").text == FIRST_FILES["novel.md"]
    [first] = list(reopened.log())
    assert first.parents == ()
    assert (first.author_name, first.message) == ("Ann Writer", "Create the novel")
    assert (novel.path / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert git(novel.path, "config", "receive.denyNonFastForwards").stdout.strip() == "true"
    assert git(novel.path, "config", "gc.auto").stdout.strip() == "0"
    assert (novel.path / LOCK_FILE).exists()
    assert [p.name for p in novel.path.parent.iterdir()] == ["novel.git"]
    assert_fsck_clean(novel.path)


def test_a_new_repository_carries_every_setting_and_logs_its_first_head(
    novel: NovelRepository,
) -> None:
    expected = {
        "core.logallrefupdates": "true",
        "core.fsync": "committed,derived-metadata",
        "receive.denynonfastforwards": "true",
        "receive.denydeletes": "true",
        "http.receivepack": "false",
        "gc.auto": "0",
        "user.name": "OpenWrite",
        "user.email": "server@openwrite.local",
        "core.bare": "true",
    }
    for key, value in expected.items():
        assert git(novel.path, "config", "--get", key).stdout.strip() == value, key
    # libgit2 read them too: logAllRefUpdates made it keep a reflog of the bare repository.
    reflog = (novel.path / "logs" / "refs" / "heads" / "main").read_text()
    assert reflog.endswith("\topenwrite: create\n")


def test_commits_record_the_writer_as_author_and_the_server_as_committer(
    novel: NovelRepository,
) -> None:
    written = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    new = commit_and_advance(
        novel, {"chapters/one.md": "Changed.\n"}, trailers={"Device-Id": "phone-1"}
    )
    head = novel.write_commit(
        parent=new,
        changes={"chapters/two.md": "Two.\n"},
        author=Author("Ann Writer", "ann@example.org", time=written),
        message="Add chapter two",
    )
    novel.flush()  # for the git command, another process

    shown = git(novel.path, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%aI", head).stdout.strip()
    assert shown == "Ann Writer <ann@example.org>|OpenWrite <server@openwrite.local>|" + (
        "2024-05-01T12:30:00+00:00"
    )


def test_creating_over_an_existing_novel_is_refused(novel: NovelRepository) -> None:
    with pytest.raises(Conflict) as refused:
        NovelRepository.create(novel.path, files={"novel.md": "x"}, author=ANN, message="Again")
    assert refused.value.code == "repository_exists"
    assert sorted(novel.files()) == ["chapters/one.md", "novel.md"]


def test_opening_a_missing_novel_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "plain-dir").mkdir()
    for path in (tmp_path / "nope.git", tmp_path / "plain-dir"):
        with pytest.raises(NotFound) as missing:
            NovelRepository.open(path)
        assert missing.value.code == "repository_missing"


def test_removed_novel_is_gone_and_removing_again_is_a_no_op(novel: NovelRepository) -> None:
    path = novel.path

    assert NovelRepository.remove(path) is True
    assert not path.exists()
    assert list(path.parent.iterdir()) == []
    assert NovelRepository.remove(path) is False
    with pytest.raises(NotFound):
        NovelRepository.open(path)


def test_removing_a_directory_that_is_not_a_novel_is_refused(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.md").write_text("years of work")

    with pytest.raises(NotFound):
        NovelRepository.remove(precious)
    assert (precious / "thesis.md").read_text() == "years of work"


# -- reading ---------------------------------------------------------------------


def test_read_text_gives_text_and_blob_at_any_revision(novel: NovelRepository) -> None:
    first = novel.head()
    commit_and_advance(novel, {"chapters/one.md": "Rewritten. Ünïcode ✓\n"})

    now = novel.read_text("chapters/one.md")
    before = novel.read_text("chapters/one.md", rev=first)

    assert now.text == "Rewritten. Ünïcode ✓\n"
    assert before.text == FIRST_FILES["chapters/one.md"]
    assert now.blob == novel.files()["chapters/one.md"]
    assert git(novel.path, "cat-file", "-p", now.blob).stdout == now.text
    assert novel.read_text("chapters/missing.md") is None
    assert novel.read_text("chapters") is None


def test_files_lists_nested_files_and_filters_by_prefix(novel: NovelRepository) -> None:
    commit_and_advance(novel, {"chapters/part-2/three.md": "3\n", "characters/mara.md": "Mara\n"})

    assert sorted(novel.files()) == [
        "chapters/one.md",
        "chapters/part-2/three.md",
        "characters/mara.md",
        "novel.md",
    ]
    assert sorted(novel.files(prefix="chapters/")) == [
        "chapters/one.md",
        "chapters/part-2/three.md",
    ]
    assert novel.files(prefix="locations") == {}
    assert novel.files(prefix="novel.md") == {}


@pytest.mark.parametrize("garbage", ["", "zzz", "0" * 40, "g" * 40, "abc", "HEAD", "main", None])
def test_has_commit_is_false_for_garbage(novel: NovelRepository, garbage: str) -> None:
    assert novel.has_commit(garbage) is False


def test_has_commit_is_false_for_blobs_and_trees(novel: NovelRepository) -> None:
    blob = novel.files()["novel.md"]
    tree = git(novel.path, "rev-parse", "main^{tree}").stdout.strip()

    assert novel.has_commit(novel.head()) is True
    assert novel.has_commit(novel.head().upper()) is True
    assert novel.has_commit(blob) is False
    assert novel.has_commit(tree) is False


def test_reading_an_unknown_revision_is_not_found(novel: NovelRepository) -> None:
    for read in (
        lambda: novel.files(rev="zzz"),
        lambda: novel.read_text("novel.md", rev="0" * 40),
        lambda: novel.log(rev=""),
    ):
        with pytest.raises(NotFound) as missing:
            read()
        assert missing.value.code == "revision_missing"


# -- writing ---------------------------------------------------------------------


def test_write_commit_leaves_head_alone_until_advanced(novel: NovelRepository) -> None:
    head = novel.head()
    new = novel.write_commit(
        parent=head, changes={"chapters/two.md": "Two.\n"}, author=ANN, message="Add two"
    )

    assert novel.head() == head
    assert novel.has_commit(new)
    novel.advance_head(new, head)
    assert novel.head() == new
    assert novel.read_text("chapters/two.md").text == "Two.\n"
    assert novel.read_text("novel.md").text == FIRST_FILES["novel.md"]


def test_advance_head_refuses_when_the_head_moved(novel: NovelRepository) -> None:
    base = novel.head()
    theirs = novel.write_commit(parent=base, changes={"a.md": "A"}, author=ANN, message="A")
    ours = novel.write_commit(parent=base, changes={"b.md": "B"}, author=ANN, message="B")
    novel.advance_head(theirs, base)

    with pytest.raises(HeadMoved) as moved:
        novel.advance_head(ours, base)

    assert moved.value.code == "head_moved"
    assert moved.value.status == 409
    assert moved.value.details == {"expected": base, "actual": theirs}
    assert novel.head() == theirs


def test_advance_head_refuses_to_rewrite_history(novel: NovelRepository) -> None:
    first = novel.head()
    second = commit_and_advance(novel, {"a.md": "A"})
    sideways = novel.write_commit(parent=first, changes={"b.md": "B"}, author=ANN, message="B")

    with pytest.raises(Invalid) as refused:
        novel.advance_head(sideways, second)
    assert refused.value.code == "not_fast_forward"
    assert novel.head() == second


def test_advance_head_takes_a_chain_and_a_descendant_behind_a_second_parent(
    novel: NovelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lot moves the head several merges at once: found down the first parents.
    head = novel.head()
    chain = head
    for n in range(3):
        side = novel.write_commit(parent=head, changes={f"s{n}.md": "S"}, author=ANN, message="S")
        chain = novel.write_commit(
            parent=chain, extra_parents=[side], changes={f"s{n}.md": "S"}, author=ANN,
            message="Merge",
        )  # fmt: skip
    novel.advance_head(chain, head)
    assert novel.head() == chain
    # The head reached only through a merge's second parent, past the root its first
    # parents end at: the first-parent walk alone would refuse it; libgit2's walk finds it.
    monkeypatch.setattr("storage.repository._FIRST_PARENT_STEPS", 3)
    elsewhere = novel.write_commit(parent=None, changes={"x.md": "X"}, author=ANN, message="X")
    joined = novel.write_commit(
        parent=elsewhere, extra_parents=[chain], changes={}, author=ANN, message="Join"
    )
    novel.advance_head(joined, chain)
    assert novel.head() == joined
    assert novel.is_ancestor(chain, joined) and not novel.is_ancestor(joined, chain)


def test_a_stale_ref_lock_reports_busy_and_keeps_the_head(novel: NovelRepository) -> None:
    head = novel.head()
    new = novel.write_commit(parent=head, changes={"a.md": "A"}, author=ANN, message="A")
    stale = novel.path / "refs" / "heads" / "main.lock"
    stale.touch()

    with pytest.raises(Unavailable) as busy:
        novel.advance_head(new, head)

    assert busy.value.code == "novel_busy"
    assert novel.head() == head
    stale.unlink()
    novel.advance_head(new, head)
    assert novel.head() == new


def test_moving_the_head_leaves_reflog_lines_git_reads(novel: NovelRepository) -> None:
    head = novel.head()
    first = novel.write_commit(parent=head, changes={"a.md": "A"}, author=ANN, message="A")
    novel.advance_head(first, head, reason="fast-forward")
    second = novel.write_commit(parent=first, changes={"a.md": "B"}, author=ANN, message="B")
    novel.advance_head(second, first, reason="merge")

    for ref in ("main", "HEAD"):
        shown = git(novel.path, "reflog", "show", "--format=%H %gs", ref)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[:2] == [
            f"{second} openwrite merge: {first[:12]} -> {second[:12]}",
            f"{first} openwrite fast-forward: {head[:12]} -> {first[:12]}",
        ]
    entry = (novel.path / "logs" / "refs" / "heads" / "main").read_text().splitlines()[-1]
    assert entry.startswith(f"{first} {second} OpenWrite <server@openwrite.local> ")
    assert not (novel.path / "refs" / "heads" / "main.lock").exists()
    assert_fsck_clean(novel.path)


def test_the_head_moves_from_packed_refs_too(novel: NovelRepository) -> None:
    """After `git pack-refs` the branch has no loose file: it is read from packed-refs
    and written loose again, as Git does."""
    assert git(novel.path, "pack-refs", "--all").returncode == 0
    assert not (novel.path / "refs" / "heads" / "main").exists()
    head = novel.head()
    new = novel.write_commit(parent=head, changes={"a.md": "A"}, author=ANN, message="A")

    novel.advance_head(new, head)

    assert (novel.path / "refs" / "heads" / "main").read_text() == new + "\n"
    assert git(novel.path, "rev-parse", "main").stdout.strip() == new
    assert NovelRepository.open(novel.path).head() == new


def test_the_compare_and_swap_checks_again_under_the_lock(novel: NovelRepository) -> None:
    """A writer that moved the branch between advance_head's first look and the lock:
    the swap refuses, the lock is gone, the other writer's head stays."""
    head = novel.head()
    theirs = novel.write_commit(parent=head, changes={"a.md": "T"}, author=ANN, message="T")
    ours = novel.write_commit(parent=head, changes={"a.md": "O"}, author=ANN, message="O")
    novel.flush()
    (novel.path / "refs" / "heads" / "main").write_text(theirs + "\n")

    with pytest.raises(HeadMoved) as moved:
        _swap_ref(novel.path, "refs/heads/main", head, ours, "openwrite test")

    assert moved.value.details == {"expected": head, "actual": theirs}
    assert novel.head() == theirs
    assert not (novel.path / "refs" / "heads" / "main.lock").exists()


def test_deleting_the_last_files_of_a_directory_prunes_it(novel: NovelRepository) -> None:
    commit_and_advance(novel, {"chapters/part-2/three.md": "3\n", "chapters/two.md": "2\n"})

    commit_and_advance(
        novel,
        {
            "chapters/one.md": None,
            "chapters/two.md": None,
            "chapters/part-2/three.md": None,
            "chapters/never-existed.md": None,
        },
    )

    assert sorted(novel.files()) == ["novel.md"]
    tree_listing = git(novel.path, "ls-tree", "-r", "-t", "--name-only", "main").stdout.split()
    assert tree_listing == ["novel.md"]
    assert_fsck_clean(novel.path)


def test_deleting_every_file_leaves_an_empty_tree(novel: NovelRepository) -> None:
    commit_and_advance(novel, {"novel.md": None, "chapters/one.md": None})

    assert novel.files() == {}
    assert_fsck_clean(novel.path)


def test_a_file_can_become_a_directory_in_one_change(novel: NovelRepository) -> None:
    commit_and_advance(novel, {"notes": "flat notes\n"})

    commit_and_advance(novel, {"notes": None, "notes/plot.md": "Plot\n"})

    assert novel.read_text("notes/plot.md").text == "Plot\n"
    assert "notes" not in novel.files()


@pytest.mark.parametrize(
    "path", ["", "/abs.md", "a//b.md", "../up.md", "chapters/./x.md", ".git/config", "x/.GIT"]
)
def test_paths_git_cannot_store_are_refused(novel: NovelRepository, path: str) -> None:
    with pytest.raises(Invalid) as refused:
        novel.write_commit(parent=novel.head(), changes={path: "x"}, author=ANN, message="Bad")
    assert refused.value.code == "invalid_path"


def test_writing_a_file_over_a_directory_is_refused(novel: NovelRepository) -> None:
    with pytest.raises(Invalid):
        novel.write_commit(parent=novel.head(), changes={"chapters": "x"}, author=ANN, message="B")
    with pytest.raises(Invalid):
        novel.write_commit(
            parent=novel.head(), changes={"novel.md/inner.md": "x"}, author=ANN, message="B"
        )


def test_trailers_are_git_trailers_and_come_back_in_the_log(novel: NovelRepository) -> None:
    new = commit_and_advance(
        novel, {"a.md": "A\n"}, trailers={"Device-Id": "laptop-7", "Op-Id": "op-42"}
    )

    parsed = git(novel.path, "log", "-1", "--format=%(trailers:key=Device-Id,valueonly)", new)
    assert parsed.stdout.strip() == "laptop-7"
    latest = next(novel.log())
    assert latest.id == new
    assert latest.message == "Edit"
    assert latest.trailers == {"Device-Id": "laptop-7", "Op-Id": "op-42"}
    with pytest.raises(Invalid):
        novel.write_commit(
            parent=new, changes={}, author=ANN, message="x", trailers={"Bad Key": "v"}
        )


def test_changed_paths_compare_trees_without_reading_files(novel: NovelRepository) -> None:
    first = novel.head()
    second = commit_and_advance(novel, {"chapters/one.md": "Changed\n", "chapters/two.md": "New\n"})
    third = commit_and_advance(
        novel, {"chapters/two.md": None, "novel.md": FIRST_FILES["novel.md"]}
    )

    assert novel.changed_paths(first, second) == ["chapters/one.md", "chapters/two.md"]
    assert novel.changed_paths(second, third) == ["chapters/two.md"]
    assert novel.changed_paths(first, third) == ["chapters/one.md"]
    assert novel.changed_paths(None, first) == ["chapters/one.md", "novel.md"]
    assert novel.changed_paths(third, third) == []


def test_a_merge_commit_has_the_head_and_the_device_commit_as_parents(
    novel: NovelRepository,
) -> None:
    base = novel.head()
    server = commit_and_advance(novel, {"chapters/one.md": "Server edit\n"})
    device = novel.write_commit(
        parent=base,
        changes={"chapters/two.md": "Device chapter\n"},
        author=ANN,
        message="Sync",
        trailers={"Device-Id": "phone"},
    )
    assert novel.merge_base(server, device) == base
    assert novel.is_ancestor(base, device) and not novel.is_ancestor(device, server)

    merge = novel.write_commit(
        parent=server,
        extra_parents=[device],
        changes={"chapters/two.md": "Device chapter\n"},
        author=ANN,
        message="Merge",
    )
    novel.advance_head(merge, server)

    assert next(novel.log()).parents == (server, device)
    assert novel.is_ancestor(device, merge) and novel.is_ancestor(merge, merge)
    assert novel.read_text("chapters/one.md").text == "Server edit\n"
    assert novel.read_text("chapters/two.md").text == "Device chapter\n"
    assert [r.id for r in novel.log()][0] == merge
    assert len(list(novel.log())) == 4
    assert_fsck_clean(novel.path)


def test_a_device_without_base_gets_a_root_commit_merged_into_the_head(
    novel: NovelRepository,
) -> None:
    head = novel.head()
    device = novel.write_commit(
        parent=None, changes={"chapters/offline.md": "Offline\n"}, author=ANN, message="Sync"
    )
    assert list(novel.files(device)) == ["chapters/offline.md"]
    assert novel.merge_base(head, device) is None

    merge = novel.write_commit(
        parent=head,
        extra_parents=[device],
        changes={"chapters/offline.md": "Offline\n"},
        author=ANN,
        message="Merge",
    )
    novel.advance_head(merge, head)

    assert sorted(novel.files()) == ["chapters/offline.md", "chapters/one.md", "novel.md"]
    assert_fsck_clean(novel.path)


def test_history_is_newest_first_with_parents_after_children(novel: NovelRepository) -> None:
    ids = [novel.head()] + [commit_and_advance(novel, {"a.md": str(i)}) for i in range(5)]

    assert [r.id for r in novel.log()] == list(reversed(ids))
    assert [r.id for r in novel.log(rev=ids[2])] == list(reversed(ids[:3]))


def test_the_novel_is_clonable_with_plain_git(novel: NovelRepository, tmp_path: Path) -> None:
    commit_and_advance(novel, {"characters/mara.md": "Mara\n"})
    clone = tmp_path / "clone"

    done = subprocess.run(
        ["git", "clone", "-q", str(novel.path), str(clone)], capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    assert (clone / "novel.md").read_text() == FIRST_FILES["novel.md"]
    assert (clone / "characters" / "mara.md").read_text() == "Mara\n"
    branch = subprocess.run(
        ["git", "-C", str(clone), "branch", "--show-current"], capture_output=True, text=True
    )
    assert branch.stdout.strip() == "main"


# -- the novel lock and concurrent writers ---------------------------------------


def test_novel_lock_times_out_as_busy_while_held(novel: NovelRepository) -> None:
    # flock is per open file, so a second acquisition waits even in this thread.
    with (
        novel_lock(novel.path),
        pytest.raises(Unavailable) as busy,
        novel_lock(novel.path, timeout=0.05),
    ):
        pass
    assert busy.value.code == "novel_busy"
    with novel.lock(timeout=0):
        pass


def test_novel_lock_of_a_missing_novel_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as missing, novel_lock(tmp_path / "nope.git"):
        pass
    assert missing.value.code == "repository_missing"


def _append_commits(path: str, worker: str, count: int, use_lock: bool) -> list[str]:
    """Run in a child process: the sync engine's build-then-CAS loop, `count` times."""
    enable_durability()
    novel = NovelRepository.open(Path(path))
    acknowledged = []
    for i in range(count):
        while True:
            try:
                if use_lock:
                    with novel_lock(novel.path, timeout=30):
                        acknowledged.append(_one_edit(novel, worker, i))
                else:
                    acknowledged.append(_one_edit(novel, worker, i))
                break
            except HeadMoved:
                continue
            except Unavailable as exc:
                if exc.code != "novel_busy":
                    raise
                time.sleep(0.001)
    return acknowledged


def _one_edit(novel: NovelRepository, worker: str, i: int) -> str:
    head = novel.head()
    new = novel.write_commit(
        parent=head,
        changes={f"chapters/{worker}.md": f"{worker} draft {i}\n"},
        author=Author(worker, f"{worker}@example.org"),
        message=f"{worker} edit {i}",
        trailers={"Device-Id": worker},
    )
    novel.advance_head(new, head)
    return new


@pytest.mark.parametrize("use_lock", [True, False], ids=["novel_lock", "cas_only"])
def test_two_processes_appending_50_commits_each_lose_none(
    novel: NovelRepository, use_lock: bool
) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        runs = [
            pool.apply_async(_append_commits, (str(novel.path), worker, 50, use_lock))
            for worker in ("alpha", "beta")
        ]
        acknowledged = [commit for run in runs for commit in run.get(timeout=300)]

    history = list(novel.log())
    assert len(acknowledged) == 100
    assert set(acknowledged) <= {r.id for r in history}
    assert len(history) == 101
    assert all(len(r.parents) == 1 for r in history[:-1])
    by_device = [r.trailers["Device-Id"] for r in history[:-1]]
    assert by_device.count("alpha") == 50 and by_device.count("beta") == 50
    assert novel.read_text("chapters/alpha.md").text == "alpha draft 49\n"
    assert novel.read_text("chapters/beta.md").text == "beta draft 49\n"
    assert_fsck_clean(novel.path)


# -- storage failures ------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs, so a disk can really fill up or turn read-only."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    gc.collect()  # a repository left in a cycle keeps its pack files open
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_makes_writes_unavailable_and_keeps_the_head(small_disk: Path) -> None:
    novel = NovelRepository.create(
        small_disk / "novel.git", files=FIRST_FILES, author=ANN, message="Create"
    )
    head = novel.head()
    subprocess.run(["dd", "if=/dev/zero", f"of={small_disk / 'filler'}", "bs=4k"], check=False)

    with pytest.raises(Unavailable) as full:
        big = novel.write_commit(
            parent=head, changes={"chapters/two.md": "x" * 200_000}, author=ANN, message="Big"
        )
        novel.advance_head(big, head)

    assert full.value.code == "storage_full"
    assert full.value.status == 503
    assert novel.head() == head
    (small_disk / "filler").unlink()
    assert_fsck_clean(novel.path)


def test_a_read_only_disk_makes_writes_unavailable(small_disk: Path) -> None:
    novel = NovelRepository.create(
        small_disk / "novel.git", files=FIRST_FILES, author=ANN, message="Create"
    )
    head = novel.head()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    with pytest.raises(Unavailable) as read_only:
        commit = novel.write_commit(parent=head, changes={"a.md": "A"}, author=ANN, message="A")
        novel.advance_head(commit, head)
    with pytest.raises(Unavailable) as lock_refused, novel_lock(novel.path):
        pass

    assert read_only.value.code == "storage_read_only"
    assert lock_refused.value.code == "storage_read_only"
    assert novel.head() == head
    assert novel.read_text("novel.md").text == FIRST_FILES["novel.md"]


# -- maintenance -----------------------------------------------------------------


def test_each_publish_writes_one_pack_and_repack_folds_them(novel: NovelRepository) -> None:
    before = pack_count(novel.path)
    for i in range(20):
        commit_and_advance(novel, {f"chapters/c{i}.md": f"Chapter {i}\n"})
    assert pack_count(novel.path) == before + 20
    assert loose_object_count(novel.path) == 0
    assert needs_repack(novel.path, packs=20)
    assert not needs_repack(novel.path, packs=40)

    result = repack(novel.path)

    assert result.packs_before == before + 20
    assert result.packs_after == pack_count(novel.path) == 1
    assert not needs_repack(novel.path, packs=20)
    assert len(list(novel.log())) == 21
    assert novel.read_text("chapters/c7.md").text == "Chapter 7\n"
    assert_fsck_clean(novel.path)


def _packs(path: Path) -> dict[str, list[str]]:
    """Each pack of the repository (by name) and the ids of the objects it holds."""
    folder = path / "objects" / "pack"
    return {index.stem: index_object_ids(index.read_bytes()) for index in folder.glob("pack-*.idx")}


@pytest.mark.parametrize(
    ("sizes", "folded"),
    [
        ([3] * 16 + [60_000], 16),  # a long history's pack stays, the syncs' packs fold
        ([1, 2, 4, 8, 16], 0),  # already a progression: nothing to do
        ([4, 5], 2),
        ([1, 1, 3, 100], 3),  # the 3 would be outgrown by the folded pack: folded too
        ([5], 0),
        ([], 0),
    ],
)
def test_the_packs_folded_are_those_git_repack_geometric_would_fold(
    sizes: list[int], folded: int
) -> None:
    assert geometric_split(sizes) == folded


def test_a_fold_rewrites_only_the_small_packs_and_keeps_every_object(
    novel: NovelRepository,
) -> None:
    for i in range(30):
        commit_and_advance(novel, {f"chapters/c{i}.md": f"Chapter {i}\n" * 40})
    repack(novel.path, full=True)
    (history,) = _packs(novel.path)
    for i in range(12):
        commit_and_advance(novel, {"chapters/c1.md": f"Chapter 1, draft {i}\n" * 40})
    head = novel.head()
    unpublished = novel.write_commit(
        parent=head, changes={"chapters/late.md": "Late\n"}, author=ANN, message="In flight"
    )
    novel.flush()  # written, not reachable from any ref yet
    before = _packs(novel.path)
    assert len(before) == 14

    assert fold_packs(novel.path) == 13

    after = _packs(novel.path)
    assert len(after) == 2 and history in after  # the history's pack is not rewritten
    assert after[history] == before[history]
    (folded,) = set(after) - {history}
    small = {oid for name, ids in before.items() if name != history for oid in ids}
    assert set(after[folded]) == small  # every object of the small packs, and only those
    folder = novel.path / "objects" / "pack"
    assert not [f for f in os.listdir(folder) if f.startswith(".tmp")]
    verified = git(novel.path, "verify-pack", str(folder / f"{folded}.idx"))
    assert verified.returncode == 0, verified.stderr
    assert pygit2.Repository(str(novel.path)).get(unpublished) is not None
    novel.advance_head(unpublished, head)
    assert NovelRepository.open(novel.path).read_text("chapters/late.md").text == "Late\n"
    assert_fsck_clean(novel.path)
    assert fold_packs(novel.path) == 0  # two packs in progression: nothing more to fold


def test_a_fold_deltifies_each_chapter_against_its_own_versions_as_git_repack_does(
    novel: NovelRepository, tmp_path: Path
) -> None:
    """Chapters of about the same size: versions of one chapter must be delta'd against
    each other, not against other chapters, or the novel takes several times the disk."""
    rng = random.Random(7)
    words = [f"{a}{b}" for a in "bcdfghklmnprstvz" for b in ("a", "e", "io", "ou", "ur")]
    chapters = {
        f"chapters/c{n}.md": " ".join(rng.choice(words) for _ in range(1500)) + "\n"
        for n in range(8)
    }
    for n in range(48):
        path = f"chapters/c{n % 8}.md"
        chapters[path] = chapters[path].replace(" ", f" {rng.choice(words)}{n} ", 1)
        commit_and_advance(novel, {path: chapters[path]})
    by_git = tmp_path / "by-git.git"
    shutil.copytree(novel.path, by_git)
    git(by_git, "repack", "--geometric=2", "-d", "-q")

    assert fold_packs(novel.path) > 40

    def pack_bytes(repo: Path) -> int:
        return sum(f.stat().st_size for f in (repo / "objects" / "pack").glob("*.pack"))

    assert pack_count(novel.path) == pack_count(by_git) == 1
    assert pack_bytes(novel.path) <= 1.1 * pack_bytes(by_git)
    assert_fsck_clean(novel.path)


def test_a_fold_whose_pack_objects_leaves_no_pack_deletes_nothing(
    novel: NovelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        commit_and_advance(novel, {f"chapters/c{i}.md": f"Chapter {i}\n"})
    before = _packs(novel.path)
    real_run_git = maintenance._run_git

    def no_pack(path: Path, args: list[str], timeout: float, stdin: str | None = None) -> str:
        if args[0] == "pack-objects":
            return "\n"  # as if it had written nothing
        return real_run_git(path, args, timeout, stdin)

    monkeypatch.setattr(maintenance, "_run_git", no_pack)

    with pytest.raises(Unavailable) as failed:
        fold_packs(novel.path)

    assert failed.value.code == "maintenance_failed"
    assert _packs(novel.path) == before
    assert_fsck_clean(novel.path)


def test_a_fold_puts_the_new_index_in_place_last_and_deletes_old_packs_after(
    novel: NovelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader finds a pack by its index: the index comes last, once the pack (and the
    reverse index Git may write) is there, and the folded packs go only after that."""
    assert git(novel.path, "config", "pack.writeReverseIndex", "true").returncode == 0
    for i in range(5):
        commit_and_advance(novel, {f"chapters/c{i}.md": f"Chapter {i}\n"})
    steps: list[tuple[str, str]] = []
    real_rename, real_unlink = Path.rename, Path.unlink

    def rename(self: Path, target: Path) -> Path:
        steps.append(("rename", Path(target).name))
        return real_rename(self, target)

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.exists():
            steps.append(("unlink", self.name))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(Path, "unlink", unlink)
    old = set(_packs(novel.path))

    assert fold_packs(novel.path) == 6

    renamed = [name for step, name in steps if step == "rename"]
    assert [Path(name).suffix for name in renamed] == [".pack", ".rev", ".idx"]
    deleted = [name for step, name in steps if step == "unlink"]
    assert len(deleted) == 6 * 2  # each an index and a pack (ours have no reverse index)
    assert steps.index(("rename", renamed[-1])) < steps.index(("unlink", deleted[0]))
    for stem in old:  # each folded pack: its index gone before its pack
        assert deleted.index(f"{stem}.idx") < deleted.index(f"{stem}.pack")
    monkeypatch.undo()
    assert_fsck_clean(novel.path)


def test_repack_packs_loose_objects_an_older_server_left(novel: NovelRepository) -> None:
    raw = pygit2.Repository(str(novel.path))
    loose = [raw.create_blob(f"Loose {i}\n".encode()) for i in range(30)]
    assert loose_object_count(novel.path) == 30
    assert needs_repack(novel.path, threshold=30)

    result = repack(novel.path)

    assert result.loose_before == 30
    assert result.loose_after == loose_object_count(novel.path) == 0
    assert all(raw.get(oid) is not None for oid in loose)  # unreachable, and kept
    assert_fsck_clean(novel.path)


def test_a_pack_left_half_written_is_passed_over_and_cleared_by_maintenance(
    novel: NovelRepository,
) -> None:
    """A crash mid-write leaves a temporary file, or a pack whose index never got its
    name; neither is read, and the repository works on."""
    folder = novel.path / "objects" / "pack"
    stale = folder / f"{PACK_TEMPORARY_PREFIX}abc123"
    stale.write_bytes(b"PACK\0\0\0\2")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = folder / f"{PACK_TEMPORARY_PREFIX}def456"  # a write that may still be running
    fresh.write_bytes(b"PACK")
    git_left = [folder / "tmp_pack_Xy12ab", folder / "tmp_idx_Xy12ab"]  # a killed repack's
    for left in git_left:
        left.write_bytes(b"half a pack")
        os.utime(left, (old, old))
    orphan = folder / ("pack-" + "1" * 40 + ".pack")
    orphan.write_bytes(b"PACK\0\0\0\2\0\0\0\1 cut short")
    packs = pack_count(novel.path)

    commit_and_advance(novel, {"chapters/after.md": "After the crash.\n"})
    assert NovelRepository.open(novel.path).read_text("chapters/after.md").text == (
        "After the crash.\n"
    )
    assert pack_count(novel.path) == packs + 1  # the orphan is not counted
    repack(novel.path)

    assert not stale.exists() and not any(left.exists() for left in git_left)
    assert fresh.exists()
    fresh.unlink()
    orphan.unlink()
    assert_fsck_clean(novel.path)


def test_repack_keeps_unpublished_commits_of_a_sync_in_flight(novel: NovelRepository) -> None:
    head = novel.head()
    pending = novel.write_commit(
        parent=head, changes={"chapters/late.md": "Late\n"}, author=ANN, message="In flight"
    )

    repack(novel.path)
    repack(novel.path, full=True)

    novel.advance_head(pending, head)
    assert novel.read_text("chapters/late.md").text == "Late\n"
    assert_fsck_clean(novel.path)


def test_repacking_while_another_process_writes_loses_nothing(novel: NovelRepository) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        run = pool.apply_async(_append_commits, (str(novel.path), "gamma", 60, True))
        repacks = 0
        while not run.ready() or repacks == 0:
            repack(novel.path, full=repacks % 2 == 1)
            repacks += 1
        acknowledged = run.get(timeout=300)

    assert set(acknowledged) <= {r.id for r in novel.log()}
    assert len(list(novel.log())) == 61
    assert_fsck_clean(novel.path)


def test_a_second_repack_at_the_same_time_is_skipped(novel: NovelRepository) -> None:
    import fcntl

    from storage.maintenance import MAINTENANCE_LOCK_FILE

    fd = os.open(novel.path / MAINTENANCE_LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert repack(novel.path).skipped is True
    finally:
        os.close(fd)
    assert repack(novel.path).skipped is False


# -- cost ------------------------------------------------------------------------


def test_cost_of_one_durable_commit_is_printed(novel: NovelRepository) -> None:
    rounds = 200
    started = time.perf_counter()
    for i in range(rounds):
        commit_and_advance(novel, {"chapters/one.md": f"Draft {i}\n" * 50})
    elapsed = time.perf_counter() - started

    print(f"\nwrite_commit+advance_head with fsync: {elapsed / rounds * 1000:.2f} ms average")
    assert len(list(novel.log())) == rounds + 1


# -- durability: what is fsynced -------------------------------------------------------


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path made durable, in order, on any thread: each os.fsync is called on, and
    each file opened with O_SYNC (every write to it durable when it returns). The real
    calls still run."""
    seen: list[Path] = []
    real_fsync, real_open = os.fsync, os.open

    def recording_fsync(fd: int) -> None:
        seen.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def recording_open(path, flags, *args, **kwargs):  # noqa: ANN001, ANN202
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_SYNC == os.O_SYNC:
            seen.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        return fd

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "open", recording_open)
    return seen


def test_a_pack_file_is_written_read_only_and_synced_into_a_folder_made_if_missing(
    tmp_path: Path, fsynced: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "objects" / "pack"
    (tmp_path / "objects").mkdir()
    taken = folder / f"{PACK_TEMPORARY_PREFIX}{1:016x}"
    # The first name drawn three times: before the folder is made, after, and once taken.
    draws = iter([1, 1, 1, 2, 3])
    monkeypatch.setattr("storage.repository.random.getrandbits", lambda _bits: next(draws))

    first = _write_new(folder, b"pack bytes")
    second = _write_new(folder, b"index bytes")

    assert first == taken and second == folder / f"{PACK_TEMPORARY_PREFIX}{2:016x}"
    assert (first.read_bytes(), second.read_bytes()) == (b"pack bytes", b"index bytes")
    assert all(p.stat().st_mode & 0o777 == 0o444 for p in (first, second))
    assert fsynced == [first, second]  # each opened with O_SYNC: durable on return
    with pytest.raises(FileNotFoundError):  # no objects/ at all: not made up
        _write_new(tmp_path / "gone" / "pack", b"x")


def test_a_commit_is_kept_until_published_then_written_as_one_synced_pack(
    novel: NovelRepository, fsynced: list[Path]
) -> None:
    """The server's fsyncs replace libgit2's: the commits written since the last flush
    go to disk as one pack and its index, each written durably (O_SYNC) under its
    temporary name before it is renamed, then objects/pack/ itself, all before
    advance_head moves the ref (the new value written durably in refs/heads/main.lock
    before it is renamed, then refs/heads/)."""
    folder = novel.path / "objects" / "pack"
    packs_before = set(folder.iterdir())
    head = novel.head()
    commit = novel.write_commit(
        parent=head,
        changes={"chapters/new-one.md": "A new chapter.\n", "locations/port.md": "Port.\n"},
        author=ANN,
        message="Two new files in two folders",
    )
    merge = novel.write_commit(
        parent=head, extra_parents=[commit], changes={"chapters/one.md": "Merged.\n"},
        author=ANN, message="A merge on top of a commit not yet on disk",
    )  # fmt: skip
    assert set(folder.iterdir()) == packs_before and not fsynced  # kept in memory

    novel.advance_head(merge, head)

    written = set(folder.iterdir()) - packs_before
    assert sorted(p.suffix for p in written) == [".idx", ".pack"]
    assert all(p.stat().st_mode & 0o777 == 0o444 for p in written)
    temporaries = [p for p in fsynced if p.name.startswith(PACK_TEMPORARY_PREFIX)]
    assert len(temporaries) == 2 and all(p.parent == folder for p in temporaries)
    assert fsynced[2] == folder  # after both files, before the ref
    # The new value synced under the lock's name, before the rename; then the folder.
    assert fsynced[3:] == [novel.path / "refs/heads/main.lock", novel.path / "refs/heads"]
    index = next(p for p in written if p.suffix == ".idx")
    shown = git(novel.path, "verify-pack", "-v", str(index))
    # three blobs; chapters/ twice, locations/, two roots; two commits
    assert shown.returncode == 0 and "non delta: 10 objects" in shown.stdout, shown.stdout
    assert_fsck_clean(novel.path)


def test_a_read_sees_commits_not_yet_flushed(novel: NovelRepository) -> None:
    """Any read through libgit2 writes what is kept first, so it finds it."""
    head = novel.head()
    commit = novel.write_commit(
        parent=head, changes={"chapters/kept.md": "Kept.\n"}, author=ANN, message="Kept"
    )
    assert novel.has_commit(commit)
    assert novel.read_text("chapters/kept.md", commit).text == "Kept.\n"
    assert novel.changed_paths(head, commit) == ["chapters/kept.md"]
    assert NovelRepository.open(novel.path).has_commit(commit)  # on disk now


def test_a_closed_repository_writes_what_it_kept(novel: NovelRepository) -> None:
    head = novel.head()
    commit = novel.write_commit(
        parent=head, changes={"chapters/kept.md": "Kept.\n"}, author=ANN, message="Kept"
    )
    novel.close()
    assert NovelRepository.open(novel.path).has_commit(commit)


def test_a_new_repository_is_synced_whole_before_it_is_renamed_into_place(
    tmp_path: Path, fsynced: list[Path]
) -> None:
    created = NovelRepository.create(
        tmp_path / "whole.git", files=FIRST_FILES, author=ANN, message="Create"
    )
    staging = {p for p in fsynced if p.parent == tmp_path and p.name.startswith(".whole.git")}
    assert len(staging) == 1  # synced while it was still the staging directory
    root = staging.pop()
    on_disk = {p.relative_to(created.path) for p in created.path.rglob("*")}
    synced = {p.relative_to(root) for p in fsynced if p.is_relative_to(root) and p != root}
    assert on_disk <= synced, sorted(on_disk - synced)
    assert fsynced[-1] == tmp_path  # the rename itself


# -- releasing a repository -------------------------------------------------------------


def packs_held(path: Path) -> set[str]:
    """The files of the repository's pack folder this process has mapped or open."""
    folder = str(path / "objects" / "pack")
    with open("/proc/self/maps", encoding="utf-8") as maps:
        held = {line.split(maxsplit=5)[5].strip() for line in maps if folder in line}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # a descriptor closed meanwhile
            if (target := os.readlink(f"/proc/self/fd/{fd}")).startswith(folder):
                held.add(target)
    return held


@pytest.mark.parametrize("gil_free", [True, False], ids=["through ctypes", "pygit2 alone"])
def test_a_closed_repository_lets_go_of_libgit2_at_once_and_stays_usable(
    novel: NovelRepository, gil_free: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pygit2's Repository sits in a reference cycle: without `close` its object database
    and caches wait for a full garbage collection. Its packs are let go whether libgit2's
    cleanup could be called without the GIL or only through pygit2's `free`."""
    called: list[int] = []
    real = _libgit2_cleanup()
    assert real is not None

    def recording(pointer: int) -> int:
        called.append(pointer)
        return real(pointer)

    chosen = recording if gil_free else None
    monkeypatch.setattr("storage.repository._libgit2_cleanup", lambda: chosen)
    head = novel.head()
    text = novel.read_text("novel.md", head)
    assert text is not None
    assert packs_held(novel.path)
    novel.close()
    assert not packs_held(novel.path)
    assert len(called) == (1 if gil_free else 0)
    # Usable after: libgit2 opens again what it needs.
    assert novel.read_text("novel.md", head) == text
    assert novel.head() == head
    commit_and_advance(novel, {"chapters/after.md": "Written after a close.\n"})
    assert novel.read_text("chapters/after.md") is not None
    assert_fsck_clean(novel.path)


def test_libgit2s_cleanup_called_without_the_gil_lets_go_of_the_packs(
    novel: NovelRepository,
) -> None:
    """What `close` calls through ctypes is the cleanup pygit2's `free` runs with the GIL
    held: alone, it unmaps and closes the packs, and the repository reads on after."""
    cleanup = _libgit2_cleanup()
    assert cleanup is not None, "libgit2 not found in this process's maps"
    git = pygit2.Repository(str(novel.path))
    blob = git.revparse_single("HEAD:novel.md")
    assert packs_held(novel.path)

    assert cleanup(int.from_bytes(git._pointer, sys.byteorder)) == 0

    assert not packs_held(novel.path)
    assert git[blob.id].data.decode() == FIRST_FILES["novel.md"]
    git.free()


def test_an_object_file_left_empty_by_a_crash_does_not_block_the_same_text_again(
    novel: NovelRepository,
) -> None:
    """A power cut between writing a loose object and flushing it (libgit2's way, before
    commits were written as packs) can leave an empty file under the object's name. A
    device that never got its answer sends the same text again: it must be saved and
    readable. The pack holding it is read first, by libgit2 and by Git; repacking
    removes the empty file."""
    text = "---\ntitle: Two\n---\nSent twice, answered once.\n"
    blob = str(pygit2.hash(text.encode()))
    loose = novel.path / "objects" / blob[:2] / blob[2:]
    loose.parent.mkdir(exist_ok=True)
    loose.write_bytes(b"")

    commit = commit_and_advance(novel, {"chapters/two.md": text})

    assert NovelRepository.open(novel.path).read_text("chapters/two.md", commit).text == text
    assert git(novel.path, "cat-file", "-p", blob).stdout == text
    repack(novel.path)
    assert not loose.exists()
    assert_fsck_clean(novel.path)


def test_a_damaged_entry_of_a_pack_is_reported_as_damage_with_its_id(
    novel: NovelRepository,
) -> None:
    text = "A chapter whose bytes in the pack get damaged.\n" * 20
    commit_and_advance(novel, {"chapters/one.md": text})
    blob = novel.read_text("chapters/one.md").blob
    for index in (novel.path / "objects" / "pack").glob("*.idx"):
        listed = subprocess.run(
            ["git", "show-index"], stdin=index.open("rb"), capture_output=True, text=True
        ).stdout.split("\n")
        found = [int(line.split()[0]) for line in listed if line and line.split()[1] == blob]
        if found:
            pack = index.with_suffix(".pack")
            break
    pack.chmod(0o644)
    with pack.open("r+b") as file:
        file.seek(found[0] + 3)  # past the entry's type and size: its zlib stream
        file.write(b"\xff" * 8)

    with pytest.raises(RepositoryCorrupt) as damaged:
        NovelRepository.open(novel.path).read_text("chapters/one.md")
    assert damaged.value.details["object"] == blob
    assert blob in str(damaged.value)


def test_a_temporary_renamed_while_maintenance_looks_at_it_is_passed_over(
    novel: NovelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync renames its pack into place while the repack lists the pack folder: the
    repack goes on (it failed with FileNotFoundError, under the load benchmark)."""
    import storage.maintenance as upkeep  # noqa: PLC0415

    folder = novel.path / "objects" / "pack"
    writing = folder / f"{PACK_TEMPORARY_PREFIX}in-flight"
    writing.write_bytes(b"PACK")
    listed = os.scandir

    class Listing(list):  # what os.scandir gives: iterable, and a context manager
        def __enter__(self):  # noqa: ANN204
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def listing_then_renaming(path):  # noqa: ANN001, ANN202
        with listed(path) as found:
            entries = Listing(found)
        if Path(path) == folder and writing.exists():
            writing.rename(folder / "renamed-meanwhile")
        return entries

    monkeypatch.setattr(upkeep.os, "scandir", listing_then_renaming)
    result = repack(novel.path)
    monkeypatch.undo()

    assert not result.skipped
    (folder / "renamed-meanwhile").unlink()
    assert_fsck_clean(novel.path)


def test_a_refused_commit_leaves_nothing_to_write(novel: NovelRepository) -> None:
    """Blobs made before the change was refused (a file over a folder) are not kept for
    the next flush: no pack of objects nothing names."""
    head = novel.head()
    before = pack_count(novel.path)
    with pytest.raises(Invalid):
        novel.write_commit(
            parent=head, changes={"a-first.md": "Made, then dropped.\n", "chapters": "x"},
            author=ANN, message="Refused",
        )  # fmt: skip
    kept = novel.write_commit(
        parent=head, changes={"chapters/kept.md": "Kept.\n"}, author=ANN, message="Kept"
    )
    novel.advance_head(kept, head)

    assert pack_count(novel.path) == before + 1
    raw = pygit2.Repository(str(novel.path))
    assert raw.get(str(pygit2.hash(b"Made, then dropped.\n"))) is None
