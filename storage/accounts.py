"""Users, password accounts, sessions, personal access tokens and the login throttle."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import apsw

from storage.access import Principal
from storage.credentials import (
    ACCESS_TOKEN_PREFIX,
    SESSION_PREFIX,
    new_token,
    same_hash,
    token_hash,
)
from storage.db import Row, query, query_one, tuples
from storage.errors import Conflict, NotFound, TooManyRequests
from storage.ids import format_time, new_id, now, parse_time
from storage.organizations import create_organization

USER_COLUMNS = "id, name, email, created_at"
SESSION_SCOPES = frozenset({"read", "write"})


def public_user(row: Row) -> Row:
    return {k: row[k] for k in ("id", "name", "email", "created_at")}


def _personal_slug(conn: apsw.Connection, email: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", email.split("@")[0].lower()).strip("-")[:40] or "writer"
    base = base if base[0].isalnum() else "w" + base
    if len(base) < 2:
        base = base + "0"
    slug = base
    while query_one(conn, "SELECT 1 FROM organization WHERE slug = ?", (slug,)):
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def create_user(conn: apsw.Connection, *, name: str, email: str, password_hash: str) -> Row:
    """A user, their password account and their personal organization (they own it)."""
    if query_one(conn, "SELECT 1 FROM user WHERE email = ?", (email,)):
        raise Conflict("an account with this email already exists", code="email_taken")
    user_id, moment = new_id(), now()
    conn.execute(
        "INSERT INTO user (id, name, email, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        (user_id, name, email, moment, moment),
    )
    conn.execute(
        "INSERT INTO account (user_id, password_hash, updated_at) VALUES (?, ?, ?)",
        (user_id, password_hash, moment),
    )
    create_organization(
        conn, slug=_personal_slug(conn, email), name=name, owner_id=user_id, personal=True
    )
    return get_user(conn, user_id)


def get_user(conn: apsw.Connection, user_id: str) -> Row:
    row = query_one(conn, f"SELECT {USER_COLUMNS} FROM user WHERE id = ?", (user_id,))
    if row is None:
        raise NotFound("user not found")
    return row


def find_account(conn: apsw.Connection, email: str) -> Row | None:
    """The user with their password hash, by email (case-insensitive)."""
    return query_one(
        conn,
        f"SELECT {', '.join('u.' + c.strip() for c in USER_COLUMNS.split(','))}, a.password_hash"
        " FROM user u JOIN account a ON a.user_id = u.id WHERE u.email = ?",
        (email,),
    )


def personal_organization_id(conn: apsw.Connection, user_id: str) -> str | None:
    row = query_one(
        conn,
        "SELECT o.id FROM organization o JOIN member m ON m.organization_id = o.id"
        " WHERE m.user_id = ? AND o.personal = 1 AND m.role = 'owner' ORDER BY o.id LIMIT 1",
        (user_id,),
    )
    return row["id"] if row else None


# -- sessions -----------------------------------------------------------------


def create_session(
    conn: apsw.Connection, user_id: str, *, ttl: timedelta, user_agent: str | None
) -> tuple[str, Row]:
    """A new session for `user_id`: returns the token (shown once) and the session row."""
    token = new_token(SESSION_PREFIX)
    session_id, moment = new_id(), datetime.now(UTC)
    conn.execute(
        "INSERT INTO session (id, user_id, token_hash, user_agent, active_organization_id,"
        " created_at, last_used_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            session_id,
            user_id,
            token_hash(token),
            (user_agent or "")[:300] or None,
            personal_organization_id(conn, user_id),
            format_time(moment),
            format_time(moment),
            format_time(moment + ttl),
        ),
    )
    return token, query_one(conn, "SELECT * FROM session WHERE id = ?", (session_id,))


def list_sessions(conn: apsw.Connection, user_id: str) -> list[Row]:
    return query(
        conn,
        "SELECT id, user_agent, active_organization_id, active_team_id, created_at,"
        " last_used_at, expires_at FROM session WHERE user_id = ? AND expires_at > ?"
        " ORDER BY created_at DESC, id DESC",
        (user_id, now()),
    )


def delete_session(conn: apsw.Connection, user_id: str, session_id: str) -> None:
    if (
        conn.execute(
            "DELETE FROM session WHERE id = ? AND user_id = ? RETURNING id", (session_id, user_id)
        ).fetchall()
        == []
    ):
        raise NotFound("session not found")


def set_session_context(
    conn: apsw.Connection, session_id: str, *, organization_id: str | None, team_id: str | None
) -> Row:
    conn.execute(
        "UPDATE session SET active_organization_id = ?, active_team_id = ? WHERE id = ?",
        (organization_id, team_id, session_id),
    )
    return query_one(
        conn,
        "SELECT id, user_agent, active_organization_id, active_team_id, created_at,"
        " last_used_at, expires_at FROM session WHERE id = ?",
        (session_id,),
    )


# -- personal access tokens -----------------------------------------------------

TOKEN_COLUMNS = "id, name, token_prefix, scopes, created_at, last_used_at, expires_at"


def _token_row(row: Row) -> Row:
    return {**row, "scopes": row["scopes"].split()}


def create_access_token(
    conn: apsw.Connection, user_id: str, *, name: str, scopes: list[str], expires_at: str
) -> tuple[str, Row]:
    token = new_token(ACCESS_TOKEN_PREFIX)
    token_id = new_id()
    conn.execute(
        "INSERT INTO personal_access_token (id, user_id, name, token_hash, token_prefix, scopes,"
        " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            token_id,
            user_id,
            name,
            token_hash(token),
            token[:8],
            " ".join(s for s in ("read", "write") if s in scopes),
            now(),
            expires_at,
        ),
    )
    row = query_one(
        conn, f"SELECT {TOKEN_COLUMNS} FROM personal_access_token WHERE id = ?", (token_id,)
    )
    return token, _token_row(row)


def list_access_tokens(conn: apsw.Connection, user_id: str) -> list[Row]:
    rows = query(
        conn,
        f"SELECT {TOKEN_COLUMNS} FROM personal_access_token WHERE user_id = ?"
        " ORDER BY created_at DESC, id DESC",
        (user_id,),
    )
    return [_token_row(r) for r in rows]


def delete_access_token(conn: apsw.Connection, user_id: str, token_id: str) -> None:
    if (
        conn.execute(
            "DELETE FROM personal_access_token WHERE id = ? AND user_id = ? RETURNING id",
            (token_id, user_id),
        ).fetchall()
        == []
    ):
        raise NotFound("token not found")


# -- resolving a bearer token ---------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    principal: Principal
    last_used_at: str | None


def resolve_token(conn: apsw.Connection, token: str) -> Resolved | None:
    """The principal behind a session or access token, or None if unknown or expired.

    Every authenticated request passes here, so the row is read as a plain tuple."""
    digest = token_hash(token)
    if token.startswith(SESSION_PREFIX):
        rows = tuples(
            conn,
            "SELECT id, user_id, token_hash, active_organization_id, active_team_id,"
            " last_used_at, expires_at FROM session WHERE token_hash = ?",
            (digest,),
        )
        if not rows:
            return None
        credential_id, user_id, stored, organization_id, team_id, last_used, expires = rows[0]
        if expires <= now() or not same_hash(stored, digest):
            return None
        principal = Principal(
            user_id=user_id,
            kind="session",
            credential_id=credential_id,
            scopes=SESSION_SCOPES,
            active_organization_id=organization_id,
            active_team_id=team_id,
        )
        return Resolved(principal, last_used)
    if token.startswith(ACCESS_TOKEN_PREFIX):
        rows = tuples(
            conn,
            "SELECT id, user_id, token_hash, scopes, last_used_at, expires_at"
            " FROM personal_access_token WHERE token_hash = ?",
            (digest,),
        )
        if not rows:
            return None
        credential_id, user_id, stored, scopes, last_used, expires = rows[0]
        if expires <= now() or not same_hash(stored, digest):
            return None
        principal = Principal(
            user_id=user_id,
            kind="token",
            credential_id=credential_id,
            scopes=frozenset(scopes.split()),
        )
        return Resolved(principal, last_used)
    return None


def touch_credential(conn: apsw.Connection, principal: Principal) -> None:
    table = "session" if principal.kind == "session" else "personal_access_token"
    conn.execute(
        f"UPDATE {table} SET last_used_at = ? WHERE id = ?", (now(), principal.credential_id)
    )


def delete_expired_credentials(conn: apsw.Connection) -> int:
    moment = now()
    gone = conn.execute(
        "DELETE FROM session WHERE expires_at <= ? RETURNING id", (moment,)
    ).fetchall()
    gone += conn.execute(
        "DELETE FROM personal_access_token WHERE expires_at <= ? RETURNING id", (moment,)
    ).fetchall()
    return len(gone)


# -- login throttle -------------------------------------------------------------


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)


def check_login_allowed(conn: apsw.Connection, email: str) -> None:
    """TooManyRequests (with `retry_after` seconds) while the address is locked out."""
    row = query_one(conn, "SELECT locked_until FROM login_failure WHERE email = ?", (email,))
    if row and row["locked_until"]:
        remaining = (parse_time(row["locked_until"]) - datetime.now(UTC)).total_seconds()
        if remaining > 0:
            raise TooManyRequests(
                "too many failed logins for this address; try again later",
                code="login_throttled",
                details={"retry_after": int(remaining) + 1},
            )


def record_login_failure(conn: apsw.Connection, email: str, policy: LoginPolicy) -> None:
    moment = datetime.now(UTC)
    row = query_one(conn, "SELECT * FROM login_failure WHERE email = ?", (email,))
    if row is None or parse_time(row["window_start"]) + policy.window < moment:
        failures, window_start = 1, moment
    else:
        failures, window_start = row["failures"] + 1, parse_time(row["window_start"])
    locked_until = format_time(moment + policy.lockout) if failures >= policy.max_failures else None
    conn.execute(
        "INSERT INTO login_failure (email, failures, window_start, locked_until)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (email) DO UPDATE SET failures = excluded.failures,"
        " window_start = excluded.window_start, locked_until = excluded.locked_until",
        (email, failures, format_time(window_start), locked_until),
    )


def clear_login_failures(conn: apsw.Connection, email: str) -> None:
    conn.execute("DELETE FROM login_failure WHERE email = ?", (email,))
