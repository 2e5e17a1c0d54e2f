"""Objects and packs made in Python (`storage/packs.py`) against libgit2 and real `git`:
the same ids libgit2 gives the same content, and packs both read back byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pygit2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pygit2.enums import FileMode

from storage import packs
from storage.repository import Author, NovelRepository

NAME = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\0"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", ".."))


@pytest.fixture
def raw(tmp_path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path / "raw.git"), bare=True)


def git(repo: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", f"--git-dir={repo}", *args], input=stdin, capture_output=True, check=False
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(NAME, st.sampled_from(["file", "dir", "exe"]), min_size=1, max_size=8))
def test_a_tree_has_the_id_libgit2_gives_it(raw: pygit2.Repository, kinds: dict[str, str]) -> None:
    """Names that sort differently as files and as folders ("a", "a.b", "a-b", "a0")
    included: Git orders a subtree as if its name ended in "/"."""
    blob = raw.create_blob(b"text\n")
    sub = raw.TreeBuilder()
    sub.insert("inner.md", blob, FileMode.BLOB)
    subtree = sub.write()
    builder = raw.TreeBuilder()
    ours: dict[bytes, tuple[bytes, bytes]] = {}
    for name, kind in kinds.items():
        if kind == "dir":
            builder.insert(name, subtree, FileMode.TREE)
            ours[name.encode()] = (packs.TREE_MODE, subtree.raw)
        else:
            mode = FileMode.BLOB if kind == "file" else FileMode.BLOB_EXECUTABLE
            builder.insert(name, blob, mode)
            ours[name.encode()] = (b"%o" % mode, blob.raw)
    expected = builder.write()

    data = packs.tree_data(ours)

    assert packs.object_id(packs.TREE, data) == expected.raw
    assert data == raw[expected].read_raw()
    assert packs.parse_tree(data) == ours


@pytest.mark.parametrize(
    ("name", "email", "offset"),
    [("Ann Writer", "ann@example.org", 0), ("Zoë Ørsted", "zoe@例え.jp", -330), ("B", "b@x", 845)],
)
def test_a_commit_has_the_id_libgit2_gives_it(
    raw: pygit2.Repository, name: str, email: str, offset: int
) -> None:
    tree = raw.TreeBuilder().write()
    parent = raw.create_commit(
        None, pygit2.Signature("P", "p@x", 1, 0), pygit2.Signature("P", "p@x", 1, 0),
        "first\n", tree, [],
    )  # fmt: skip
    author = pygit2.Signature(name, email, 1_700_000_000, offset)
    committer = pygit2.Signature("OpenWrite", "server@openwrite.local", 1_700_000_001, 60)
    message = "Merge edits from phone\n\nDevice-Id: phone\nOp-Id: 7\n"
    expected = raw.create_commit(None, author, committer, message, tree, [parent, parent])

    data = packs.commit_data(tree.raw, [parent.raw, parent.raw], author, committer, message)

    assert packs.object_id(packs.COMMIT, data) == expected.raw
    assert data == raw[expected].read_raw()


def test_a_pack_is_read_by_git_and_libgit2_byte_for_byte(raw: pygit2.Repository) -> None:
    path = Path(raw.path)
    contents = {
        packs.BLOB: [b"", b"x", b"a 50 KB chapter line.\n" * 2500, bytes(range(256)) * 300],
        packs.TREE: [b""],
    }
    objects = {
        packs.object_id(kind, data): (kind, data)
        for kind, items in contents.items()
        for data in items
    }
    pack = packs.build_pack(objects)
    folder = path / "objects" / "pack"
    (folder / f"pack-{pack.name}.pack").write_bytes(pack.pack)
    (folder / f"pack-{pack.name}.idx").write_bytes(pack.index)

    verified = git(path, "verify-pack", "-v", str(folder / f"pack-{pack.name}.idx"))
    assert verified.returncode == 0, verified.stderr
    assert b"non delta: 5 objects" in verified.stdout
    # Git's own index of the same pack is the same file.
    rebuilt = git(path, "index-pack", "--stdin", "-o", str(path / "git.idx"), stdin=pack.pack)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (path / "git.idx").read_bytes() == pack.index
    fresh = pygit2.Repository(str(path))
    for oid, (_kind, data) in objects.items():
        assert fresh[oid.hex()].read_raw() == data
        assert git(path, "cat-file", "-p", oid.hex()).stdout == (
            data if _kind == packs.BLOB else b""
        )


def test_the_objects_of_a_pack_index_are_read_from_either_index_version(
    raw: pygit2.Repository,
) -> None:
    path = Path(raw.path)
    blobs = [b"one\n", b"two\n", b"a chapter\n" * 400]
    objects = {packs.object_id(packs.BLOB, data): (packs.BLOB, data) for data in blobs}
    pack = packs.build_pack(objects)
    expected = sorted(oid.hex() for oid in objects)
    assert packs.index_object_ids(pack.index) == expected  # ours: version 2
    for version in ("1", "2"):
        out = path / f"v{version}.idx"
        made = git(path, "index-pack", f"--index-version={version}", "--stdin", "-o", str(out),
                   stdin=pack.pack)  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert packs.index_object_ids(out.read_bytes()) == expected
    with pytest.raises(ValueError, match="cut short"):
        packs.index_object_ids(pack.index[: 8 + 256 * 4 + 30])  # cut inside the ids


def test_repository_commits_are_the_commits_libgit2_would_write(tmp_path: Path) -> None:
    """The same files, author and time through `write_commit` and through libgit2's own
    TreeBuilder/create_commit: the same commit id, so the same history."""
    from datetime import UTC, datetime  # noqa: PLC0415

    when = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
    author = Author("Ann Writer", "ann@example.org", time=when)
    files = {"novel.md": "---\ntitle: T\n---\n", "chapters/one.md": "One.\n"}
    novel = NovelRepository.create(tmp_path / "n.git", files=files, author=author, message="Make")
    head = novel.head()
    changes = {"chapters/two.md": "Two.\n", "locations/port.md": "Port.\n", "novel.md": None}
    commit = novel.write_commit(parent=head, changes=changes, author=author, message="Edit")
    novel.flush()

    raw = pygit2.Repository(str(novel.path))
    base = raw[head]
    chapters = raw.TreeBuilder(base.tree["chapters"])
    chapters.insert("two.md", raw.create_blob(b"Two.\n"), FileMode.BLOB)
    locations = raw.TreeBuilder()
    locations.insert("port.md", raw.create_blob(b"Port.\n"), FileMode.BLOB)
    root = raw.TreeBuilder(base.tree)
    root.remove("novel.md")
    root.insert("chapters", chapters.write(), FileMode.TREE)
    root.insert("locations", locations.write(), FileMode.TREE)
    written = raw[commit]
    expected = raw.create_commit(
        None, author.signature(), written.committer, "Edit\n", root.write(), [base.id]
    )
    assert commit == str(expected)


def test_a_tree_with_a_zero_padded_folder_mode_is_rewritten_as_libgit2_would(
    raw: pygit2.Repository,
) -> None:
    """Old Git wrote folders as "040000": read as a folder (sorted as one, never replaced
    by a file of its name) and written back as libgit2's TreeBuilder writes it."""
    blob = raw.create_blob(b"text\n")
    inner = raw.TreeBuilder()
    inner.insert("one.md", blob, FileMode.BLOB)
    folder = inner.write()
    padded = b"040000 a\0" + folder.raw + b"100644 a.md\0" + blob.raw
    old = raw.odb.write(pygit2.enums.ObjectType.TREE, padded)

    entries = packs.parse_tree(padded)

    assert entries[b"a"] == (packs.TREE_MODE, folder.raw)
    rebuilt = raw.TreeBuilder(raw[old]).write()
    assert packs.object_id(packs.TREE, packs.tree_data(entries)) == rebuilt.raw


def test_a_commit_time_outside_32_bits_is_written_as_libgit2_writes_it(
    raw: pygit2.Repository,
) -> None:
    tree = raw.TreeBuilder().write()
    for when in (-5, 2**32 + 5):
        sig = pygit2.Signature("Ann", "ann@example.org", when, 0)
        expected = raw.create_commit(None, sig, sig, "m\n", tree, [])
        data = packs.commit_data(tree.raw, [], sig, sig, "m\n")
        assert packs.object_id(packs.COMMIT, data) == expected.raw
