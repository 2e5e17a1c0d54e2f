"""The errors of the writer's world, raised deep and shaped into JSON once.

Every layer raises these; `server/errors.py` maps each to its HTTP status and the
`{"error": {"code", "message", "details"}}` body of the API contract.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class OpenWriteError(Exception):
    """Base of every error the API reports on purpose."""

    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}


class Invalid(OpenWriteError):
    status = 422
    code = "invalid"


class Unauthorized(OpenWriteError):
    status = 401
    code = "unauthorized"


class Forbidden(OpenWriteError):
    status = 403
    code = "forbidden"


class NotFound(OpenWriteError):
    status = 404
    code = "not_found"


class Conflict(OpenWriteError):
    status = 409
    code = "conflict"


class TooLarge(OpenWriteError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(OpenWriteError):
    status = 429
    code = "too_many_requests"


class Unavailable(OpenWriteError):
    """A store that cannot serve this resource right now (disk full, read-only repo)."""

    status = 503
    code = "unavailable"


class RepositoryCorrupt(OpenWriteError):
    """A novel's repository holds data Git cannot read (a damaged object, ref or pack).

    A fault of the server's storage, not of the request, and not one a retry cures: the
    novel must be restored from a clone or a backup. Logged when answered.
    """

    status = 500
    code = "repository_corrupt"


# Below this much free space, a write that failed without saying why is taken for a full disk.
LOW_SPACE_BYTES = 1 << 20


def storage_full(action: str) -> Unavailable:
    return Unavailable(f"Could not {action}: the storage is full", code="storage_full")


def storage_read_only(action: str) -> Unavailable:
    return Unavailable(
        f"Could not {action}: the storage is read-only or not writable",
        code="storage_read_only",
    )


def unavailable_by_filesystem(where: Path, action: str) -> Unavailable | None:
    """Ask the filesystem under `where` why a write failed, when the failure does not say
    (libgit2 sometimes loses the OS error; SQLite reports some as plain I/O errors):
    read-only, or nearly full. None if neither."""
    try:
        stats = os.statvfs(where)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return storage_read_only(action)
    if stats.f_bavail * stats.f_frsize < LOW_SPACE_BYTES:
        return storage_full(action)
    return None
