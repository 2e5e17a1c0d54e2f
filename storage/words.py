"""Words of a novel: the one place that cuts text into tokens and lines and counts words.

Diffs, merges and word counts all cut text here, so they agree on what a word is.
"""

from __future__ import annotations

import re
import unicodedata

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
_APOSTROPHES = frozenset("'\u2019")
# Joiners that make one word of their neighbours when counting: "well-known", "3.14".
_HYPHENS = frozenset("-\u2010\u2011")
_NUMBER_SEPARATORS = frozenset(".,")

_LINE = re.compile(r"[^\n]*\n|[^\n]+")

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
    tokens = _classified_tokens(text)
    return sum(
        1
        for index, (kind, _) in enumerate(tokens)
        if kind == "cjk" or (kind == "word" and not _continues_word(tokens, index))
    )


def _continues_word(tokens: list[tuple[str, str]], index: int) -> bool:
    if index < 2 or tokens[index - 2][0] != "word":
        return False
    joiner = tokens[index - 1][1]
    if joiner in _HYPHENS:
        return True
    return (
        joiner in _NUMBER_SEPARATORS
        and tokens[index - 2][1][-1].isdigit()
        and tokens[index][1][0].isdigit()
    )
