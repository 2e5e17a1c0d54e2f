"""Properties of the sync engine over random offline edits by two or three devices from a
common base, run through `sync.engine.commit_changes` on a real SQLite file and real Git
repositories: nothing a device sent is ever lost, and disjoint edits always merge."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from storage import accounts
from storage.db import Database, open_database, query
from storage.library import Library
from storage.repository import Author, NovelRepository
from sync import content
from sync.engine import Edit, commit_changes

CHAPTER = "chapters/tide.md"
AUTHOR = Author("Ann Writer", "ann@example.com")
WORDS = ["sea", "lamp", "stone", "gull", "rope", "salt", "tide", "wind", "door", "café", "海"]
PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclass
class Store:
    db: Database
    library: Library
    user_id: str
    org_id: str


@contextmanager
def store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(Path(tmp) / "openwrite.db", readers=2)
        library = Library(Path(tmp) / "novels")

        def make_user(conn):  # noqa: ANN001, ANN202
            user = accounts.create_user(
                conn, name="Ann", email="ann@example.com", password_hash="x"
            )
            return user["id"], accounts.personal_organization_id(conn, user["id"])

        user_id, org_id = db.write_sync(make_user)
        try:
            yield Store(db, library, user_id, org_id)
        finally:
            library.close()
            db.close()


def chapter_text(title: str, paragraphs: list[list[str]]) -> str:
    body = "\n\n".join(" ".join(words) + "." for words in paragraphs)
    return f"---\ntitle: {title}\nnumber: 1\nstatus: draft\n---\n{body}\n"


def paragraphs_strategy(min_size: int = 3) -> st.SearchStrategy[list[list[str]]]:
    # "P<n>" opens every paragraph and is never edited: paragraphs stay distinct lines.
    return st.integers(min_size, 6).flatmap(
        lambda n: st.tuples(
            *(st.lists(st.sampled_from(WORDS), min_size=3, max_size=8) for _ in range(n))
        ).map(lambda ps: [[f"P{i}", *words] for i, words in enumerate(ps)])
    )


async def new_novel(s: Store, text: str) -> tuple[str, str]:
    novel = await content.create_novel(
        s.db, s.library, organization_id=s.org_id, author=AUTHOR, owner_id=s.user_id,
        fields={"title": "Tides"},
    )  # fmt: skip
    answer = await commit_changes(
        s.db, s.library, novel["id"], {CHAPTER: text}, edit(s, "setup"), use_head=True
    )
    return novel["id"], answer["head"]


def edit(s: Store, device: str, op_id: str | None = None) -> Edit:
    return Edit(user_id=s.user_id, author=AUTHOR, message=f"Sync from {device}",
                device_id=device, op_id=op_id)  # fmt: skip


# -- random edits: anything a device may do to its copy ------------------------------------

Operation = tuple[Any, ...]

operations = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 5), st.integers(1, 8), st.sampled_from(WORDS)),
    st.tuples(st.just("insert"), st.integers(0, 5), st.integers(1, 8), st.sampled_from(WORDS)),
    st.tuples(st.just("drop_word"), st.integers(0, 5), st.integers(1, 8)),
    st.tuples(st.just("new_paragraph"), st.integers(0, 6), st.sampled_from(WORDS)),
    st.tuples(st.just("title"), st.sampled_from(["Tides", "Low Tide", "Spring Tide"])),
    st.tuples(st.just("new_file"), st.sampled_from(["a", "b", "c"]), st.sampled_from(WORDS)),
    st.tuples(st.just("delete_chapter")),
)


def apply(
    files: dict[str, str | None], paragraphs: list[list[str]], title: str, ops: list[Operation]
) -> dict[str, str | None]:
    """The device's files after `ops`; only paths whose text changed."""
    paragraphs = [list(p) for p in paragraphs]
    changed: dict[str, str | None] = {}
    deleted = False
    for op in ops:
        kind = op[0]
        if kind in ("replace", "insert", "drop_word"):
            words = paragraphs[op[1] % len(paragraphs)]
            at = 1 + (op[2] - 1) % max(1, len(words) - 1)
            if kind == "replace" and at < len(words):
                words[at] = op[3]
            elif kind == "insert":
                words.insert(at, op[3])
            elif kind == "drop_word" and len(words) > 2 and at < len(words):
                del words[at]
        elif kind == "new_paragraph":
            paragraphs.insert(op[1] % (len(paragraphs) + 1), [f"N{len(paragraphs)}", op[2]])
        elif kind == "title":
            title = op[1]
        elif kind == "new_file":
            changed[f"chapters/{op[1]}.md"] = f"---\ntitle: {op[1]}\n---\n{op[2]} {op[1]}.\n"
        elif kind == "delete_chapter":
            deleted = True
    chapter = None if deleted else chapter_text(title, paragraphs)
    if chapter != files.get(CHAPTER):
        changed[CHAPTER] = chapter
    return changed


def history(repo: NovelRepository, head: str) -> list[Any]:
    return list(repo.log(head))


@PROPERTY_SETTINGS
@given(
    base=paragraphs_strategy(),
    device_ops=st.lists(st.lists(operations, min_size=1, max_size=5), min_size=2, max_size=3),
)
# Found by this test: the head had made the device's one-word edit inside a larger one,
# so the merge changed nothing and the device's own text was in no commit of history.
@example(
    base=[["P0", "sea", "sea", "sea"], ["P1", "sea", "sea", "sea"], ["P2", "sea", "sea", "sea"]],
    device_ops=[
        [("replace", 0, 1, "lamp"), ("replace", 0, 2, "lamp")],
        [("replace", 0, 1, "lamp")],
    ],
)
def test_every_text_a_device_sent_is_in_history_or_a_conflict_record(
    base: list[list[str]], device_ops: list[list[Operation]]
):
    asyncio.run(_every_text_is_kept(base, device_ops))


async def _every_text_is_kept(base: list[list[str]], device_ops: list[list[Operation]]) -> None:
    with store() as s:
        start_text = chapter_text("Tides", base)
        novel_id, start = await new_novel(s, start_text)
        sent: list[tuple[str, str, dict[str, str | None], dict]] = []
        for n, ops in enumerate(device_ops):
            device, op_id = f"device-{n}", f"op-{n}"
            changes = apply({CHAPTER: start_text}, base, "Tides", ops)
            answer = await commit_changes(
                s.db, s.library, novel_id, changes, edit(s, device, op_id), base=start
            )
            sent.append((device, op_id, changes, answer))

        head = await s.library.run(novel_id, NovelRepository.head)
        records = s.db.read_sync(
            lambda conn: query(conn, "SELECT * FROM conflict WHERE novel_id = ?", (novel_id,))
        )
        indexed = s.db.read_sync(
            lambda conn: query(conn, "SELECT head FROM novel WHERE id = ?", (novel_id,))
        )
        assert indexed == [{"head": head}]

        def check(repo: NovelRepository) -> None:
            revisions = history(repo, head)
            for device, op_id, changes, answer in sent:
                assert repo.is_ancestor(answer["head"], head)
                if not changes:
                    continue
                own = [r for r in revisions if _made_by(r, device, op_id)]
                exact = any(
                    all(_text(repo, path, r.id) == text for path, text in changes.items())
                    for r in own
                )
                if exact:
                    continue
                # No device commit of its own in history: only when the head already held
                # every text it sent, or what differs is kept in a conflict record.
                for path, text in changes.items():
                    in_head = _text(repo, path, answer["head"]) == text
                    recorded = any(r["path"] == path and r["device_id"] == device for r in records)
                    assert in_head or recorded, (device, path, text, answer)
            for path in repo.files(head):
                text = _text(repo, path, head)
                assert "<<<<<<<" not in text and ">>>>>>>" not in text

        await s.library.run(novel_id, check)


def _made_by(revision: Any, device: str, op_id: str) -> bool:
    """A device commit (not a merge) of this device's operation."""
    trailers = revision.trailers
    own = trailers.get("Op-Id") == op_id and trailers.get("Device-Id") == device
    return own and len(revision.parents) <= 1


def _text(repo: NovelRepository, path: str, rev: str) -> str | None:
    found = repo.read_text(path, rev)
    return found.text if found else None


@st.composite
def disjoint_edits(draw: st.DrawFn) -> tuple[list[list[str]], list[dict[int, list[str]]]]:
    """A base and, per device, new words for paragraphs no other device touches."""
    base = draw(paragraphs_strategy(min_size=4))
    devices = draw(st.integers(2, 3))
    owner = draw(st.lists(st.integers(0, devices), min_size=len(base), max_size=len(base)))
    edits: list[dict[int, list[str]]] = [{} for _ in range(devices)]
    for index, who in enumerate(owner):
        if who == devices:
            continue  # nobody edits this paragraph
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8))
        edits[who][index] = [f"P{index}", *words]
    return base, edits


@PROPERTY_SETTINGS
@given(case=disjoint_edits(), order=st.randoms(use_true_random=False))
def test_edits_to_different_paragraphs_always_merge_with_all_of_them_present(
    case: tuple[list[list[str]], list[dict[int, list[str]]]], order: Any
):
    asyncio.run(_disjoint_edits_merge(*case, order))


async def _disjoint_edits_merge(
    base: list[list[str]], edits: list[dict[int, list[str]]], order: Any
) -> None:
    with store() as s:
        start_text = chapter_text("Tides", base)
        novel_id, start = await new_novel(s, start_text)
        sequence = list(enumerate(edits))
        order.shuffle(sequence)
        for n, paragraphs in sequence:
            mine = [paragraphs.get(i, words) for i, words in enumerate(base)]
            answer = await commit_changes(
                s.db, s.library, novel_id, {CHAPTER: chapter_text("Tides", mine)},
                edit(s, f"device-{n}", f"op-{n}"), base=start,
            )  # fmt: skip
            assert answer["conflicts"] == [], answer
        expected = [next((e[i] for e in edits if i in e), words) for i, words in enumerate(base)]
        final = await s.library.run(novel_id, lambda repo: repo.read_text(CHAPTER).text)
        assert final == chapter_text("Tides", expected)
