"""Migrations: schema.sql is the migrations' result, old databases upgrade in place, and
migrating an up-to-date database changes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import apsw

from storage.db import connect, migrate, migrations, open_database, query, schema_version
from storage.history import PathChange, RevisionEntry, revision_item
from tests.db_snapshot import table_rows

SCHEMA_SQL = Path(__file__).resolve().parent.parent / "schema.sql"


def schema_of(conn: apsw.Connection) -> list[tuple[str, str, str, str | None]]:
    """sqlite_master without root pages, with whitespace in the SQL normalized."""
    rows = query(conn, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
    return [
        (
            r["type"],
            r["name"],
            r["tbl_name"],
            re.sub(r"\s+", " ", r["sql"]).strip() if r["sql"] else None,
        )
        for r in rows
    ]


def latest() -> int:
    return migrations()[-1][0]


def test_a_database_built_by_the_migrations_equals_one_built_from_schema_sql(tmp_path: Path):
    migrated = connect(tmp_path / "migrated.db")
    assert migrate(migrated) == latest()
    from_file = connect(tmp_path / "from_schema.db")
    from_file.execute(SCHEMA_SQL.read_text(encoding="utf-8"))
    assert schema_of(from_file) == schema_of(migrated)
    assert schema_version(from_file) == schema_version(migrated) == latest()
    assert f"schema version {latest()}" in SCHEMA_SQL.read_text(encoding="utf-8")


def test_migrations_are_numbered_from_one_without_gaps():
    numbers = [number for number, _, _ in migrations()]
    assert numbers == list(range(1, len(numbers) + 1))


def _fill_version_one(conn: apsw.Connection) -> None:
    """A writer with an account, a personal organization, a session and a novel."""
    moment = "2026-01-01T00:00:00.000Z"
    statements = [
        ("INSERT INTO user (id, name, email, created_at, updated_at)"
         " VALUES ('u1', 'Ann', 'ann@example.com', ?, ?)", (moment, moment)),
        ("INSERT INTO account (user_id, password_hash, updated_at) VALUES ('u1', 'scrypt$', ?)",
         (moment,)),
        ("INSERT INTO organization (id, slug, name, personal, created_at, updated_at)"
         " VALUES ('o1', 'ann', 'Ann', 1, ?, ?)", (moment, moment)),
        ("INSERT INTO member (organization_id, user_id, role, created_at)"
         " VALUES ('o1', 'u1', 'owner', ?)", (moment,)),
        ("INSERT INTO session (id, user_id, token_hash, created_at, last_used_at, expires_at)"
         " VALUES ('s1', 'u1', 'hash', ?, ?, '2099-01-01T00:00:00.000Z')", (moment, moment)),
        ("INSERT INTO novel (id, organization_id, owner_id, title, created_at, updated_at)"
         " VALUES ('n1', 'o1', 'u1', 'The Long Road', ?, ?)", (moment, moment)),
    ]  # fmt: skip
    with conn:
        for sql, params in statements:
            conn.execute(sql, params)


def test_an_older_database_upgrades_in_place_without_losing_rows(tmp_path: Path):
    path = tmp_path / "old.db"
    conn = connect(path)
    assert migrate(conn, target=1) == 1
    _fill_version_one(conn)
    before = table_rows(path)
    conn.close()

    db = open_database(path, readers=1)  # what the server does on start-up
    try:
        upgraded = db.read_sync(schema_version)
        after = table_rows(path)
    finally:
        db.close()
    assert upgraded == latest()
    for table, rows in before.items():
        # A migration may add columns (at the end): the old ones keep their values.
        assert [row[: len(rows[0])] for row in after[table]] == rows, table
    assert set(after) >= set(before)

    conn = connect(path)
    try:
        assert schema_of(conn) == _fresh_schema(tmp_path)
        # Migration 6 gave the novel written before it the JSON a listing sends.
        [row] = query(conn, "SELECT item FROM novel")
        assert json.loads(row["item"]) == {
            "id": "n1", "title": "The Long Road", "description": None, "genre": None,
            "status": "draft", "visibility": "private", "target_word_count": None,
            "current_word_count": 0, "head": None, "last_written_at": None,
            "owner_id": "u1", "organization_id": "o1", "organization_slug": "ann",
            "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
        }  # fmt: skip
    finally:
        conn.close()


def _fresh_schema(tmp_path: Path) -> list[tuple[str, str, str, str | None]]:
    conn = connect(tmp_path / "fresh.db")
    try:
        migrate(conn)
        return schema_of(conn)
    finally:
        conn.close()


def test_migrating_an_up_to_date_database_again_changes_nothing(tmp_path: Path):
    path = tmp_path / "twice.db"
    conn = connect(path)
    migrate(conn, target=1)
    _fill_version_one(conn)
    assert migrate(conn) == latest()
    schema, rows = schema_of(conn), table_rows(path)
    assert migrate(conn) == latest()
    assert schema_of(conn) == schema and table_rows(path) == rows
    conn.close()
    open_database(path, readers=1).close()
    conn = connect(path)
    assert schema_of(conn) == schema and schema_version(conn) == latest()
    conn.close()


def test_revisions_indexed_before_version_5_get_the_item_the_server_now_writes(tmp_path: Path):
    """Migration 5 writes, in SQL, the JSON that `revision_item` writes for new revisions:
    pages mixing old and new revisions look alike."""
    entries = [
        RevisionEntry(
            rev="a" * 40, parents=(), author_id="u1", author_name="Ann", author_email="a@x",
            device_id=None, message="Start the novel", time="2026-01-01T00:00:00Z",
            mainline=True, changes=(
                PathChange("added", "novel.md", None, 3, 0, 0, 3),
                PathChange("added", "chapters/b.md", None, 5, 0, 0, 5),
                PathChange("added", "chapters/a.md", None, 2, 0, 0, 2),
            ),
        ),
        RevisionEntry(
            rev="b" * 40, parents=("a" * 40, "c" * 40), author_id=None,
            author_name="Zoë «Outside» \"Git\"", author_email="z@x", device_id="phone\t1",
            message="Merge: ünïcode, 漢字, a \\ backslash\nand a second line",
            time="2026-01-02T03:04:05Z", mainline=True, changes=(
                PathChange("renamed", "chapters/c.md", "chapters/a.md", 0, 1, 2, 1),
            ),
        ),
        RevisionEntry(
            rev="c" * 40, parents=("a" * 40,), author_id="u1", author_name="Ann",
            author_email="a@x", device_id="laptop", message="Nothing changed",
            time="2026-01-02T00:00:00Z", mainline=False, changes=(),
        ),
    ]  # fmt: skip
    path = tmp_path / "v4.db"
    conn = connect(path)
    assert migrate(conn, target=4) == 4
    _fill_version_one(conn)
    with conn:
        for seq, entry in enumerate(entries, 1):
            conn.execute(
                "INSERT INTO revision (seq, novel_id, rev, parents, author_id, author_name,"
                " author_email, device_id, message, time, mainline, words_added, words_removed)"
                " VALUES (?, 'n1', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, entry.rev, json.dumps(list(entry.parents)), entry.author_id,
                 entry.author_name, entry.author_email, entry.device_id, entry.message,
                 entry.time, int(entry.mainline), sum(c.words_added for c in entry.changes),
                 sum(c.words_removed for c in entry.changes)),
            )  # fmt: skip
            for c in entry.changes:
                conn.execute(
                    "INSERT INTO revision_path VALUES ('n1', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, c.path, c.old_path, c.change, c.words_added, c.words_removed,
                     c.words_before, c.words_after),
                )  # fmt: skip

    assert migrate(conn) == latest()

    stored = [row["item"] for row in query(conn, "SELECT item FROM revision ORDER BY seq")]
    conn.close()
    assert [json.loads(item) for item in stored] == [
        json.loads(revision_item(entry)) for entry in entries
    ]
    assert json.loads(stored[0])["paths"] == ["chapters/a.md", "chapters/b.md", "novel.md"]
    assert json.loads(stored[2])["changes"] == []
