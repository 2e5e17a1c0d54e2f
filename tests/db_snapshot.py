"""What the data directory holds, for tests that prove a refused request wrote nothing:
every row of every table of the SQLite file, and the files under the repository root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.config import Settings
from storage.db import connect, query


def table_rows(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of `database` with its rows, sorted, read through a fresh connection."""
    conn = connect(database)
    try:
        tables = [
            r["name"]
            for r in query(
                conn, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            table: sorted(
                (tuple(row.values()) for row in query(conn, f'SELECT * FROM "{table}"')), key=repr
            )
            for table in tables
        }
    finally:
        conn.close()


def row_counts(database: Path) -> dict[str, int]:
    return {table: len(rows) for table, rows in table_rows(database).items()}


def data_state(settings: Settings) -> dict[str, Any]:
    """The database's rows and the repository root's files (with sizes)."""
    root = settings.repositories_dir
    files = sorted(
        (str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file()
    )
    return {"tables": table_rows(settings.database_path), "repository_files": files}
