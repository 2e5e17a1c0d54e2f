"""The file layout of a novel repository: which paths exist, what kind each is, and
the one validator every path from a client goes through."""

from __future__ import annotations

import re
import unicodedata

from storage.errors import Invalid

NOVEL_FILE = "novel.md"
KINDS = {"chapters": "chapter", "characters": "character", "locations": "location"}
_SLUG_PART = re.compile(r"[^a-z0-9]+")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")


def kind_of(path: str) -> str | None:
    """The path's kind: "novel", "chapter", "character", "location", or None outside the layout."""
    if path == NOVEL_FILE:
        return "novel"
    folder, _, name = path.partition("/")
    if folder in KINDS and name and "/" not in name:
        return KINDS[folder]
    return None


def check_path(path: str) -> str:
    """`path` if it is a Markdown file of the layout; Invalid(invalid_path) otherwise.

    Refused: anything outside `novel.md`, `chapters/`, `characters/`, `locations/`;
    `..`, backslashes, control or non-ASCII characters (no look-alikes), nested folders,
    names not ending in `.md`, hidden files.
    """

    def refuse(reason: str) -> Invalid:
        return Invalid(
            f"{path!r} is not a file this novel can hold: {reason}",
            code="invalid_path",
            details={"path": path[:300], "reason": reason},
        )

    if not isinstance(path, str) or not path:
        raise refuse("empty path")
    if len(path) > 200:
        raise refuse("longer than 200 characters")
    if any(unicodedata.category(ch).startswith("C") for ch in path):
        raise refuse("control characters")
    if "\\" in path:
        raise refuse("backslashes")
    if not path.isascii():
        raise refuse("only ASCII letters, digits, '-', '_' and '.' are allowed")
    if path.startswith("/") or ".." in path.split("/"):
        raise refuse("absolute path or '..'")
    if not path.endswith(".md"):
        raise refuse("not a .md file")
    if path == NOVEL_FILE:
        return path
    folder, _, name = path.partition("/")
    if folder not in KINDS or not name or "/" in name:
        raise refuse("outside novel.md, chapters/, characters/ and locations/")
    if not _SEGMENT.match(name) or name == ".md":
        raise refuse("the file name must start with a letter or digit")
    return path


def slugify(title: str) -> str:
    """An ASCII file-name slug for a title; non-Latin titles fall back to 'untitled'."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = _SLUG_PART.sub("-", ascii_title.lower()).strip("-")[:60].strip("-")
    return slug or "untitled"


def new_path(kind_folder: str, title: str, taken: set[str]) -> str:
    """`<folder>/<slug>.md`, made unique against `taken` with -2, -3 ..."""
    slug = slugify(title)
    candidate = f"{kind_folder}/{slug}.md"
    number = 2
    while candidate in taken:
        candidate = f"{kind_folder}/{slug}-{number}.md"
        number += 1
    return candidate
