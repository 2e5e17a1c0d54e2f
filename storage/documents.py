"""Documents of a novel repository: the one reader and writer of YAML front matter.

A document is `---`, a YAML mapping, `---`, then the Markdown body; writing is stable
(same metadata, same bytes) so Git history only shows real changes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from storage.errors import Invalid

CHAPTER_KEYS = ("id", "title", "number", "weight", "status", "draft", "summary")
CHARACTER_KEYS = (
    "id",
    "name",
    "role",
    "appearance",
    "personality",
    "backstory",
    "motivation",
    "image",
)
LOCATION_KEYS = ("id", "name", "type", "parent", "image")
NOVEL_KEYS = ("title", "description", "genre", "status", "target_word_count")

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_FRONT_MATTER = re.compile(
    r"\A\ufeff?---[ \t]*\r?\n(?P<yaml>.*?)^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE
)
_OPENING_FENCE = re.compile(r"\A\ufeff?---[ \t]*\r?\n")
# Never wrap: a wrapped summary would turn a one-word edit into a multi-line diff.
_NO_WRAP = 2**31 - 1
_ODD_LINE_BREAKS = frozenset("\r\x85\u2028\u2029")
# Immutable values: a mapping of them is copied whole by `dict(...)`.
_PLAIN = frozenset({str, int, float, bool, type(None)})
# Front matter up to this long is remembered by its text (`_plain_front_matter`).
_REMEMBERED_FRONT_MATTER = 4096


def _without_timestamps(resolvers: dict[Any, list[tuple[str, Any]]]) -> dict:
    return {
        first: [(tag, regexp) for tag, regexp in entries if tag != _TIMESTAMP_TAG]
        for first, entries in resolvers.items()
    }


# libyaml's parser when PyYAML has it (its wheels do): parsing front matter runs on every
# sync and index rebuild, and the C parser takes a third less time. The constructor and
# the resolvers stay PyYAML's own, so both load the same values.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):
    """Safe loading, with dates left as the strings the writer typed.

    Loading `date: 2024-05-01T10:00:00+02:00` as a datetime would write it back in
    another form (UTC, other separators): round trips would not be lossless.
    """


_Loader.yaml_implicit_resolvers = _without_timestamps(yaml.SafeLoader.yaml_implicit_resolvers)
_Loader.add_constructor(_TIMESTAMP_TAG, yaml.SafeLoader.construct_yaml_str)


class _Dumper(yaml.SafeDumper):
    """Safe dumping that writes date-like strings plain, mirroring `_Loader`."""


_Dumper.yaml_implicit_resolvers = _without_timestamps(yaml.SafeDumper.yaml_implicit_resolvers)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = None
    if any(char in value for char in _ODD_LINE_BREAKS):
        # PyYAML writes these raw inside quotes and then reads them back as folded lines.
        style = '"'
    elif "\n" in value and not value.endswith("\n\n") and value.strip("\n"):
        # Multi-line values (summaries, backstories) read best, and diff best, as blocks;
        # not with several final newlines, which need a "..." document end marker.
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


@dataclass
class Document:
    """A parsed file: front matter mapping and Markdown body."""

    meta: dict[str, Any]
    body: str


def front_matter_end(text: str) -> int | None:
    """Where the body begins: after the closing `---` line of the front matter, 0 when
    there is none, None when it has no closing line. No YAML is parsed."""
    if not _OPENING_FENCE.match(text):
        return 0
    match = _FRONT_MATTER.match(text)
    return None if match is None else match.end()


def parse_document(text: str) -> Document:
    """Read a document's front matter and body.

    Text that does not start with a `---` line has no front matter: `meta` is empty and
    `body` is the whole text. Otherwise `body` is exactly the text after the closing `---`
    line, so it is always a suffix of `text`. Raises `Invalid` (code
    `invalid_front_matter`) when the block is unterminated, is not YAML, or is not a
    mapping.
    """
    if not _OPENING_FENCE.match(text):
        return Document(meta={}, body=text)
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise Invalid(
            "The front matter has no closing '---' line.",
            code="invalid_front_matter",
            details={"reason": "unterminated"},
        )
    try:
        meta = _load_front_matter(match.group("yaml"))
    except yaml.YAMLError as error:
        details: dict[str, Any] = {"reason": "not_yaml", "problem": str(error)}
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            # +2: the opening fence is line 1 of the file, and YAML marks count from 0.
            details["line"] = mark.line + 2
        raise Invalid(
            "The front matter is not valid YAML.", code="invalid_front_matter", details=details
        ) from error
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise Invalid(
            "The front matter must be a mapping of fields.",
            code="invalid_front_matter",
            details={"reason": "not_a_mapping", "type": type(meta).__name__},
        )
    return Document(meta=meta, body=text[match.end() :])


def _load_front_matter(source: str) -> Any:
    """The YAML `source` loaded; as a new mapping each time, also when remembered.

    A sync parses a chapter's front matter in every version it meets (the device's, the
    base, the head, the merged one), and the versions of a chapter mostly hold the same:
    a short mapping of plain values is loaded once (`_plain_front_matter`).
    """
    pairs = _plain_front_matter(source) if len(source) <= _REMEMBERED_FRONT_MATTER else None
    if pairs is not None:
        return dict(pairs)
    return yaml.load(source, Loader=_Loader)  # _Loader is a SafeLoader


@functools.lru_cache(maxsize=1024)
def _plain_front_matter(source: str) -> tuple[tuple[Any, Any], ...] | None:
    """The (key, value) pairs `source` loads to when it is a mapping of plain values
    (immutable, so a copy of the mapping is a copy of all of it), else None."""
    meta = yaml.load(source, Loader=_Loader)  # _Loader is a SafeLoader
    if not isinstance(meta, dict) or any(
        type(key) not in _PLAIN or type(value) not in _PLAIN for key, value in meta.items()
    ):
        return None
    return tuple(meta.items())


def render_yaml(value: Any) -> str:
    """Render one value (or a whole mapping) as block-style YAML, without a final newline."""
    # A lone plain scalar is emitted as a document with an explicit end marker.
    return _dump(_sorted_mappings(value)).removesuffix("...\n").removesuffix("\n")


def _dump(value: Any) -> str:
    return yaml.dump(
        value,
        Dumper=_Dumper,
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=False,
        width=_NO_WRAP,
    )


def render_document(meta: dict[str, Any], body: str, key_order: Sequence[str] | None = None) -> str:
    """Write a document: front matter then body, the same bytes for the same input.

    Keys in `key_order` come first in that order, the others after them sorted; nested
    mappings are sorted. Strings are quoted only where YAML needs it, never wrapped, and
    multi-line strings are written as `|` blocks. Empty `meta` writes no front matter at
    all (so a plain Markdown file stays byte for byte what it was), except when the body
    itself starts with a `---` line: then `---\\n---\\n` keeps it from being read back as
    front matter.
    """
    if not meta:
        return "---\n---\n" + body if _OPENING_FENCE.match(body) else body
    order = {key: index for index, key in enumerate(key_order or ())}
    keys = sorted(meta, key=lambda key: (order.get(key, len(order)), str(key)))
    ordered = {key: _sorted_mappings(meta[key]) for key in keys}
    return f"---\n{_dump(ordered)}---\n{body}"


def key_order_for(path: str) -> tuple[str, ...]:
    """The front-matter key order of the file at `path` in a novel repository."""
    if path.startswith("chapters/"):
        return CHAPTER_KEYS
    if path.startswith("characters/"):
        return CHARACTER_KEYS
    if path.startswith("locations/"):
        return LOCATION_KEYS
    if path == "novel.md":
        return NOVEL_KEYS
    return ()


def _sorted_mappings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_mappings(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted_mappings(item) for item in value]
    return value
