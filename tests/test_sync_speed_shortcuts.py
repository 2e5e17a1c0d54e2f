"""The shortcuts that make a merged sync cheap give the answers of the long way round:
remembered blob texts and front matter, the first-parent ancestor check, describing the
commits a sync wrote without walking the history, and finding a one-word edit's lines
without cutting the whole chapter into lines."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from storage.diff import matching_blocks
from storage.documents import parse_document
from storage.history import describe_revisions
from storage.repository import Author, NovelRepository
from storage.words import changed_lines, recount, split_lines, word_count

ANN = Author("Ann Writer", "ann@example.org")
CHAPTER = "chapters/one.md"
PIECES = ["sea", "lamp", " ", " ", "\n", "\n\n", "well-known", "3.14", "l’homme", "日本", "é", "."]


@pytest.fixture
def novel(tmp_path: Path) -> NovelRepository:
    files = {"novel.md": "---\ntitle: Road\n---\n", CHAPTER: "---\ntitle: One\n---\nIt began.\n"}
    return NovelRepository.create(tmp_path / "n.git", files=files, author=ANN, message="Start")


def _edit(novel: NovelRepository, parent: str, text: str, *extra: str) -> str:
    return novel.write_commit(
        parent=parent, changes={CHAPTER: text}, author=ANN, message="Edit", extra_parents=extra
    )


def test_a_text_read_back_is_the_text_written_and_the_same_fresh_from_disk(
    novel: NovelRepository,
) -> None:
    commit = _edit(novel, novel.head(), "---\ntitle: One\n---\nIt began, l’homme.\n")
    remembered = novel.read_text(CHAPTER, commit)
    fresh = NovelRepository.open(novel.path).read_text(CHAPTER, commit)
    assert remembered == fresh
    assert novel.blob_text(fresh.blob) == fresh.text


def test_a_base_reached_only_through_a_merged_device_commit_is_an_ancestor(
    novel: NovelRepository,
) -> None:
    start = novel.head()
    device = _edit(novel, start, "---\ntitle: One\n---\nThe device's.\n")
    server = _edit(novel, start, "---\ntitle: One\n---\nThe server's.\n")
    merged = _edit(novel, server, "---\ntitle: One\n---\nBoth.\n", device)
    assert novel.is_ancestor(device, merged)
    head = merged
    for n in range(40):  # past the first parents the shortcut looks through
        head = _edit(novel, head, f"---\ntitle: One\n---\nLater {n}.\n")
    assert novel.is_ancestor(device, head)
    assert novel.is_ancestor(start, head)
    assert novel.is_ancestor(head, head)
    assert not novel.is_ancestor(head, device)
    assert not novel.is_ancestor(server, device)


def test_revisions_of_commits_just_written_are_the_ones_a_walk_of_the_history_finds(
    novel: NovelRepository,
) -> None:
    """A sync describes the commits it wrote without walking the history (libgit2 walks
    every commit of the same second): the entries must be the walk's, a fast-forward
    and a merge alike, also with many same-second commits behind the head."""
    head = novel.head()
    for n in range(60):
        head = _edit(novel, head, f"---\ntitle: One\n---\nDraft {n}.\n")
    base = head
    for n in range(5):  # the server moves on while a device edits `base`
        head = _edit(novel, head, f"---\ntitle: One\n---\nDraft {n}, the server's.\n")
    device = _edit(novel, base, "---\ntitle: One\n---\nDraft 59, the device's.\n")
    merge = _edit(novel, head, "---\ntitle: One\n---\nBoth.\n", device)
    fast = _edit(novel, merge, "---\ntitle: One\n---\nBoth, and more.\n")
    for old, new, written in [(head, merge, [device, merge]), (merge, fast, [fast])]:
        walked = describe_revisions(novel, old, new)
        assert [e.rev for e in walked] == written
        assert describe_revisions(novel, old, new, written=written) == walked
    with pytest.raises(ValueError):
        describe_revisions(novel, head, merge, written=[device])


def test_front_matter_parsed_twice_gives_two_mappings_that_do_not_share_changes() -> None:
    text = "---\ntitle: One\nnumber: 3\ndraft: true\n---\nBody.\n"
    first = parse_document(text)
    first.meta["title"] = "Changed"
    nested = "---\ntags: [a, b]\n---\nBody.\n"
    parse_document(nested).meta["tags"].append("c")
    assert parse_document(text).meta == {"title": "One", "number": 3, "draft": True}
    assert parse_document(nested).meta == {"tags": ["a", "b"]}


def _random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(size))


def _edited(rng: random.Random, text: str) -> str:
    cut = list(text)
    for _ in range(rng.randint(0, 3)):
        at = rng.randint(0, len(cut))
        if rng.random() < 0.5 and cut:
            del cut[min(at, len(cut) - 1)]
        else:
            cut.insert(at, rng.choice(PIECES))
    return "".join(cut)


def _gaps_by_lines(old: str, new: str) -> list[tuple[str, str]]:
    """The unmatched line runs of `matching_blocks` over every line of both texts."""
    a, b = split_lines(old), split_lines(new)
    gaps, i, j = [], 0, 0
    for a_start, b_start, size in [*matching_blocks(a, b), (len(a), len(b), 0)]:
        if i < a_start or j < b_start:
            gaps.append(("".join(a[i:a_start]), "".join(b[j:b_start])))
        i, j = a_start + size, b_start + size
    return gaps


@pytest.mark.parametrize("seed", range(4))
def test_the_lines_of_an_edit_are_found_as_line_by_line_matching_finds_them(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        old = _random_text(rng, rng.choice([0, 5, 60, 3000]))
        new = _edited(rng, old) if rng.random() < 0.9 else _random_text(rng, 60)
        start, old_end, new_end = changed_lines(old, new)
        assert old[:start] == new[:start] and old[old_end:] == new[new_end:]
        assert start == 0 or old[start - 1] == "\n"
        assert old_end == len(old) or old[old_end - 1] == "\n"
        inner = _gaps_by_lines(old[start:old_end], new[start:new_end])
        assert inner == _gaps_by_lines(old, new)
        assert recount(old, word_count(old), new) == word_count(new)
