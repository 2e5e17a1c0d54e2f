from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.diff import DiffOp, diff_texts, matching_blocks


def _old_and_new(ops: list[DiffOp]) -> tuple[str, str]:
    old = "".join(op.text for op in ops if op.op != "insert")
    new = "".join(op.text for op in ops if op.op != "delete")
    return old, new


def test_one_changed_word_in_a_long_paragraph_shows_only_that_word():
    old = "The harbour was quiet that night, and the boats rocked gently.\n"
    new = "The harbour was silent that night, and the boats rocked gently.\n"
    assert diff_texts(old, new, "word") == [
        DiffOp("equal", "The harbour was "),
        DiffOp("delete", "quiet"),
        DiffOp("insert", "silent"),
        DiffOp("equal", " that night, and the boats rocked gently.\n"),
    ]


def test_line_granularity_shows_whole_paragraphs():
    old = "First paragraph.\n\nSecond paragraph.\n"
    new = "First paragraph.\n\nSecond paragraph, edited.\n"
    assert diff_texts(old, new, "line") == [
        DiffOp("equal", "First paragraph.\n\n"),
        DiffOp("delete", "Second paragraph.\n"),
        DiffOp("insert", "Second paragraph, edited.\n"),
    ]


def test_cjk_diffs_character_by_character():
    assert diff_texts("我爱你", "我恨你", "word") == [
        DiffOp("equal", "我"),
        DiffOp("delete", "爱"),
        DiffOp("insert", "恨"),
        DiffOp("equal", "你"),
    ]


def test_consecutive_runs_of_one_kind_are_coalesced():
    ops = diff_texts("a b c", "x y z", "word")
    kinds = [op.op for op in ops]
    assert all(left != right for left, right in zip(kinds, kinds[1:], strict=False))


def test_empty_texts_diff_to_a_single_insert_or_delete():
    assert diff_texts("", "", "word") == []
    assert diff_texts("", "New text", "word") == [DiffOp("insert", "New text")]
    assert diff_texts("Old text", "", "line") == [DiffOp("delete", "Old text")]


def test_matching_blocks_are_increasing_and_really_match():
    a = list("the cat sat on the mat")
    b = list("the bat sat in the hat")
    previous_a = previous_b = 0
    for i, j, size in matching_blocks(a, b):
        assert i >= previous_a and j >= previous_b and size > 0
        assert a[i : i + size] == b[j : j + size]
        previous_a, previous_b = i + size, j + size


_prose = st.text(alphabet=st.sampled_from(["a", "b", "é", " ", "\n", ",", "我", "'"]), max_size=60)


@settings(max_examples=300)
@given(old=_prose, new=_prose, granularity=st.sampled_from(["word", "line"]))
def test_diff_ops_rebuild_both_texts(old, new, granularity):
    assert _old_and_new(diff_texts(old, new, granularity)) == (old, new)


def _chapter(rng: random.Random, size: int) -> str:
    vocabulary = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9)))
        for _ in range(2000)
    ]
    common = ["the", "a", "and", "of", "to", "she", "he", "was", "in", "it"]
    paragraphs: list[str] = []
    while sum(len(paragraph) + 2 for paragraph in paragraphs) < size:
        words = [
            rng.choice(common) if rng.random() < 0.4 else rng.choice(vocabulary)
            for _ in range(rng.randint(60, 250))
        ]
        paragraphs.append(" ".join(words).capitalize() + ".")
    return "\n\n".join(paragraphs) + "\n"


def test_a_100_kb_chapter_with_scattered_edits_diffs_word_by_word():
    rng = random.Random(7)
    old = _chapter(rng, 100_000)
    words = old.split(" ")
    for _ in range(40):
        words[rng.randrange(len(words))] = "EDITED"
    new = " ".join(words)
    ops = diff_texts(old, new, "word")
    assert _old_and_new(ops) == (old, new)
    assert sum(op.op == "insert" for op in ops) <= 40
    assert all(op.text == "EDITED" for op in ops if op.op == "insert")


def test_a_fully_rewritten_100_kb_chapter_still_rebuilds_both_texts():
    rng = random.Random(8)
    old, new = _chapter(rng, 100_000), _chapter(rng, 100_000)
    assert _old_and_new(diff_texts(old, new, "word")) == (old, new)
