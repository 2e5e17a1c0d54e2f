"""Cross-cutting concerns, once: the JSON error shape, CORS, and bearer authentication."""

from __future__ import annotations

import logging

from aiohttp import web

from server.caller import bearer_credential, identify, touch_if_due
from server.endpoints import CREDENTIAL, PRINCIPAL, json_response
from server.state import DB, SETTINGS
from storage.errors import OpenWriteError

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
        if exc.status == 500:
            # A named fault of the server's own storage (a damaged repository): one line
            # that says what is broken, without the traceback of an unhandled error.
            log.error("%s %s failed: %s", request.method, request.path, exc.message)
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


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if origin is None or origin.rstrip("/") not in request.app[SETTINGS].cors_origins:
        return None
    return origin


@web.middleware
async def cors(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    """Answer a preflight from an allowed origin; `cors_headers` marks every answer."""
    origin = _allowed_origin(request)
    if origin is None or not (
        request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
    ):
        return await handler(request)
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
        },
    )


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the CORS answer headers, added just before the headers go
    out, so streamed answers (events, AI streams, Git packs) carry them too."""
    origin = _allowed_origin(request)
    if origin is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
    if "Origin" not in response.headers.getall("Vary", []):
        response.headers.add("Vary", "Origin")


@web.middleware
async def authenticate(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    """Resolve the token before the handler runs; an unknown or expired token is a 401 on
    every route.

    Endpoints whose handler is one read (see `bind`) resolve it themselves, inside that
    read: the same checks, one thread hop instead of two.
    """
    credential = bearer_credential(request)
    if credential is None:
        request[PRINCIPAL] = None
    elif getattr(request.match_info.handler, "identifies_caller", False):
        request[CREDENTIAL] = credential
    else:
        db = request.app[DB]
        resolved = await db.read_quick(identify, credential)
        await touch_if_due(db, resolved)
        request[PRINCIPAL] = resolved.principal
    return await handler(request)
