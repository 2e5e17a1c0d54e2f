"""Diffs of texts: which parts of a revision are kept, deleted and inserted.

Owns the sequence matcher that merges also build on, word by word for prose (a Markdown
paragraph is one long line) or line by line.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

from storage.words import changed_lines, split_lines, tokenize, word_count

# Above this many token pairs, difflib's quadratic search is too slow to run on a request:
# the region is reported as replaced instead. Unique-token anchoring keeps regions far
# smaller than this in real prose.
_QUADRATIC_BUDGET = 250_000


@dataclass(frozen=True)
class DiffOp:
    """One run of a diff: text kept ("equal"), removed ("delete") or added ("insert")."""

    op: Literal["equal", "insert", "delete"]
    text: str


def diff_texts(old: str, new: str, granularity: Literal["word", "line"] = "word") -> list[DiffOp]:
    """Diff two texts word by word (tokens of `storage.words.tokenize`) or line by line.

    Runs of the same kind are coalesced. The equal and delete texts joined give `old`,
    the equal and insert texts joined give `new`.
    """
    split = tokenize if granularity == "word" else split_lines
    a, b = split(old), split(new)
    ops: list[DiffOp] = []
    i = j = 0
    for a_start, b_start, size in [*matching_blocks(a, b), (len(a), len(b), 0)]:
        _append(ops, "delete", "".join(a[i:a_start]))
        _append(ops, "insert", "".join(b[j:b_start]))
        _append(ops, "equal", "".join(a[a_start : a_start + size]))
        i, j = a_start + size, b_start + size
    return ops


def _append(ops: list[DiffOp], op: Literal["equal", "insert", "delete"], text: str) -> None:
    if not text:
        return
    if ops and ops[-1].op == op:
        ops[-1] = DiffOp(op, ops[-1].text + text)
    else:
        ops.append(DiffOp(op, text))


def matching_blocks(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[tuple[int, int, int]]:
    """Blocks `(i, j, size)` with `a[i:i+size] == b[j:j+size]`, increasing in both, maximal.

    Patience-style: common prefix and suffix first, then tokens that occur once in both
    sides anchor the alignment, and difflib only runs between anchors. Plain
    `SequenceMatcher` is quadratic on 35,000 tokens where spaces and "the" repeat
    thousands of times, and its autojunk heuristic throws exactly those tokens away.
    """
    found: list[tuple[int, int, int]] = []
    pending = [(0, len(a), 0, len(b))]
    while pending:
        a_lo, a_hi, b_lo, b_hi = pending.pop()
        start = a_lo
        while a_lo < a_hi and b_lo < b_hi and a[a_lo] == b[b_lo]:
            a_lo += 1
            b_lo += 1
        if a_lo > start:
            found.append((start, b_lo - (a_lo - start), a_lo - start))
        end = a_hi
        while a_lo < a_hi and b_lo < b_hi and a[a_hi - 1] == b[b_hi - 1]:
            a_hi -= 1
            b_hi -= 1
        if a_hi < end:
            found.append((a_hi, b_hi, end - a_hi))
        if a_lo == a_hi or b_lo == b_hi:
            continue
        anchors = _unique_anchors(a, a_lo, a_hi, b, b_lo, b_hi)
        if anchors:
            for i, j in anchors:
                pending.append((a_lo, i, b_lo, j))
                found.append((i, j, 1))
                a_lo, b_lo = i + 1, j + 1
            pending.append((a_lo, a_hi, b_lo, b_hi))
        elif (a_hi - a_lo) * (b_hi - b_lo) <= _QUADRATIC_BUDGET:
            matcher = SequenceMatcher(None, a[a_lo:a_hi], b[b_lo:b_hi], autojunk=False)
            found.extend(
                (a_lo + i, b_lo + j, size) for i, j, size in matcher.get_matching_blocks() if size
            )
    found.sort()
    blocks: list[tuple[int, int, int]] = []
    for i, j, size in found:
        if blocks and blocks[-1][0] + blocks[-1][2] == i and blocks[-1][1] + blocks[-1][2] == j:
            blocks[-1] = (blocks[-1][0], blocks[-1][1], blocks[-1][2] + size)
        else:
            blocks.append((i, j, size))
    return blocks


def _unique_anchors(
    a: Sequence[Hashable], a_lo: int, a_hi: int, b: Sequence[Hashable], b_lo: int, b_hi: int
) -> list[tuple[int, int]]:
    """Pairs of positions of tokens occurring once on each side, longest in-order chain."""
    a_counts = Counter(a[a_lo:a_hi])
    b_counts = Counter(b[b_lo:b_hi])
    b_position = {b[j]: j for j in range(b_lo, b_hi) if b_counts[b[j]] == 1 and a_counts[b[j]] == 1}
    pairs = [(i, b_position[a[i]]) for i in range(a_lo, a_hi) if a[i] in b_position]
    if not pairs:
        return []
    # Longest increasing subsequence of the b positions (patience sorting).
    tails: list[int] = []
    tail_index: list[int] = []
    previous = [-1] * len(pairs)
    for index, (_, j) in enumerate(pairs):
        slot = bisect_left(tails, j)
        if slot == len(tails):
            tails.append(j)
            tail_index.append(index)
        else:
            tails[slot] = j
            tail_index[slot] = index
        previous[index] = tail_index[slot - 1] if slot else -1
    chain = []
    index = tail_index[-1]
    while index != -1:
        chain.append(pairs[index])
        index = previous[index]
    chain.reverse()
    return chain


def word_changes(old: str, new: str) -> tuple[int, int]:
    """(words inserted, words deleted) going from `old` to `new`, counted by `word_count`.

    Paragraphs (lines) are matched first and only the changed ones are diffed word by
    word: a one-word edit in a 50 KB chapter costs a paragraph's tokens, not the book's.
    """
    added = removed = 0
    # The lines both texts begin and end with match as they are; only those between are
    # cut into lines and matched (`matching_blocks` would take the same away first).
    start, old_end, new_end = changed_lines(old, new)
    a, b = split_lines(old[start:old_end]), split_lines(new[start:new_end])
    i = j = 0
    for a_start, b_start, size in [*matching_blocks(a, b), (len(a), len(b), 0)]:
        if i < a_start or j < b_start:
            for op in diff_texts("".join(a[i:a_start]), "".join(b[j:b_start])):
                if op.op == "insert":
                    added += word_count(op.text)
                elif op.op == "delete":
                    removed += word_count(op.text)
        i, j = a_start + size, b_start + size
    return added, removed
