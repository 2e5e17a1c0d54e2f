"""Opaque cursors for list endpoints: `{"items": [...], "next_cursor": str|null}`."""

from __future__ import annotations

import base64
import json
from typing import Any

from storage.errors import Invalid


def encode_cursor(position: Any) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str | None) -> Any:
    """The position a cursor names, or None for the first page; a bad cursor is a 422."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        position = None
    # No cursor this server gives out encodes null: that one is forged, not "the first page".
    if position is None:
        raise Invalid("the cursor is not one this server gave out", code="invalid_cursor")
    return position


def decode_text_cursor(cursor: str | None) -> str | None:
    position = decode_cursor(cursor)
    if position is not None and not isinstance(position, str):
        raise Invalid("the cursor is not one this server gave out", code="invalid_cursor")
    return position


def page_json(rows: list[tuple[str, str]], limit: int) -> str:
    """A page of rows SQLite wrote as JSON, fetched as `(key, json)` with `limit + 1`: the
    first `limit`, and a cursor after the last of them if more exist."""
    items = rows[:limit]
    cursor = json.dumps(encode_cursor(items[-1][0])) if len(rows) > limit else "null"
    return f'{{"items":[{",".join(item for _, item in items)}],"next_cursor":{cursor}}}'
