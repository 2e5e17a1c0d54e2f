"""History as authors browse it: revisions newest first (per file, across renames made
through Git), word diffs between any two revisions, restoring a file as it was, and the
writing statistics — over real repositories with known histories."""

from __future__ import annotations

import itertools
import re
from datetime import UTC as UTC_
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from server.config import Settings
from server.history_models import HistoryPage
from server.state import DB, LIBRARY
from storage.history import apply_history, plan_history
from storage.reindex import check_novels
from storage.repository import Author, NovelRepository
from tests.conftest import Writer
from tests.db_snapshot import data_state

_ops = itertools.count(1)


async def new_novel(writer: Writer, title: str = "History") -> str:
    status, novel = await writer.call("POST", "/api/v1/novels", {"title": title})
    assert status == 201, novel
    return novel["id"]


async def add_chapter(writer: Writer, novel_id: str, title: str, content: str) -> dict[str, Any]:
    status, answer = await writer.call(
        "POST", f"/api/v1/novels/{novel_id}/chapters", {"title": title, "content": content}
    )
    assert status == 201, answer
    return answer


async def sync(
    writer: Writer, novel_id: str, base: str | None, changes: dict[str, str | None]
) -> dict[str, Any]:
    status, answer = await writer.call(
        "POST",
        f"/api/v1/novels/{novel_id}/sync",
        {
            "device_id": "laptop",
            "op_id": f"op-{next(_ops)}",
            "base": base,
            "changes": [{"path": p, "content": c} for p, c in changes.items()],
        },
    )
    assert status == 200, answer
    return answer


async def pull(writer: Writer, novel_id: str) -> dict[str, Any]:
    status, answer = await writer.call("GET", f"/api/v1/novels/{novel_id}/sync")
    assert status == 200, answer
    return answer


async def history(writer: Writer, novel_id: str, **params: Any) -> dict[str, Any]:
    status, page = await writer.call(
        "GET", f"/api/v1/novels/{novel_id}/history", params={k: str(v) for k, v in params.items()}
    )
    assert status == 200, page
    # SQLite writes the page (no pydantic on the way out): it must be the model exactly.
    assert HistoryPage.model_validate(page, strict=True).model_dump(mode="json") == page
    return page


async def whole_history(writer: Writer, novel_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every page from `cursor` (default: the first) to the end."""
    items, cursor = [], params.pop("cursor", None)
    while True:
        page = await history(writer, novel_id, **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def chapter_text(title: str, body: str) -> str:
    return f"---\ntitle: {title}\n---\n{body}"


def repo_path(settings: Settings, novel_id: str) -> Path:
    return settings.repositories_dir / f"{novel_id}.git"


def git_log(repo_path: Path, path: str | None = None) -> list[str]:
    """Commit ids newest first as `git log --follow` sees them (pygit2, no server)."""
    repo = NovelRepository.open(repo_path)
    if path is None:
        return [revision.id for revision in repo.log()]
    return [
        revision.id
        for revision in repo.log()
        if any(path in (c.path, c.old_path) for c in repo.file_changes(revision.id))
    ]


async def test_history_lists_every_commit_newest_first_with_authors_devices_and_words(
    ann: Writer, settings: Settings
):
    novel_id = await new_novel(ann)
    chapter = await add_chapter(ann, novel_id, "Dawn", "The sun rose over the quiet harbour.")
    path = chapter["chapter"]["path"]
    head = (await pull(ann, novel_id))["head"]
    text = (await pull(ann, novel_id))["files"]
    current = next(f["content"] for f in text if f["path"] == path)
    edited = current.replace("quiet harbour.", "quiet, sleeping harbour. Boats waited.")
    answer = await sync(ann, novel_id, head, {path: edited})

    items = (await history(ann, novel_id))["items"]
    assert [item["message"] for item in items] == [
        "Sync from laptop",
        "Add chapter “Dawn”",
        "Start the novel",
    ]
    newest = items[0]
    assert newest["rev"] == answer["head"]
    assert newest["parents"] == [head]
    assert newest["author"] == {"id": ann.user["id"], "name": "Ann Writer"}
    assert newest["device_id"] == "laptop"
    assert newest["paths"] == [path]
    # "quiet harbour." → "quiet, sleeping harbour. Boats waited.": three words in.
    assert (newest["words_added"], newest["words_removed"]) == (3, 0)
    assert newest["changes"] == [
        {"path": path, "old_path": None, "change": "modified", "words_added": 3,
         "words_removed": 0},
    ]  # fmt: skip
    assert items[1]["words_added"] == 7 and items[1]["changes"][0]["change"] == "added"
    assert newest["time"].endswith("Z")
    assert [item["rev"] for item in items] == git_log(repo_path(settings, novel_id))


def app_db(writer: Writer):  # noqa: ANN201 - storage.db.Database
    return writer.client.app[DB]


async def git_commit(
    settings: Settings,
    novel_id: str,
    changes: dict[str, str | None],
    *,
    message: str,
    when: datetime | None = None,
) -> str:
    """A commit made outside the server (as a push or a repair would), then the server's
    start-up check, which indexes what Git gained."""
    repo = NovelRepository.open(repo_path(settings, novel_id))
    with repo.lock():
        head = repo.head()
        commit = repo.write_commit(
            parent=head, changes=changes, message=message,
            author=Author("Ann Writer", "ann@example.com", when),
        )  # fmt: skip
        repo.advance_head(commit, head)
    return commit


async def reindex(writer: Writer, settings: Settings, *, force: bool = False) -> None:
    await writer.client.app[LIBRARY].call(
        lambda: check_novels(app_db(writer), settings.repositories_dir, force=force)
    )


async def chapter_file(writer: Writer, novel_id: str, path: str) -> str:
    files = (await pull(writer, novel_id))["files"]
    return next(f["content"] for f in files if f["path"] == path)


async def edit(writer: Writer, novel_id: str, path: str, old: str, new: str) -> dict[str, Any]:
    snapshot = await pull(writer, novel_id)
    text = next(f["content"] for f in snapshot["files"] if f["path"] == path)
    assert old in text, (old, text)
    return await sync(writer, novel_id, snapshot["head"], {path: text.replace(old, new, 1)})


async def test_pages_never_skip_or_repeat_a_revision_while_new_commits_arrive(ann: Writer):
    novel_id = await new_novel(ann)
    path = (await add_chapter(ann, novel_id, "Count", "zero"))["chapter"]["path"]
    for n in range(1, 12):
        await edit(ann, novel_id, path, "zero" if n == 1 else f"n{n - 1}", f"n{n}")
    before = await whole_history(ann, novel_id)
    assert len(before) == 13

    pages: list[list[str]] = []
    page = await history(ann, novel_id, limit=4)
    pages.append([item["rev"] for item in page["items"]])
    while page["next_cursor"]:
        # Another device writes between every two pages.
        await edit(ann, novel_id, path, "n", "m")
        page = await history(ann, novel_id, limit=4, cursor=page["next_cursor"])
        pages.append([item["rev"] for item in page["items"]])
    assert [rev for p in pages for rev in p] == [item["rev"] for item in before]
    assert [len(p) for p in pages] == [4, 4, 4, 1]

    expected = [item["rev"] for item in await whole_history(ann, novel_id, path=path)]
    filtered = await history(ann, novel_id, path=path, limit=5)
    await edit(ann, novel_id, path, "m", "k")
    rest = await whole_history(ann, novel_id, path=path, limit=5, cursor=filtered["next_cursor"])
    revs = [item["rev"] for item in filtered["items"] + rest]
    assert revs == expected
    assert len(revs) == len(set(revs)) == 15


async def test_the_path_filter_lists_exactly_the_revisions_that_touched_that_file(
    ann: Writer, settings: Settings
):
    novel_id = await new_novel(ann)
    first = (await add_chapter(ann, novel_id, "One", "alpha beta"))["chapter"]["path"]
    second = (await add_chapter(ann, novel_id, "Two", "gamma delta"))["chapter"]["path"]
    for n in range(3):
        await edit(ann, novel_id, first, "alpha", f"alpha{n}")
        await edit(ann, novel_id, second, "gamma", f"gamma{n}")
    for path in (first, second, "novel.md"):
        listed = [item["rev"] for item in await whole_history(ann, novel_id, path=path, limit=2)]
        assert listed == git_log(repo_path(settings, novel_id), path), path
    assert len(await whole_history(ann, novel_id, path=first)) == 4
    assert (await history(ann, novel_id, path="chapters/none.md"))["items"] == []


async def test_a_chapter_renamed_through_git_keeps_its_history(ann: Writer, settings: Settings):
    novel_id = await new_novel(ann)
    old = (await add_chapter(ann, novel_id, "Storm", "The wind rose at dusk."))["chapter"]["path"]
    await edit(ann, novel_id, old, "at dusk", "at dusk and the shutters banged")
    await edit(ann, novel_id, old, "banged", "banged all night")
    text = await chapter_file(ann, novel_id, old)
    new = "chapters/the-storm.md"
    renamed = await git_commit(
        settings, novel_id, {old: None, new: text + "\nMorning came.\n"}, message="Rename"
    )
    await reindex(ann, settings)
    await edit(ann, novel_id, new, "Morning came.", "Morning came, grey and still.")

    followed = await whole_history(ann, novel_id, path=new, limit=2)
    assert [item["message"] for item in followed] == [
        "Sync from laptop",
        "Rename",
        "Sync from laptop",
        "Sync from laptop",
        "Add chapter “Storm”",
    ]
    rename = followed[1]
    assert rename["rev"] == renamed
    assert rename["changes"] == [
        {"path": new, "old_path": old, "change": "renamed", "words_added": 2,
         "words_removed": 0},
    ]  # fmt: skip
    # The old name's own history ends where it was renamed away.
    old_history = await whole_history(ann, novel_id, path=old)
    assert [item["rev"] for item in old_history] == [item["rev"] for item in followed[1:]]


async def test_word_diffs_show_insertions_deletions_and_moves_in_a_long_paragraph(ann: Writer):
    novel_id = await new_novel(ann)
    sentences = [f"Sentence number {n} tells of the harbour at night." for n in range(60)]
    paragraph = " ".join(sentences)
    path = (await add_chapter(ann, novel_id, "Long", paragraph + "\n"))["chapter"]["path"]
    before_head = (await pull(ann, novel_id))["head"]
    moved = sentences[:]
    moved.insert(40, moved.pop(5))  # a sentence moved further down
    moved[20] = moved[20].replace("harbour", "old stone harbour")  # an insertion
    moved[50] = moved[50].replace(" at night", "")  # a deletion
    text = await chapter_file(ann, novel_id, path)
    after = await sync(ann, novel_id, before_head, {path: text.replace(paragraph, " ".join(moved))})

    status, answer = await ann.call(
        "GET", f"/api/v1/novels/{novel_id}/diff",
        params={"from": before_head, "to": after["head"], "path": path},
    )  # fmt: skip
    assert status == 200, answer
    assert answer["from"] == before_head and answer["to"] == after["head"]
    [diff] = answer["files"]
    assert diff["path"] == path and diff["change"] == "modified" and not diff["binary"]
    ops = diff["ops"]
    old_text = "".join(op["text"] for op in ops if op["op"] != "insert")
    new_text = "".join(op["text"] for op in ops if op["op"] != "delete")
    assert old_text == text and new_text == text.replace(paragraph, " ".join(moved))
    inserted = [op["text"] for op in ops if op["op"] == "insert"]
    deleted = [op["text"] for op in ops if op["op"] == "delete"]
    assert "old stone " in inserted
    assert " at night" in deleted
    # The moved sentence: gone from its place, back further down; the rest is kept.
    assert any(re.search(r"\b5\b", t) for t in deleted)
    assert any(re.search(r"\b5\b", t) for t in inserted)
    kept = sum(len(op["text"]) for op in ops if op["op"] == "equal")
    assert kept > 0.9 * len(text)

    # Without `from`: the revision against its first parent; without `to`: the head.
    status, default = await ann.call("GET", f"/api/v1/novels/{novel_id}/diff")
    assert status == 200 and default["to"] == after["head"] and default["from"] == before_head
    assert default["files"] == answer["files"]
    status, lines = await ann.call(
        "GET", f"/api/v1/novels/{novel_id}/diff",
        params={"granularity": "line", "to": after["head"][:9]},
    )  # fmt: skip
    assert status == 200
    assert [op["op"] for op in lines["files"][0]["ops"]] == ["equal", "delete", "insert"]


@pytest.mark.parametrize(
    ("before", "after", "deleted", "inserted"),
    [
        ("Жили-были дед да баба.", "Жили-были старик да баба.", ["дед"], ["старик"]),
        ("我今天很高兴。", "我今天非常高兴。", ["很"], ["非常"]),
        ("Elle était très fâchée.", "Elle était à peine fâchée.", ["très"], ["à peine"]),
        # Accents as combining marks (NFD) stay inside their word.
        ("Un cafe\u0301 noir.", "Un the\u0301 noir.", ["cafe\u0301"], ["the\u0301"]),
    ],
)
async def test_word_diffs_cut_non_latin_text_into_whole_words(
    ann: Writer, before: str, after: str, deleted: list[str], inserted: list[str]
):
    novel_id = await new_novel(ann)
    path = (await add_chapter(ann, novel_id, "Words", before + "\n"))["chapter"]["path"]
    await edit(ann, novel_id, path, before, after)
    status, answer = await ann.call("GET", f"/api/v1/novels/{novel_id}/diff")
    assert status == 200, answer
    ops = answer["files"][0]["ops"]
    assert [op["text"] for op in ops if op["op"] == "delete"] == deleted
    assert [op["text"] for op in ops if op["op"] == "insert"] == inserted
    [item] = (await history(ann, novel_id, limit=1))["items"]
    assert item["words_removed"] == len(deleted[0]) if "我" in before else 1
    assert item["words_added"] >= 1


async def test_restore_brings_back_a_deleted_chapter_as_a_new_commit(ann: Writer):
    novel_id = await new_novel(ann)
    chapter = (await add_chapter(ann, novel_id, "Lost", "A chapter worth keeping."))["chapter"]
    kept_at = (await pull(ann, novel_id))["head"]
    status, _ = await ann.call("DELETE", f"/api/v1/novels/{novel_id}/chapters/{chapter['id']}")
    assert status == 204
    status, chapters = await ann.call("GET", f"/api/v1/novels/{novel_id}/chapters")
    assert chapters["items"] == []
    deleted_head = (await pull(ann, novel_id))["head"]

    body = {"path": chapter["path"], "rev": kept_at[:12], "device_id": "tablet", "op_id": "r1"}
    status, answer = await ann.call("POST", f"/api/v1/novels/{novel_id}/restore", body)
    assert status == 200, answer
    assert answer["status"] == "fast_forward" and answer["conflicts"] == []
    [restored] = [f for f in answer["files"] if f["path"] == chapter["path"]]
    status, raw = await ann.call(
        "GET", f"/api/v1/novels/{novel_id}/files/{chapter['path']}", params={"rev": kept_at}
    )
    assert restored["content"] == raw
    status, chapters = await ann.call("GET", f"/api/v1/novels/{novel_id}/chapters")
    assert [(c["id"], c["word_count"]) for c in chapters["items"]] == [(chapter["id"], 4)]
    [newest] = (await history(ann, novel_id, limit=1))["items"]
    assert newest["rev"] == answer["head"] and newest["parents"] == [deleted_head]
    assert newest["message"] == f"Restore {chapter['path']} as of {kept_at[:10]}"
    assert newest["changes"][0]["change"] == "added"

    # A retry answers the same and commits nothing more; restoring what the head holds
    # changes nothing.
    status, again = await ann.call("POST", f"/api/v1/novels/{novel_id}/restore", body)
    assert status == 200 and again == answer
    status, same = await ann.call(
        "POST", f"/api/v1/novels/{novel_id}/restore", {"path": chapter["path"], "rev": kept_at}
    )
    assert status == 200 and same["status"] == "noop" and same["head"] == answer["head"]
    assert len(await whole_history(ann, novel_id)) == 4


async def test_refused_history_requests_are_clear_errors_and_write_nothing(
    ann: Writer, settings: Settings
):
    novel_id = await new_novel(ann)
    path = (await add_chapter(ann, novel_id, "Here", "Some words."))["chapter"]["path"]
    first = (await history(ann, novel_id, limit=1))["next_cursor"]
    state = data_state(settings)
    base = f"/api/v1/novels/{novel_id}"
    head = (await pull(ann, novel_id))["head"]
    missing = {"path": "chapters/never.md", "rev": head}
    cases = [
        ("POST", "/restore", {"path": path, "rev": "0" * 40}, 404, "unknown_revision"),
        ("POST", "/restore", missing, 404, "file_missing_at_revision"),
        ("POST", "/restore", {"path": "../etc/passwd", "rev": head}, 422, "invalid_path"),
        ("POST", "/restore", {"path": "chapters\\x.md", "rev": head}, 422, "invalid_path"),
        ("POST", "/restore", {"path": path, "rev": "HEAD~1"}, 422, None),
        ("GET", "/diff?from=zzzzzzz", None, 422, None),
        ("GET", "/diff?to=" + "1" * 40, None, 404, "unknown_revision"),
        ("GET", "/diff?granularity=char", None, 422, None),
        ("GET", "/history?limit=0", None, 422, None),
        ("GET", "/history?limit=-5", None, 422, None),
        ("GET", "/history?cursor=not-a-cursor", None, 422, "invalid_cursor"),
        ("GET", f"/history?cursor={first}&path={path}", None, 422, "invalid_cursor"),
    ]
    for method, suffix, body, expected, code in cases:
        status, answer = await ann.call(method, base + suffix, body)
        assert status == expected, (suffix, answer)
        assert set(answer["error"]) == {"code", "message", "details"}
        if code:
            assert answer["error"]["code"] == code, (suffix, answer)
    assert data_state(settings) == state


async def test_stats_count_words_per_utc_day_and_per_chapter(ann: Writer, settings: Settings):
    novel_id = await new_novel(ann)
    one, two = "chapters/one.md", "chapters/two.md"
    east = timezone(timedelta(hours=2))
    west = timezone(timedelta(hours=-5))
    # Dates after the novel's creation (today). 23:30 at +02:00 is 21:30 UTC on the 1st;
    # 01:30 on the 2nd at +02:00 is still the 1st in UTC; 21:00 on the 2nd at -05:00 is
    # 02:00 UTC on the 3rd.
    await git_commit(settings, novel_id, {one: chapter_text("One", "one two three four")},
                     message="a", when=datetime(2030, 3, 1, 23, 30, tzinfo=east))  # fmt: skip
    await git_commit(settings, novel_id, {two: chapter_text("Two", "five six")},
                     message="b", when=datetime(2030, 3, 2, 1, 30, tzinfo=east))  # fmt: skip
    await git_commit(settings, novel_id, {one: chapter_text("One", "one two")},
                     message="c", when=datetime(2030, 3, 2, 12, 0, tzinfo=UTC_))  # fmt: skip
    await git_commit(settings, novel_id, {two: chapter_text("Two", "five six seven eight nine")},
                     message="d", when=datetime(2030, 3, 2, 21, 0, tzinfo=west))  # fmt: skip
    await reindex(ann, settings)

    status, stats = await ann.call("GET", f"/api/v1/novels/{novel_id}/stats")
    assert status == 200, stats
    assert stats["total_words"] == 2 + 5
    days = [(d["date"], d["words"], d["total"]) for d in stats["days"]]
    created = days[0]
    assert created[1:] == (0, 0)  # the novel's first commit (novel.md): no chapter words
    assert days[1:] == [("2030-03-01", 6, 6), ("2030-03-02", -2, 4), ("2030-03-03", 3, 7)]
    assert stats["days"][2]["added"] == 0 and stats["days"][2]["removed"] == 2
    chapters = {c["path"]: c for c in stats["chapters"]}
    assert chapters[one]["words"] == 2 and chapters[two]["words"] == 5
    assert chapters[one]["days"] == [
        {"date": "2030-03-01", "words": 4}, {"date": "2030-03-02", "words": -2},
    ]  # fmt: skip
    assert chapters[two]["days"] == [
        {"date": "2030-03-01", "words": 2}, {"date": "2030-03-03", "words": 3},
    ]  # fmt: skip


def revision_rows(writer: Writer, novel_id: str) -> list[tuple]:
    def read(conn):  # noqa: ANN001, ANN202
        revisions = conn.execute(
            "SELECT rev, parents, author_id, author_name, author_email, device_id, message,"
            " time, mainline, words_added, words_removed, total_words FROM revision"
            " WHERE novel_id = ? ORDER BY seq",
            (novel_id,),
        ).fetchall()
        paths = conn.execute(
            "SELECT r.rev, p.path, p.old_path, p.change, p.words_added, p.words_removed,"
            " p.words_before, p.words_after FROM revision_path p JOIN revision r"
            " ON r.seq = p.seq WHERE p.novel_id = ? ORDER BY r.seq, p.path",
            (novel_id,),
        ).fetchall()
        return revisions + paths

    return app_db(writer).read_sync(read)


async def test_merged_syncs_index_both_commits_and_a_rebuild_from_git_agrees(
    ann: Writer, settings: Settings
):
    novel_id = await new_novel(ann)
    path = (await add_chapter(ann, novel_id, "Both", "First line here.\n\nSecond line here.\n"))[
        "chapter"
    ]["path"]
    snapshot = await pull(ann, novel_id)
    text = next(f["content"] for f in snapshot["files"] if f["path"] == path)
    laptop = await sync(ann, novel_id, snapshot["head"], {path: text.replace("First", "1st")})
    # The phone edits the same base: its commit is merged beside the laptop's.
    phone = await sync(ann, novel_id, snapshot["head"], {path: text.replace("Second", "2nd")})
    assert phone["status"] == "merged"

    items = await whole_history(ann, novel_id)
    merge, device, fast_forward = items[0], items[1], items[2]
    assert merge["rev"] == phone["head"] and merge["parents"][0] == laptop["head"]
    assert device["rev"] == merge["parents"][1] and device["parents"] == [snapshot["head"]]
    assert fast_forward["rev"] == laptop["head"]
    assert (merge["words_added"], merge["words_removed"]) == (1, 1)
    # Git orders the two children of the base by time; both orders are newest-first.
    assert sorted(item["rev"] for item in items) == sorted(git_log(repo_path(settings, novel_id)))

    status, stats = await ann.call("GET", f"/api/v1/novels/{novel_id}/stats")
    status, chapters = await ann.call("GET", f"/api/v1/novels/{novel_id}/chapters")
    assert stats["total_words"] == sum(c["word_count"] for c in chapters["items"]) == 6
    assert stats["days"][-1]["total"] == 6
    assert [c["words"] for c in stats["chapters"]] == [c["word_count"] for c in chapters["items"]]

    written = revision_rows(ann, novel_id)
    await reindex(ann, settings, force=True)
    assert revision_rows(ann, novel_id) == written


async def test_start_up_indexes_commits_the_revision_index_missed(ann: Writer, settings: Settings):
    """A crash after Git moved but before SQLite did: start-up adds the missing revisions."""
    novel_id = await new_novel(ann)
    path = (await add_chapter(ann, novel_id, "Gap", "Before the crash."))["chapter"]["path"]
    text = await chapter_file(ann, novel_id, path)
    missed = [
        await git_commit(settings, novel_id, {path: text + f"\nLine {n}.\n"}, message=f"m{n}")
        for n in range(3)
    ]
    assert len(await whole_history(ann, novel_id)) == 2
    await reindex(ann, settings)
    items = await whole_history(ann, novel_id)
    assert [item["rev"] for item in items[:3]] == missed[::-1]
    assert len(items) == 5


async def test_an_old_revision_of_a_deleted_file_is_served_with_its_etag(ann: Writer):
    novel_id = await new_novel(ann)
    chapter = (await add_chapter(ann, novel_id, "Gone", "Soon deleted."))["chapter"]
    rev = (await pull(ann, novel_id))["head"]
    await ann.call("DELETE", f"/api/v1/novels/{novel_id}/chapters/{chapter['id']}")
    url = f"/api/v1/novels/{novel_id}/files/{chapter['path']}"
    response = await ann.client.get(url, params={"rev": rev}, headers=ann.headers)
    assert response.status == 200 and "Soon deleted." in await response.text()
    etag = response.headers["ETag"]
    again = await ann.client.get(
        url, params={"rev": rev}, headers={**ann.headers, "If-None-Match": etag}
    )
    assert again.status == 304
    assert (await ann.client.get(url, headers=ann.headers)).status == 404


async def test_a_rebuild_read_without_the_lock_keeps_commits_that_land_meanwhile(
    ann: Writer, settings: Settings
):
    novel_id = await new_novel(ann)
    path = (await add_chapter(ann, novel_id, "Race", "One."))["chapter"]["path"]
    repo = NovelRepository.open(repo_path(settings, novel_id))
    plan = plan_history(app_db(ann), repo, novel_id, full=True)
    landed = await edit(ann, novel_id, path, "One.", "One. Two.")  # a live server's sync
    with repo.lock():
        added = apply_history(app_db(ann), repo, novel_id, plan)
    assert added == 3
    items = await whole_history(ann, novel_id)
    assert [item["rev"] for item in items] == git_log(repo_path(settings, novel_id))
    assert items[0]["rev"] == landed["head"]
