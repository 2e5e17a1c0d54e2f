"""A writer's AI provider connections: sealed keys, the one default, and metered usage.

All SQL on `ai_provider` lives here. Secrets are sealed with `secret_aad` bound to the
row, its owner and the column, and only ever opened into a `Lease` for one call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import apsw

from storage.db import Row, query, query_one
from storage.errors import Conflict, Invalid, NotFound, TooManyRequests
from storage.ids import format_time, new_id, now
from storage.secrets import SecretBox, SecretError, key_hint, rotate, secret_aad

TABLE = "ai_provider"
API_KEY = "api_key_encrypted"
SECRET_COLUMNS = (API_KEY, "oauth_access_token_encrypted", "oauth_refresh_token_encrypted")
DEFAULT_TIMEOUT_SECONDS = 60.0
# How long a reservation holds if its completion never settles (the server was killed).
# Longer than any call should run: a streamed answer has no total timeout.
DEFAULT_RESERVATION_SECONDS = 900.0

_PUBLIC = (
    "id, provider, key_label, key_hint, api_key_encrypted IS NOT NULL AS has_key, is_default,"
    " usage_limit, current_usage, reserved_usage, supported_models, provider_config,"
    " last_used_at, created_at, updated_at"
)


@dataclass(frozen=True)
class NewProvider:
    """A connection as the writer describes it; `api_key` is plaintext, sealed on insert."""

    provider: str
    api_key: str | None = field(default=None, repr=False)
    key_label: str | None = None
    is_default: bool = False
    usage_limit: int | None = None
    supported_models: list[str] = field(default_factory=list)
    provider_config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lease:
    """What one completion may use: the opened key and the tokens reserved for it."""

    provider_id: str
    user_id: str
    provider: str
    reserved: int
    reservation_id: str
    api_key: str = field(repr=False)
    base_url: str | None
    timeout: float


def _public(row: Row) -> Row:
    limit = row["usage_limit"]
    return {
        **row,
        "has_key": bool(row["has_key"]),
        "is_default": bool(row["is_default"]),
        "supported_models": json.loads(row["supported_models"]),
        "provider_config": json.loads(row["provider_config"]),
        "usage_remaining": None if limit is None else max(0, limit - row["current_usage"]),
    }


def list_providers(conn: apsw.Connection, user_id: str) -> list[Row]:
    rows = query(
        conn,
        f"SELECT {_PUBLIC} FROM ai_provider WHERE user_id = ? ORDER BY created_at, id",
        (user_id,),
    )
    return [_public(row) for row in rows]


def get_provider(conn: apsw.Connection, user_id: str, provider_id: str) -> Row:
    """The connection, if it is `user_id`'s; anyone else's is NotFound, never Forbidden."""
    row = query_one(
        conn,
        f"SELECT {_PUBLIC} FROM ai_provider WHERE id = ? AND user_id = ?",
        (provider_id, user_id),
    )
    if row is None:
        raise NotFound("AI provider connection not found", code="provider_not_found")
    return _public(row)


def create_provider(conn: apsw.Connection, box: SecretBox, user_id: str, new: NewProvider) -> Row:
    provider_id, moment = new_id(), now()
    conn.execute(
        "INSERT INTO ai_provider (id, user_id, provider, key_label, supported_models,"
        " provider_config, usage_limit, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            provider_id,
            user_id,
            new.provider,
            new.key_label,
            json.dumps(new.supported_models),
            json.dumps(new.provider_config),
            new.usage_limit,
            moment,
            moment,
        ),
    )
    if new.api_key is not None:
        _store_api_key(conn, box, user_id, provider_id, new.provider, new.api_key)
    if new.is_default:
        _make_default(conn, user_id, provider_id)
    return get_provider(conn, user_id, provider_id)


def update_provider(
    conn: apsw.Connection, box: SecretBox, user_id: str, provider_id: str, changes: dict[str, Any]
) -> Row:
    """Apply the fields the writer sent; `reset_usage` sets current_usage back to zero."""
    current = get_provider(conn, user_id, provider_id)
    columns: dict[str, Any] = {}
    for name in ("key_label", "usage_limit"):
        if name in changes:
            columns[name] = changes[name]
    for name in ("supported_models", "provider_config"):
        if name in changes:
            columns[name] = json.dumps(changes[name])
    if changes.get("reset_usage"):
        columns["current_usage"] = 0
    if columns:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(
            f"UPDATE ai_provider SET {assignments}, updated_at = ? WHERE id = ?",
            (*columns.values(), now(), provider_id),
        )
    if changes.get("api_key") is not None:
        _store_api_key(conn, box, user_id, provider_id, current["provider"], changes["api_key"])
    if changes.get("is_default") is True:
        _make_default(conn, user_id, provider_id)
    elif changes.get("is_default") is False:
        conn.execute("UPDATE ai_provider SET is_default = 0 WHERE id = ?", (provider_id,))
    return get_provider(conn, user_id, provider_id)


def delete_provider(conn: apsw.Connection, user_id: str, provider_id: str) -> None:
    get_provider(conn, user_id, provider_id)
    conn.execute("DELETE FROM ai_provider WHERE id = ?", (provider_id,))


def _store_api_key(
    conn: apsw.Connection,
    box: SecretBox,
    user_id: str,
    provider_id: str,
    provider: str,
    api_key: str,
) -> None:
    digest = box.key_hash(api_key)
    if query_one(
        conn,
        "SELECT 1 FROM ai_provider WHERE user_id = ? AND provider = ? AND key_hash = ? AND id != ?",
        (user_id, provider, digest, provider_id),
    ):
        raise Conflict(
            f"this {provider} API key is already connected to your account",
            code="duplicate_key",
            details={"provider": provider},
        )
    sealed = box.seal(api_key, aad=secret_aad(TABLE, provider_id, user_id, API_KEY))
    conn.execute(
        "UPDATE ai_provider SET api_key_encrypted = ?, key_hash = ?, key_hint = ?, updated_at = ?"
        " WHERE id = ?",
        (sealed, digest, key_hint(api_key), now(), provider_id),
    )


def _make_default(conn: apsw.Connection, user_id: str, provider_id: str) -> None:
    # Clear first: the partial unique index allows one default per user at any moment.
    conn.execute(
        "UPDATE ai_provider SET is_default = 0 WHERE user_id = ? AND is_default = 1 AND id != ?",
        (user_id, provider_id),
    )
    conn.execute("UPDATE ai_provider SET is_default = 1 WHERE id = ?", (provider_id,))


def reserve_usage(
    conn: apsw.Connection,
    box: SecretBox,
    user_id: str,
    provider_id: str | None,
    model: str,
    estimate: Callable[[str], int],
    *,
    hold_seconds: float = DEFAULT_RESERVATION_SECONDS,
) -> Lease:
    """Reserve `estimate(provider)` tokens on the connection (or the writer's default).

    Runs in a write transaction, so concurrent calls see each other's reservations: the
    check current + reserved + estimate <= limit holds however many calls are in flight.
    TooManyRequests `usage_limit_exceeded` when it does not; nothing is reserved then.
    The reservation lapses after `hold_seconds` if it is never settled.
    """
    row = _connection_for_call(conn, user_id, provider_id)
    if _release_expired(conn, row["id"]):
        row = _connection_for_call(conn, user_id, row["id"])
    models = json.loads(row["supported_models"])
    if models and model not in models:
        raise Invalid(
            "this connection is not set up for that model",
            code="model_not_supported",
            details={"model": model, "supported_models": models},
        )
    tokens = estimate(row["provider"])
    limit = row["usage_limit"]
    if limit is not None and row["current_usage"] + row["reserved_usage"] + tokens > limit:
        raise TooManyRequests(
            "the usage limit of this AI provider connection would be exceeded;"
            " lower max_tokens, wait for running requests, or raise the limit",
            code="usage_limit_exceeded",
            details={
                "usage_limit": limit,
                "current_usage": row["current_usage"],
                "reserved_usage": row["reserved_usage"],
                "requested": tokens,
            },
        )
    api_key = ""
    if row[API_KEY] is not None:
        api_key = box.open(row[API_KEY], aad=secret_aad(TABLE, row["id"], user_id, API_KEY))
    conn.execute(
        "UPDATE ai_provider SET reserved_usage = reserved_usage + ? WHERE id = ?",
        (tokens, row["id"]),
    )
    reservation_id = new_id()
    moment = datetime.now(UTC)
    conn.execute(
        "INSERT INTO ai_usage_reservation (id, provider_id, tokens, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (reservation_id, row["id"], tokens, format_time(moment),
         format_time(moment + timedelta(seconds=hold_seconds))),
    )  # fmt: skip
    config = json.loads(row["provider_config"])
    return Lease(
        provider_id=row["id"],
        user_id=user_id,
        provider=row["provider"],
        reserved=tokens,
        reservation_id=reservation_id,
        api_key=api_key,
        base_url=config.get("base_url"),
        timeout=float(config.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)),
    )


def _connection_for_call(conn: apsw.Connection, user_id: str, provider_id: str | None) -> Row:
    columns = (
        "id, provider, api_key_encrypted, usage_limit, current_usage, reserved_usage,"
        " supported_models, provider_config"
    )
    if provider_id is not None:
        row = query_one(
            conn,
            f"SELECT {columns} FROM ai_provider WHERE id = ? AND user_id = ?",
            (provider_id, user_id),
        )
        if row is None:
            raise NotFound("AI provider connection not found", code="provider_not_found")
        return row
    row = query_one(
        conn, f"SELECT {columns} FROM ai_provider WHERE user_id = ? AND is_default = 1", (user_id,)
    )
    if row is None:
        raise NotFound(
            "no provider_id given and no default AI provider connection is set",
            code="no_default_provider",
        )
    return row


def _release_expired(conn: apsw.Connection, provider_id: str) -> int:
    """Release the lapsed reservations of one connection; the tokens they held."""
    expired = query(
        conn,
        "SELECT id, tokens FROM ai_usage_reservation WHERE provider_id = ? AND expires_at <= ?",
        (provider_id, now()),
    )
    for row in expired:
        conn.execute("DELETE FROM ai_usage_reservation WHERE id = ?", (row["id"],))
    held = sum(row["tokens"] for row in expired)
    if held:
        conn.execute(
            "UPDATE ai_provider SET reserved_usage = MAX(0, reserved_usage - ?) WHERE id = ?",
            (held, provider_id),
        )
    return held


def settle_usage(conn: apsw.Connection, lease: Lease, used: int) -> Row | None:
    """Release the lease's reservation and count the tokens actually `used`.

    A reservation that lapsed meanwhile was already released: only the use is counted.
    Returns the connection afterwards, or None if it was deleted during the call.
    """
    held = query_one(
        conn, "SELECT tokens FROM ai_usage_reservation WHERE id = ?", (lease.reservation_id,)
    )
    conn.execute("DELETE FROM ai_usage_reservation WHERE id = ?", (lease.reservation_id,))
    conn.execute(
        "UPDATE ai_provider SET reserved_usage = MAX(0, reserved_usage - ?),"
        " current_usage = current_usage + ?,"
        " last_used_at = CASE WHEN ? > 0 THEN ? ELSE last_used_at END WHERE id = ?",
        (held["tokens"] if held else 0, used, used, now(), lease.provider_id),
    )
    try:
        return get_provider(conn, lease.user_id, lease.provider_id)
    except NotFound:
        return None


def reseal_secrets(conn: apsw.Connection, old: SecretBox, new: SecretBox) -> int:
    """Re-seal every stored secret under `new` and recompute key hashes; the number of rows.

    Meant for one transaction with the verifier change. A token already under `new` is
    kept, so a rerun after an interruption is harmless. Any secret neither key opens
    stops everything (SecretError naming the row, never the secret).
    """
    rows = query(conn, f"SELECT id, user_id, {', '.join(SECRET_COLUMNS)} FROM ai_provider")
    for row in rows:
        values: dict[str, str | None] = {}
        try:
            for column in SECRET_COLUMNS:
                token = row[column]
                aad = secret_aad(TABLE, row["id"], row["user_id"], column)
                values[column] = None if token is None else rotate(old, new, token, aad=aad)
            digest = None
            if values[API_KEY] is not None:
                aad = secret_aad(TABLE, row["id"], row["user_id"], API_KEY)
                digest = new.key_hash(new.open(values[API_KEY], aad=aad))
        except SecretError as exc:
            raise SecretError(
                f"AI provider connection {row['id']}: {exc.message}",
                details={**exc.details, "ai_provider_id": row["id"]},
            ) from None
        conn.execute(
            "UPDATE ai_provider SET api_key_encrypted = ?, oauth_access_token_encrypted = ?,"
            " oauth_refresh_token_encrypted = ?, key_hash = ? WHERE id = ?",
            (*(values[c] for c in SECRET_COLUMNS), digest, row["id"]),
        )
    return len(rows)
