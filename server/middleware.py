"""Cross-cutting concerns, once: the JSON error shape, CORS, and bearer authentication."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

from aiohttp import web

from server.endpoints import PRINCIPAL, json_response
from server.state import DB, SETTINGS
from storage import accounts
from storage.errors import OpenWriteError, Unauthorized
from storage.ids import parse_time

log = logging.getLogger("openwrite.http")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid",
    429: "too_many_requests",
    431: "headers_too_large",
}


def error_response(
    status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return json_response(body, status, headers)


@web.middleware
async def errors(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    try:
        return await handler(request)
    except OpenWriteError as exc:
        headers = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = getattr(exc, "challenge", 'Bearer realm="openwrite"')
        if "retry_after" in exc.details:
            headers["Retry-After"] = str(exc.details["retry_after"])
        return error_response(exc.status, exc.code, exc.message, exc.details, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "error")
        message = exc.reason if exc.status != 404 else "no such resource"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, message, headers=headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed to answer this request")


CORS_ALLOWED_HEADERS = "Authorization, Content-Type, If-None-Match, If-Match, Git-Protocol"
CORS_EXPOSED_HEADERS = "ETag, Location, Retry-After, WWW-Authenticate"
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"


@web.middleware
async def cors(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    origin = request.headers.get("Origin")
    allowed = origin is not None and origin.rstrip("/") in request.app[SETTINGS].cors_origins
    if not allowed:
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    response = await handler(request)
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
    response.headers.add("Vary", "Origin")
    return response


class BadCredentials(Unauthorized):
    code = "invalid_token"

    def __init__(self, message: str, challenge: str):
        super().__init__(message)
        self.challenge = challenge


def bearer_credential(request: web.Request) -> tuple[str | None, str]:
    """The token in `Authorization` (Bearer, or Basic with the token as password) and the scheme."""
    header = request.headers.get("Authorization")
    if not header:
        return None, ""
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip(), "bearer"
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return "", "basic"
        return decoded.partition(":")[2], "basic"
    return "", scheme


_TOUCH_EVERY = timedelta(minutes=5)


@web.middleware
async def authenticate(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    """Resolve the token once; an unknown or expired token is a 401 on every route."""
    token, scheme = bearer_credential(request)
    request[PRINCIPAL] = None
    if token is not None:
        challenge = 'Basic realm="openwrite"' if scheme == "basic" else 'Bearer realm="openwrite"'
        if not token or len(token) > 200:
            raise BadCredentials("the credentials are malformed", challenge)
        db = request.app[DB]
        resolved = await db.read(accounts.resolve_token, token)
        if resolved is None:
            raise BadCredentials("the token is unknown, revoked or expired", challenge)
        request[PRINCIPAL] = resolved.principal
        last = resolved.last_used_at
        if last is None or parse_time(last) < datetime.now(UTC) - _TOUCH_EVERY:
            await db.write(accounts.touch_credential, resolved.principal)
    return await handler(request)
