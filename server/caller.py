"""Who is calling: the bearer credential of a request, the principal behind it, and the
credential's last-used stamp.

`identify` is a plain function of a connection, so the authentication middleware can run
it on its own, or a one-read endpoint together with its read (one read call, not two).
"""

from __future__ import annotations

import base64
import contextlib
import time
from dataclasses import dataclass

import apsw
from aiohttp import web

from storage import accounts
from storage.db import Database
from storage.errors import Unauthorized, Unavailable
from storage.ids import stamp_at

BEARER_CHALLENGE = 'Bearer realm="openwrite"'
BASIC_CHALLENGE = 'Basic realm="openwrite"'
# last_used_at is rewritten at most this often, so reads stay reads.
TOUCH_EVERY_SECONDS = 300


class BadCredentials(Unauthorized):
    code = "invalid_token"

    def __init__(self, message: str, challenge: str):
        super().__init__(message)
        self.challenge = challenge


@dataclass(frozen=True)
class Credential:
    """A well-formed token from `Authorization`, and the challenge to answer if it fails."""

    token: str
    challenge: str


def bearer_credential(request: web.Request) -> Credential | None:
    """The token in `Authorization` (Bearer, or Basic with the token as password).

    None without the header; BadCredentials when it is malformed.
    """
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    token = ""
    if scheme == "bearer":
        token = value.strip()
    elif scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        token = decoded.partition(":")[2]
    challenge = BASIC_CHALLENGE if scheme == "basic" else BEARER_CHALLENGE
    if not token or len(token) > 200:
        raise BadCredentials("the credentials are malformed", challenge)
    return Credential(token, challenge)


def identify(conn: apsw.Connection, credential: Credential) -> accounts.Resolved:
    """The principal behind `credential`, read now: BadCredentials if unknown, revoked or
    expired. Nothing is cached, so a revoked token is refused on its very next request."""
    resolved = accounts.resolve_token(conn, credential.token)
    if resolved is None:
        raise BadCredentials("the token is unknown, revoked or expired", credential.challenge)
    return resolved


async def touch_if_due(db: Database, resolved: accounts.Resolved) -> None:
    """Stamp the credential's last use, if the stamp is older than `TOUCH_EVERY_SECONDS`.

    Compared as text: stamps are RFC 3339 UTC text of one width (`storage.ids.now`), which
    sorts as time does, so no stamp is parsed on every request.
    """
    last = resolved.last_used_at
    if last is None or last < stamp_at(time.time() - TOUCH_EVERY_SECONDS):
        # Best effort: a read must not fail because the disk is too full to stamp it.
        with contextlib.suppress(Unavailable):
            await db.write(accounts.touch_credential, resolved.principal)
