"""Endpoints declared once: the router and the OpenAPI document are both built from them.

An `Endpoint` names its method, path, pydantic models, status codes and auth needs;
`bind` turns it into an aiohttp handler that authenticates, parses and validates the
request, calls the handler with a `Call`, and serializes the answer.

A handler is a coroutine taking the `Call`, or, when all its work is one read, a plain
function of `(conn, call)`: a one-read endpoint. One call resolves the caller's token,
reads, and validates and serializes the answer: a quick read (`Database.read_quick`, on
the event loop's own connection) unless the endpoint says its read may be slow.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from server.caller import Credential, identify, touch_if_due
from server.state import DB, SETTINGS
from storage.access import Principal
from storage.accounts import Resolved
from storage.db import Busy
from storage.errors import Forbidden, Invalid, OpenWriteError, TooLarge, Unauthorized

# Who is calling (None when anonymous); set before the handler runs, by the
# authentication middleware or, for a one-read endpoint, on the reader thread.
PRINCIPAL = web.RequestKey("principal", Principal | None)
# The caller's token, left by the middleware for a one-read endpoint to resolve.
CREDENTIAL = web.RequestKey("credential", Credential)


class UnsupportedMediaType(OpenWriteError):
    status = 415
    code = "unsupported_media_type"


class BadRequest(OpenWriteError):
    status = 400
    code = "bad_request"


@dataclass
class Call:
    """What a handler gets: the request, the caller, and the validated inputs."""

    request: web.Request
    principal: Principal | None
    body: Any = None
    query: Any = None

    @property
    def params(self) -> dict[str, str]:
        return dict(self.request.match_info)

    @property
    def db(self):  # noqa: ANN201 - storage.db.Database, typed through the AppKey
        return self.request.app[DB]

    @property
    def settings(self):  # noqa: ANN201
        return self.request.app[SETTINGS]

    @property
    def user_id(self) -> str:
        assert self.principal is not None
        return self.principal.user_id


# A coroutine taking the `Call`, or a one-read endpoint's plain function of a reader
# connection and the `Call`, answering data (never a response object).
Handler = Callable[[Call], Awaitable[Any]] | Callable[[Any, Call], Any]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    # "required": a valid token; "optional": anonymous allowed (public novels); "none".
    auth: str = "required"
    # None: writes unless GET. A write needs a token with the `write` scope.
    writes: bool | None = None
    errors: tuple[int, ...] = ()
    # Answers something other than JSON (files, streams): documented by `content_type`.
    content_type: str = "application/json"
    # A one-read handler whose read is bounded (lookups, a page) runs as a quick read, on
    # the event loop; False (a whole history's statistics) sends it to a reader thread.
    quick: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_write(self) -> bool:
        return self.writes if self.writes is not None else self.method != "GET"


def validation_details(error: ValidationError) -> dict[str, Any]:
    return {
        "fields": [
            {"loc": [str(p) for p in e["loc"]], "message": e["msg"], "type": e["type"]}
            for e in error.errors(include_url=False, include_input=False)
        ]
    }


def _has_nul(value: Any) -> bool:
    """True if any string in the decoded JSON holds a NUL; a loop, not recursion, so the
    deepest nesting `json.loads` accepts cannot overflow the stack here."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


async def read_json(request: web.Request, model: type[BaseModel]) -> BaseModel:
    """The request body validated as `model`: 415, 413, 400 or 422 otherwise."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    charset = request.charset
    if charset and charset.lower().replace("-", "") != "utf8":
        raise UnsupportedMediaType("send JSON encoded as UTF-8")
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the body is larger than {limit} bytes", details={"limit": limit})
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"the body is larger than {limit} bytes", details={"limit": limit}) from None
    except ConnectionResetError:
        # The client went away mid-upload (a device going offline): nothing to answer,
        # and not a fault of the server's.
        raise BadRequest("the request body broke off", code="request_body_broken") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid UTF-8", code="invalid_encoding") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply", code="invalid_json") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if _has_nul(data):
        raise Invalid("text must not contain NUL characters", code="nul_character")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid(
            "the request body is invalid", code="validation_failed", details=validation_details(exc)
        ) from None


def read_query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    values = {k: v for k, v in request.query.items()}
    if _has_nul(values):
        raise Invalid("query parameters must not contain NUL characters", code="nul_character")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise Invalid(
            "the query parameters are invalid",
            code="validation_failed",
            details=validation_details(exc),
        ) from None


def json_text(payload: Any) -> str:
    if isinstance(payload, BaseModel):
        return payload.model_dump_json()
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json_text(payload), status=status, content_type="application/json", headers=headers
    )


def check_access(endpoint: Endpoint, principal: Principal | None) -> None:
    """401 when the endpoint needs a caller and there is none; 403 for a read-only token."""
    if endpoint.auth == "required" and principal is None:
        raise Unauthorized("sign in or send a bearer token", code="unauthorized")
    if endpoint.is_write and principal is not None and not principal.can_write:
        raise Forbidden("this token has read scope only", code="insufficient_scope")


class RawJSON(str):
    """An answer already serialized, by code that writes exactly the endpoint's response
    model (revisions stored as JSON, say): sent as it is, not validated again. The contract
    tests (test_schemathesis.py) hold such answers to the document."""


def answer_text(endpoint: Endpoint, result: Any) -> str | None:
    """A handler's result as JSON, validated as the endpoint's response model; None for none."""
    if result is None:
        return None
    if isinstance(result, RawJSON):
        return result
    if endpoint.response is not None and not isinstance(result, BaseModel):
        result = endpoint.response.model_validate(result)
    return json_text(result)


def bind(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    one_read = not inspect.iscoroutinefunction(endpoint.handler)

    async def handle(request: web.Request) -> web.StreamResponse:
        credential = request.get(CREDENTIAL)
        call = Call(request=request, principal=request.get(PRINCIPAL))
        if credential is None:
            check_access(endpoint, call.principal)
        try:
            if endpoint.query is not None:
                call.query = read_query(request, endpoint.query)
            if endpoint.body is not None:
                call.body = await read_json(request, endpoint.body)
        except OpenWriteError:
            if credential is not None:  # a bad token is answered before a bad input
                await _resolve_caller(call, endpoint, credential)
            raise
        if one_read:
            text = await _one_read(call, endpoint, credential)
        else:
            result = await endpoint.handler(call)
            if isinstance(result, web.StreamResponse):
                return result
            text = answer_text(endpoint, result)
        if text is None:
            return web.Response(status=endpoint.status if endpoint.status != 200 else 204)
        return web.Response(text=text, status=endpoint.status, content_type="application/json")

    handle.__name__ = endpoint.handler.__name__
    # Tells the authentication middleware to leave the token to `_one_read`.
    handle.identifies_caller = one_read  # type: ignore[attr-defined]
    return handle


async def _one_read(call: Call, endpoint: Endpoint, credential: Credential | None) -> str | None:
    """A one-read endpoint's answer, all of it made by one read call: the token resolved
    and checked, the handler's read, the response validated and serialized. On a reader
    thread, the event loop gets one string rather than rows to convert (which cost it more
    than twice the CPU they cost the reader thread that has just built them)."""
    read = call.db.read_quick if endpoint.quick else call.db.read
    if credential is None:
        return await read(_read_answer, endpoint, call)
    resolved, text, error = await read(_identify_and_answer, endpoint, call, credential)
    await touch_if_due(call.db, resolved)
    if error is not None:
        raise error
    return text


def _read_answer(conn: Any, endpoint: Endpoint, call: Call) -> str | None:
    return answer_text(endpoint, endpoint.handler(conn, call))


def _identify_and_answer(
    conn: Any, endpoint: Endpoint, call: Call, credential: Credential
) -> tuple[Resolved, str | None, Exception | None]:
    """A failure after the token resolved is returned, not raised, so that the token's
    last use is stamped all the same, as when the middleware resolves it."""
    resolved = identify(conn, credential)
    call.principal = call.request[PRINCIPAL] = resolved.principal
    try:
        check_access(endpoint, call.principal)
        return resolved, _read_answer(conn, endpoint, call), None
    except Busy:
        raise  # not an answer: `read_quick` reads it all again on a reader thread
    except Exception as exc:
        return resolved, None, exc


async def _resolve_caller(call: Call, endpoint: Endpoint, credential: Credential) -> None:
    resolved = await call.db.read_quick(identify, credential)
    call.principal = call.request[PRINCIPAL] = resolved.principal
    await touch_if_due(call.db, resolved)
    check_access(endpoint, call.principal)
