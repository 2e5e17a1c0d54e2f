"""The server key's verifier in SQLite: a wrong key at start-up is a clear error, not garbage."""

from __future__ import annotations

import apsw

from storage.db import query_one
from storage.secrets import SecretBox, ServerKeyError

VERIFIER_KEY = "secret_key_verifier"


def ensure_key_verifier(conn: apsw.Connection, box: SecretBox) -> None:
    """Store a verifier on first start; later, refuse a key that does not open it."""
    row = query_one(conn, "SELECT value FROM server_meta WHERE key = ?", (VERIFIER_KEY,))
    if row is None:
        conn.execute(
            "INSERT INTO server_meta (key, value) VALUES (?, ?)",
            (VERIFIER_KEY, box.make_verifier()),
        )
    elif not box.verify(row["value"]):
        raise ServerKeyError(
            "the server key does not match the one this database was written with;"
            " set OPENWRITE_SECRET_KEY or data/secret.key to the original key"
            " (or run `openwrite admin rotate-key` with both keys)"
        )


def replace_key_verifier(conn: apsw.Connection, box: SecretBox) -> None:
    conn.execute(
        "INSERT INTO server_meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (VERIFIER_KEY, box.make_verifier()),
    )
