"""Identifiers and timestamps: time-sortable opaque ids and RFC 3339 UTC text."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id() -> str:
    """A 26-character id: 48 bits of milliseconds then 80 random bits (ULID layout).

    Ids created later sort after earlier ones, which keeps cursor pagination stable.
    """
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def now() -> str:
    """The current time as RFC 3339 UTC text with milliseconds, e.g. 2026-11-25T10:00:00.123Z.

    The same text as `format_time(datetime.now(UTC))`, made from `time` without a datetime:
    every authenticated request compares its token's expiry with it (2 µs instead of 4–10).
    """
    return stamp_at(time.time())


# The last whole second formatted, and its text: replaced whole, so threads can share it.
_second: tuple[int, str] = (-1, "")


def stamp_at(moment: float) -> str:
    """`now()` for the moment `moment` (seconds since the epoch, as `time.time()`).

    The date and time of day are formatted once a second: every request stamps at least
    one moment, and strftime was a tenth of the CPU of a token check."""
    global _second
    millis = int(moment * 1000)
    second = millis // 1000
    known = _second
    if known[0] != second:
        known = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{known[1]}.{millis % 1000:03d}Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
