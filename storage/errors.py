"""The errors of the writer's world, raised deep and shaped into JSON once.

Every layer raises these; `server/errors.py` maps each to its HTTP status and the
`{"error": {"code", "message", "details"}}` body of the API contract.
"""

from __future__ import annotations

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
