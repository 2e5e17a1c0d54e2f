"""Git objects made in Python, and the pack file (with its index) that holds a batch of them.

Why the repository writes a commit's objects this way rather than as libgit2's loose
objects: a merged sync writes eight objects (two blobs, four trees, two commits). As
loose objects that is eight new files, each created, written, linked into place and
flushed, with the GIL held while libgit2 does it; on this project's test machines a
file creation alone costs up to a millisecond (`docs/benchmarks.md`). Gathered into one
pack they are two files, written from Python with the GIL released, and Git reads them
as it reads any pack (`git fetch` keeps what it receives as a pack for the same reason).

Only formats Git documents are produced (`gitformat-pack(5)`): pack version 2 with
whole (undeltified) objects, index version 2. `git repack` later deltifies and merges
the packs (`storage/maintenance.py`). Pure functions: writing the files durably is the
repository's business.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pygit2

# Object types, as a pack entry's header and `git cat-file -t` name them.
COMMIT, TREE, BLOB = 1, 2, 3
_NAMES = {COMMIT: b"commit", TREE: b"tree", BLOB: b"blob"}

# Tree entry modes as Git writes them (octal, no leading zero for trees).
TREE_MODE = b"40000"
FILE_MODE = b"100644"

# The fastest level, as libgit2 uses for loose objects: `git repack` recompresses anyway.
_LEVEL = 1
_INDEX_MAGIC = b"\377tOc"
_LARGE_OFFSET = 0x80000000

TreeEntries = dict[bytes, tuple[bytes, bytes]]  # name -> (mode, raw object id)


def object_id(kind: int, data: bytes) -> bytes:
    """The raw 20-byte SHA-1 id Git gives an object of type `kind` holding `data`."""
    digest = hashlib.sha1(b"%s %d\0" % (_NAMES[kind], len(data)))
    digest.update(data)
    return digest.digest()


def tree_data(entries: Mapping[bytes, tuple[bytes, bytes]]) -> bytes:
    """A tree object's content: entries in Git's order (a subtree sorts as `name/`)."""

    def order(name: bytes) -> bytes:
        return name + b"/" if entries[name][0] == TREE_MODE else name

    names = sorted(entries, key=order)
    return b"".join(b"%s %s\0%s" % (entries[name][0], name, entries[name][1]) for name in names)


def parse_tree(data: bytes, oid: str = "") -> TreeEntries:
    """A tree object's entries (mode, name, id), modes written as libgit2 writes them, so
    that writing the tree again with `tree_data` gives the object libgit2's TreeBuilder
    would (the same bytes, for a tree Git wrote)."""
    entries: TreeEntries = {}
    at, end = 0, len(data)
    try:
        while at < end:
            space = data.index(b" ", at)
            nul = data.index(b"\0", space)
            if nul + 21 > end:
                raise ValueError("entry cut short")
            mode = _canonical_mode(data[at:space])
            entries[data[space + 1 : nul]] = (mode, data[nul + 1 : nul + 21])
            at = nul + 21
    except ValueError as exc:
        # Worded as libgit2 words damage, so the repository reports it as such.
        raise pygit2.GitError(f"{oid}: malformed tree object ({exc})") from exc
    return entries


def _canonical_mode(mode: bytes) -> bytes:
    """A tree entry's mode as libgit2 writes it back ("%o": "040000" from an old Git
    becomes "40000", what Git writes and what a folder is recognized by). ValueError if
    it is not octal."""
    return b"%o" % int(mode, 8)


def commit_data(
    tree: bytes,
    parents: Sequence[bytes],
    author: pygit2.Signature,
    committer: pygit2.Signature,
    message: str,
) -> bytes:
    """A commit object's content, byte for byte what libgit2's `git_commit_create` writes."""
    lines = [b"tree " + tree.hex().encode()]
    lines += [b"parent " + parent.hex().encode() for parent in parents]
    lines.append(b"author " + _signature(author))
    lines.append(b"committer " + _signature(committer))
    return b"\n".join(lines) + b"\n\n" + message.encode("utf-8")


def _signature(sig: pygit2.Signature) -> bytes:
    offset = sig.offset
    sign = b"-" if offset < 0 else b"+"
    hours, minutes = divmod(abs(offset), 60)
    # libgit2 writes the time as an unsigned 32-bit number, and so do we.
    when = sig.time & 0xFFFFFFFF
    return b"%s <%s> %d %s%02d%02d" % (sig.raw_name, sig.raw_email, when, sign, hours, minutes)


@dataclass(frozen=True)
class Pack:
    """A pack and its index, ready to be written as `pack-<name>.pack` and `.idx`."""

    name: str
    pack: bytes
    index: bytes


def build_pack(objects: Mapping[bytes, tuple[int, bytes]]) -> Pack:
    """A pack of `objects` (raw id -> (type, content)), each stored whole, and its index.

    The ids are the caller's (`object_id`); a pack holding an object under a wrong id
    would hand out wrong data, so callers make ids only with `object_id`.
    """
    parts = [struct.pack(">4sII", b"PACK", 2, len(objects))]
    offset = 12
    rows = []
    for oid, (kind, data) in objects.items():
        if offset >= _LARGE_OFFSET:
            # A commit's pack is bounded by its request (2 MiB files, a bounded number
            # of changes); the 8-byte offsets of bigger packs are not written here.
            raise ValueError("build_pack does not write packs of 2 GiB or more")
        entry = _entry_header(kind, len(data)) + zlib.compress(data, _LEVEL)
        rows.append((oid, zlib.crc32(entry), offset))
        parts.append(entry)
        offset += len(entry)
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part)
    checksum = digest.digest()
    parts.append(checksum)
    return Pack(checksum.hex(), b"".join(parts), _index(rows, checksum))


def _entry_header(kind: int, size: int) -> bytes:
    """Type and size, little-endian base-128: 4 size bits in the first byte, 7 after."""
    first = (kind << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(first | 0x80)
        first = size & 0x7F
        size >>= 7
    out.append(first)
    return bytes(out)


def _index(rows: list[tuple[bytes, int, int]], checksum: bytes) -> bytes:
    """Index version 2: fan-out table, sorted ids, CRC-32s, 4-byte offsets, checksums."""
    rows.sort()
    fanout = [0] * 256
    for oid, _crc, _offset in rows:
        fanout[oid[0]] += 1
    total = 0
    for byte in range(256):
        total += fanout[byte]
        fanout[byte] = total
    count = len(rows)
    body = b"".join(
        [
            _INDEX_MAGIC,
            struct.pack(">I", 2),
            struct.pack(">256I", *fanout),
            b"".join(oid for oid, _crc, _offset in rows),
            struct.pack(f">{count}I", *(crc for _oid, crc, _offset in rows)),
            struct.pack(f">{count}I", *(offset for _oid, _crc, offset in rows)),
            checksum,
        ]
    )
    return body + hashlib.sha1(body).digest()


# An index's header: its magic and version (version 2), then the fanout table, whose last
# entry is the number of objects.
INDEX_HEADER_BYTES = 8 + 256 * 4


def _index_layout(data: bytes) -> tuple[int, int, int, int]:
    """(count, where the ids start, bytes from one id to the next, offset of the id in
    its entry) of a pack index of version 2 or the original version 1."""
    if data[:4] == _INDEX_MAGIC:
        (version,) = struct.unpack_from(">I", data, 4)
        if version != 2:
            raise ValueError(f"pack index version {version} is not one Git writes")
        fanout, stride, skip = 8, 20, 0  # the fanout table, then the ids one after another
    else:
        fanout, stride, skip = 0, 24, 4  # the fanout table, then (offset, id) pairs
    if len(data) < fanout + 256 * 4:
        raise ValueError("pack index cut short")
    (count,) = struct.unpack_from(">I", data, fanout + 255 * 4)
    return count, fanout + 256 * 4, stride, skip


def index_object_count(header: bytes) -> int:
    """How many objects a pack index lists, from its first INDEX_HEADER_BYTES bytes."""
    return _index_layout(header)[0]


def index_object_ids(data: bytes) -> list[str]:
    """The ids (hex) of every object a pack index lists, version 2 or the original
    version 1 (`gitformat-pack(5)`); ValueError if `data` is not a whole index."""
    count, start, stride, skip = _index_layout(data)
    if len(data) < start + count * stride:
        raise ValueError("pack index cut short")
    ends = range(start + skip, start + count * stride, stride)
    return [data[at : at + 20].hex() for at in ends]
