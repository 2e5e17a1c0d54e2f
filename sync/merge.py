"""Three-way merge of a novel's files: line by line, then word by word for prose.

Owns what counts as a conflict. A conflict never writes markers into a file: the server's
text stays and a `ConflictHunk` carries base, server and device versions for the writer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.diff import matching_blocks
from storage.documents import (
    Document,
    front_matter_end,
    key_order_for,
    parse_document,
    render_document,
    render_yaml,
)
from storage.errors import Invalid
from storage.words import changed_lines, split_lines, tokenize

_ABSENT = object()
# Types whose YAML follows from the type and Python's equality; not float, as 0.0 and -0.0
# are equal and written differently.
_PLAIN = frozenset({str, int, bool, type(None)})
# `(start, end, tokens)`: one side replaces `base[start:end]` with `tokens`.
_Edit = tuple[int, int, tuple[str, ...]]


@dataclass
class ConflictHunk:
    """Both sides changed the same words differently.

    `ours` is the server head's text (what the merged file holds at that place), `theirs`
    the device's. Body hunks span whole lines of the three versions. A front-matter hunk
    names its `field` and holds YAML-rendered values. `None` means absent: the field is
    missing on that side, or (with `field` None) the whole file was deleted on that side.
    """

    base: str | None
    ours: str | None
    theirs: str | None
    field: str | None = None


@dataclass
class MergeResult:
    """The merged text (`None`: the file is deleted) and the conflicts met on the way."""

    text: str | None
    conflicts: list[ConflictHunk] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.conflicts


def merge_texts(base: str, ours: str, theirs: str) -> MergeResult:
    """Merge two edits of `base`: `ours` from the server head, `theirs` from a device.

    Line-level diff3 first. Where both sides changed the same lines, the lines are merged
    again token by token, so edits to different sentences of one paragraph both land.
    Edits to the same tokens, or different insertions at the same point, conflict: the
    merged text keeps ours for those lines and a hunk records base, ours and theirs.
    """
    text, conflicts = _merge_lines(base, ours, theirs)
    return MergeResult(text, conflicts)


def _merge_lines(base: str, ours: str, theirs: str) -> tuple[str, list[ConflictHunk]]:
    if ours == theirs or theirs == base:
        return ours, []
    if ours == base:
        return theirs, []
    merged: list[str] = []
    conflicts: list[ConflictHunk] = []
    for kind, b, o, t in _diff3(split_lines(base), split_lines(ours), split_lines(theirs)):
        if kind == "conflict":
            _merge_tokens("".join(b), "".join(o), "".join(t), merged, conflicts)
        else:
            merged.extend(t if kind == "theirs" else o)
    return "".join(merged), conflicts


def merge_documents(
    path: str, base: str | None, ours: str | None, theirs: str | None
) -> MergeResult:
    """Merge one file of a novel repository; `None` means the file is absent on that side.

    Front matter merges field by field (a field changed differently on both sides is a
    conflict that keeps ours), the body with `merge_texts`. A file added on both sides
    merges against an empty base. A file deleted on one side and edited on the other is
    kept as edited, with a conflict whose deleted side is `None`; deleted on one side and
    unchanged on the other, it is deleted. Front matter that does not parse on any side
    makes it a plain text merge of the whole file: merging never raises.
    """
    if ours == theirs:
        return MergeResult(ours)
    if base is None:
        if ours is None or theirs is None:
            return MergeResult(theirs if ours is None else ours)
        base = ""
    if ours is None or theirs is None:
        edited = theirs if ours is None else ours
        if edited == base:
            return MergeResult(None)
        return MergeResult(edited, [ConflictHunk(base=base, ours=ours, theirs=theirs)])
    if ours == base:
        return MergeResult(theirs)
    if theirs == base:
        return MergeResult(ours)
    spliced = _apart(base, ours, theirs)
    if spliced is not None:
        return MergeResult(spliced)
    try:
        base_doc, ours_doc, theirs_doc = (parse_document(text) for text in (base, ours, theirs))
    except Invalid:
        return merge_texts(base, ours, theirs)
    meta, conflicts = _merge_meta(base_doc.meta, ours_doc.meta, theirs_doc.meta)
    body, body_conflicts = _merge_lines(base_doc.body, ours_doc.body, theirs_doc.body)
    text = _write(path, meta, body, (ours, ours_doc), (theirs, theirs_doc))
    return MergeResult(text, conflicts + body_conflicts)


def _apart(base: str, ours: str, theirs: str) -> str | None:
    """Both sides' edits, when each changes its own lines of the body with at least one
    line neither touched between them; None otherwise.

    What the line merge gives for such edits (each chunk changed by one side only), found
    by comparing runs of characters: no front matter parsed, no lines matched. A sync's
    one-word edit against another device's edit elsewhere in a 50 KB chapter is the usual
    case, and the line merge cost ~0.8 ms of it.
    """
    body = front_matter_end(base)
    if body is None:
        return None
    start, base_end, ours_end = changed_lines(base, ours)
    theirs_start, theirs_base_end, theirs_end = changed_lines(base, theirs)
    if min(start, theirs_start) < body:
        return None  # front matter merges field by field
    if base_end < theirs_start:
        return ours[:ours_end] + base[base_end:theirs_start] + theirs[theirs_start:]
    if theirs_base_end < start:
        return theirs[:theirs_end] + base[theirs_base_end:start] + ours[start:]
    return None


def _write(path: str, meta: dict[str, Any], body: str, *sides: tuple[str, Document]) -> str:
    # Reuse a side's front matter bytes when its metadata won: comments and the writer's
    # own quoting survive, and the merge commit shows no spurious front-matter change.
    for text, document in sides:
        if _same_meta(document.meta, meta):
            return text[: len(text) - len(document.body)] + body
    return render_document(meta, body, key_order_for(path))


def _same_meta(left: dict[str, Any], right: dict[str, Any]) -> bool:
    return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)


def _same(left: Any, right: Any) -> bool:
    """True if two front-matter values (or `_ABSENT`) are the same YAML value."""
    # Equal plain values are the same YAML: rendering them, the costly part of a merge's
    # front matter, is only needed for the rest.
    if left is right or (type(left) is type(right) and type(left) in _PLAIN and left == right):
        return True
    return _value(left) == _value(right)


def _value(value: Any) -> str | None:
    # Compared as YAML so that `true` and `1`, equal in Python, are different values.
    return None if value is _ABSENT else render_yaml(value)


def _merge_meta(
    base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]
) -> tuple[dict[str, Any], list[ConflictHunk]]:
    merged: dict[str, Any] = {}
    conflicts: list[ConflictHunk] = []
    keys = list(dict.fromkeys([*ours, *theirs, *base]))
    for key in keys:
        b, o, t = (side.get(key, _ABSENT) for side in (base, ours, theirs))
        if _same(o, t) or _same(t, b):
            chosen = o
        elif _same(o, b):
            chosen = t
        else:
            chosen = o
            conflicts.append(
                ConflictHunk(base=_value(b), ours=_value(o), theirs=_value(t), field=str(key))
            )
        if chosen is not _ABSENT:
            merged[key] = chosen
    return merged, conflicts


def _diff3(
    base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]
) -> Iterator[tuple[str, Sequence[str], Sequence[str], Sequence[str]]]:
    """Regions `(kind, base, ours, theirs)` covering all three sequences in order.

    Kind is "same" (untouched), "ours" or "theirs" (changed on that side only), "both"
    (the same change on both sides) or "conflict".
    """
    b = o = t = 0
    for b_start, b_end, o_start, o_end, t_start, t_end in _stable_regions(base, ours, theirs):
        if b < b_start or o < o_start or t < t_start:
            chunk = base[b:b_start], ours[o:o_start], theirs[t:t_start]
            yield (_changed_by(*chunk), *chunk)
        if b_end > b_start:
            yield "same", base[b_start:b_end], ours[o_start:o_end], theirs[t_start:t_end]
        b, o, t = b_end, o_end, t_end


def _changed_by(base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]) -> str:
    if ours == theirs:
        return "both"
    if base == ours:
        return "theirs"
    if base == theirs:
        return "ours"
    return "conflict"


def _stable_regions(
    base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]
) -> list[tuple[int, int, int, int, int, int]]:
    """Base ranges left unchanged by both sides, with where they sit in ours and theirs."""
    ours_blocks = matching_blocks(base, ours)
    theirs_blocks = matching_blocks(base, theirs)
    regions = []
    io = it = 0
    while io < len(ours_blocks) and it < len(theirs_blocks):
        ob, oo, on = ours_blocks[io]
        tb, tt, tn = theirs_blocks[it]
        start, end = max(ob, tb), min(ob + on, tb + tn)
        if start < end:
            o_start, t_start = oo + start - ob, tt + start - tb
            regions.append(
                (start, end, o_start, o_start + end - start, t_start, t_start + end - start)
            )
        if ob + on < tb + tn:
            io += 1
        else:
            it += 1
    regions.append((len(base), len(base), len(ours), len(ours), len(theirs), len(theirs)))
    return regions


def _merge_tokens(
    base: str, ours: str, theirs: str, merged: list[str], conflicts: list[ConflictHunk]
) -> None:
    """Merge lines both sides changed, word by word; conflicts widen back to whole lines.

    Lines are cut only at newlines all three versions share, so each hunk is whole lines
    of every version and the merged text holds exactly its `ours` there.
    """
    line = _Lines()
    regions = _diff3(_line_tokens(base), _line_tokens(ours), _line_tokens(theirs))
    for kind, b, o, t in regions:
        if kind != "same":
            resolved = _resolve(kind, b, o, t)
            line.add("".join(b), "".join(o), "".join(t), resolved)
            continue
        for token in o:
            line.add(token, token, token, token)
            if token.endswith("\n"):
                line.flush(merged, conflicts)
    line.flush(merged, conflicts)


def _line_tokens(text: str) -> list[str]:
    # Tokenizing line by line makes every newline end a token, so lines can be cut there.
    return [token for line in split_lines(text) for token in tokenize(line)]


def _resolve(
    kind: str, base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]
) -> str | None:
    """The merged text of one changed token region, `None` when it is a conflict."""
    if kind == "theirs":
        return "".join(theirs)
    if kind != "conflict":
        return "".join(ours)
    # diff3 calls any two changes with no unchanged token between them a conflict, but
    # replacements that merely touch ("dog" and "." in "dog.", neighbouring CJK
    # characters) are independent. An insertion touching the other side's edit is not:
    # it may belong to the words that edit removed.
    edits = _combine_insertions(sorted(set(_edits(base, ours)) | set(_edits(base, theirs))))
    if edits is None:
        return None
    merged: list[str] = []
    position = 0
    for index, (start, end, tokens) in enumerate(edits):
        if index and (
            start < position
            or start == position
            and (start == end or _is_insertion(edits[index - 1]))
        ):
            return None
        merged.extend(base[position:start])
        merged.extend(tokens)
        position = end
    merged.extend(base[position:])
    return "".join(merged)


def _is_insertion(edit: _Edit) -> bool:
    return edit[0] == edit[1]


def _combine_insertions(edits: list[_Edit]) -> list[_Edit] | None:
    """Fold two insertions at one point when one extends the other, else `None`.

    A device that resends text the server already has, with what it wrote since, inserts
    the server's insertion with more appended (before its final newline): taking the
    longer one loses nothing of either. Any other pair of insertions is a conflict.
    """
    combined: list[_Edit] = []
    for edit in edits:
        if combined and _is_insertion(edit) and combined[-1][:2] == edit[:2]:
            shorter, longer = sorted((combined[-1][2], edit[2]), key=len)
            if not _appends_to(longer, shorter):
                return None
            combined[-1] = (edit[0], edit[1], longer)
        else:
            combined.append(edit)
    return combined


def _appends_to(longer: tuple[str, ...], shorter: tuple[str, ...]) -> bool:
    cut = len(shorter)
    while cut and shorter[cut - 1].isspace():
        cut -= 1
    ending = shorter[cut:]
    return longer[:cut] == shorter[:cut] and longer[len(longer) - len(ending) :] == ending


def _edits(base: Sequence[str], side: Sequence[str]) -> list[_Edit]:
    """`(start, end, tokens)`: `side` replaces `base[start:end]` with `tokens`."""
    edits = []
    i = j = 0
    for base_start, side_start, size in [*matching_blocks(base, side), (len(base), len(side), 0)]:
        if i < base_start or j < side_start:
            edits.append((i, base_start, tuple(side[j:side_start])))
        i, j = base_start + size, side_start + size
    return edits


class _Lines:
    """The line(s) being assembled by `_merge_tokens`, in all three versions at once."""

    def __init__(self) -> None:
        self.base: list[str] = []
        self.ours: list[str] = []
        self.theirs: list[str] = []
        self.merged: list[str] = []
        self.conflicted = False

    def clear(self) -> None:
        for part in (self.base, self.ours, self.theirs, self.merged):
            part.clear()
        self.conflicted = False

    def add(self, base: str, ours: str, theirs: str, merged: str | None) -> None:
        """Add one region; `merged` is `None` when the region is a conflict."""
        self.base.append(base)
        self.ours.append(ours)
        self.theirs.append(theirs)
        self.merged.append(ours if merged is None else merged)
        self.conflicted = self.conflicted or merged is None

    def flush(self, merged: list[str], conflicts: list[ConflictHunk]) -> None:
        if self.conflicted:
            ours = "".join(self.ours)
            merged.append(ours)
            conflicts.append(ConflictHunk("".join(self.base), ours, "".join(self.theirs)))
        else:
            merged.extend(self.merged)
        self.clear()
