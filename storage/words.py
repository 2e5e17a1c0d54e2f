"""Words of a novel: the one place that cuts text into tokens and lines and counts words.

Diffs, merges and word counts all cut text here, so they agree on what a word is.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

# Scripts written without spaces between words: every character is a word of its own.
# Han (with its radicals and the iteration marks), Hiragana, Katakana, Hangul.
_CJK_RANGES = (
    "\u1100-\u11ff"  # Hangul Jamo
    "\u2e80-\u2fdf"  # CJK and Kangxi radicals
    "\u3005-\u3007"  # 々 〆 〇
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\ua960-\ua97f"  # Hangul Jamo extended A
    "\uac00-\ud7ff"  # Hangul syllables, Jamo extended B
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uffdc"  # half-width Katakana and Hangul
    "\U0001b000-\U0001b16f"  # Kana supplement and extensions
    "\U00020000-\U0003ffff"  # CJK extensions B and later, compatibility supplement
)

# The lookahead keeps punctuation that lives in those blocks (・ ゠) out of the words.
_TOKEN = re.compile(
    rf"(?P<cjk>(?=\w)[{_CJK_RANGES}])"
    rf"|(?P<word>[^\W_{_CJK_RANGES}]+)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_CJK = re.compile(f"[{_CJK_RANGES}]")
_APOSTROPHES = frozenset("'\u2019")
# Joiners that make one word of their neighbours when counting: "well-known", "3.14".
_HYPHENS = frozenset("-\u2010\u2011")
_NUMBER_SEPARATORS = frozenset(".,")

_LINE = re.compile(r"[^\n]*\n|[^\n]+")
# Characters compared at a time when looking for where two versions of a text differ.
_RUN = 2048

# Markdown whose text is not prose a reader reads: link targets, images, autolinks,
# bare URLs, reference definitions, HTML comments and tags.
_MARKDOWN_NOISE = (
    (re.compile(r"<!--.*?-->", re.DOTALL), ""),
    (re.compile(r"^ {0,3}\[[^\]\n]+\]:[^\n]*$", re.MULTILINE), ""),
    (re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)"), ""),
    (re.compile(r"\[([^\]\n]*)\]\([^)\n]*\)"), r"\1"),
    (re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9+.-]*:|[^\s<>@]+@)[^\s<>]*>"), ""),
    (re.compile(r"</?[a-zA-Z][^<>]*>"), ""),
    (re.compile(r"\b(?:https?|ftp)://\S+"), ""),
)


def _is_mark(token: str) -> bool:
    return len(token) == 1 and unicodedata.category(token).startswith("M")


def _classified_tokens(text: str) -> list[tuple[str, str]]:
    """(kind, token) pairs, kind being "cjk", "word", "space" or "other"."""
    out: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "other"
        token = match.group()
        if out:
            prev_kind, prev = out[-1]
            # Combining marks (accents in NFD text, Indic vowel signs, emoji variation
            # selectors) belong to the character before them; `re` does not see them as \w.
            if kind == "other" and _is_mark(token) and prev_kind != "space":
                out[-1] = (prev_kind, prev + token)
                continue
            if kind == "word" and prev_kind == "word":
                out[-1] = ("word", prev + token)
                continue
            if kind == "word" and len(out) >= 2 and prev in _APOSTROPHES and out[-2][0] == "word":
                out[-2:] = [("word", out[-2][1] + prev + token)]
                continue
        out.append((kind, token))
    return out


def tokenize(text: str) -> list[str]:
    """Cut `text` into tokens whose concatenation is exactly `text`.

    A token is a run of word characters (letters, digits, combining marks; an apostrophe
    between two of them stays inside, as in "don't" and "l’homme"), a run of whitespace,
    one CJK ideograph, kana or Hangul syllable, or one other character (punctuation,
    symbols, emoji).
    """
    return [token for _, token in _classified_tokens(text)]


def split_lines(text: str) -> list[str]:
    """Cut `text` into lines, each keeping its "\\n"; only "\\n" ends a line."""
    return _LINE.findall(text)


def word_count(text: str) -> int:
    """Count the words of a Markdown body (the caller strips the front matter).

    Alphabetic scripts count one per word token, CJK one per character. Words joined by a
    hyphen ("well-known") or digits joined by "." or "," ("3.14") count once. Markdown
    syntax is punctuation and counts nothing; link targets, images, autolinks, bare URLs,
    reference definitions, HTML tags and comments are removed first, link text is kept.
    """
    for pattern, replacement in _MARKDOWN_NOISE:
        text = pattern.sub(replacement, text)
    patterns = _counting_patterns()
    if not any(unicodedata.category(ch).startswith("M") for ch in set(text)):
        # Without combining marks a word is a plain run: count runs, less the joiners.
        joined = sum(1 for match in patterns.joiners.finditer(text) if _joins(text, match.start()))
        return len(patterns.plain.findall(text)) - joined
    count = 0
    last_end = -2  # where the previous word ended; -2: no word just before
    for match in patterns.marked.finditer(text):
        start = match.start()
        if match.lastgroup == "cjk":
            count += 1
            last_end = -2
            continue
        if last_end != start - 1 or not _joins(text, start - 1):
            count += 1
        last_end = match.end()
    return count


def _joins(text: str, at: int) -> bool:
    """True if the one character at `at`, between two words, makes them one word."""
    joiner = text[at]
    if joiner in _HYPHENS:
        # Between letters or digits; a CJK character is a word of its own.
        return not (_CJK.match(text, at - 1) or _CJK.match(text, at + 1))
    return joiner in _NUMBER_SEPARATORS and text[at - 1].isdigit() and text[at + 1].isdigit()


def recount(old: str, old_words: int, new: str) -> int:
    """`word_count(new)`, given `old` and its count: only the lines between the lines both
    texts begin and end with are counted, so a one-word edit in a 50 KB chapter costs a
    paragraph. Exact because no word and no Markdown noise spans a line break, except
    HTML comments and tags: a text holding "<" is counted whole.
    """
    if "<" in old or "<" in new:
        return word_count(new)
    start, old_end, new_end = changed_lines(old, new)
    return old_words - word_count(old[start:old_end]) + word_count(new[start:new_end])


def changed_lines(old: str, new: str) -> tuple[int, int, int]:
    """`(start, old_end, new_end)`: `old[start:old_end]` became `new[start:new_end]`, and
    the texts are the same before `start` and after the ends, both cut at line ends.

    `start` is after every line both texts begin with; the lines after the ends are those
    both end with, but the first of them may be left inside (kept out only when the texts
    differ on that line's newline side). Found by comparing runs of characters, not lines:
    a 50 KB chapter is not cut into lines to find a one-word edit.
    """
    limit = min(len(old), len(new))
    start = old.rfind("\n", 0, _common_prefix(old, new, limit)) + 1
    tail = _common_suffix(old, new, limit - start)
    # The shared tail may begin mid-line in one text: its lines start after its first newline.
    newline = old.find("\n", len(old) - tail) if tail else -1
    if newline == -1:
        return start, len(old), len(new)
    after = len(old) - newline - 1
    return start, len(old) - after, len(new) - after


def _common_prefix(a: str, b: str, limit: int) -> int:
    """How many first characters (at most `limit`) `a` and `b` share."""
    return _shared_length(lambda i, j: a[i:j] == b[i:j], limit)


def _common_suffix(a: str, b: str, limit: int) -> int:
    """How many last characters (at most `limit`) `a` and `b` share."""
    la, lb = len(a), len(b)
    return _shared_length(lambda i, j: a[la - j : la - i] == b[lb - j : lb - i], limit)


def _shared_length(same: Callable[[int, int], bool], limit: int) -> int:
    """The longest shared run (at most `limit`), given `same(i, j)`: whether the
    characters i to j, counted from the end being compared, are the same in both texts.
    Runs of `_RUN` characters first, then a binary search inside the first that differs."""
    done = 0
    while done < limit:
        step = min(done + _RUN, limit)
        if not same(done, step):
            break
        done = step
    else:
        return limit
    lo, hi = done, step - 1  # the answer lies in [done, step - 1]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if same(done, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class _CountingPatterns:
    plain: re.Pattern[str]  # a word or a CJK character, in text without marks
    joiners: re.Pattern[str]  # a character between two word characters that may join them
    marked: re.Pattern[str]  # a word (with its marks) or a CJK character


@cache
def _counting_patterns() -> _CountingPatterns:
    """What `word_count` counts: a CJK character, or a word as `tokenize` cuts it
    (letters and digits, the combining marks that follow them, apostrophes between
    them). The same count as `tokenize`'s tokens, without building them: counting runs
    on every sync of a whole chapter. Built on first use, from `unicodedata`.
    """
    marks = _character_class(lambda ch: unicodedata.category(ch).startswith("M"))
    letter = rf"[^\W_{_CJK_RANGES}]"
    cjk = rf"(?=\w)[{_CJK_RANGES}]"
    apostrophe = "[" + "".join(sorted(_APOSTROPHES)) + "]"
    # Runs, not one character at a time: the two classes are disjoint, so no backtracking.
    marked_word = rf"{letter}(?:{letter}+|{marks}+)*"
    joiner = "[" + re.escape("".join(sorted(_HYPHENS | _NUMBER_SEPARATORS))) + "]"
    return _CountingPatterns(
        plain=re.compile(rf"{letter}+(?:{apostrophe}{letter}+)*|{cjk}"),
        joiners=re.compile(rf"(?<=[^\W_]){joiner}(?=[^\W_])"),
        marked=re.compile(rf"(?P<cjk>{cjk})|(?P<word>{marked_word}(?:{apostrophe}{marked_word})*)"),
    )


def _character_class(test: Callable[[str], bool]) -> str:
    """A regular-expression class of every code point for which `test` is true."""
    parts = []
    for lo, hi in _code_point_ranges(test):
        parts.append(re.escape(chr(lo)) + ("-" + re.escape(chr(hi)) if hi > lo else ""))
    return "[" + "".join(parts) + "]"


def _code_point_ranges(test: Callable[[str], bool]) -> list[tuple[int, int]]:
    """(first, last) code points of each run of characters for which `test` is true."""
    ranges: list[tuple[int, int]] = []
    for point in range(sys.maxunicode + 1):
        if test(chr(point)):
            if ranges and ranges[-1][1] == point - 1:
                ranges[-1] = (ranges[-1][0], point)
            else:
                ranges.append((point, point))
    return ranges
