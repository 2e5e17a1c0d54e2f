"""Endpoints declared once: the router and the OpenAPI document are both built from them.

An `Endpoint` names its method, path, pydantic models, status codes and auth needs;
`bind` turns it into an aiohttp handler that authenticates, parses and validates the
request, calls the handler with a `Call`, and serializes the answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from server.state import DB, SETTINGS
from storage.access import Principal
from storage.errors import Forbidden, Invalid, OpenWriteError, TooLarge, Unauthorized

# Who is calling; set by the authentication middleware (None when anonymous).
PRINCIPAL = web.RequestKey("principal", Principal | None)


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


Handler = Callable[[Call], Awaitable[Any]]


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
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
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


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    if isinstance(payload, BaseModel):
        text = payload.model_dump_json()
    else:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def bind(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal: Principal | None = request.get(PRINCIPAL)
        if endpoint.auth == "required" and principal is None:
            raise Unauthorized("sign in or send a bearer token", code="unauthorized")
        if endpoint.is_write and principal is not None and not principal.can_write:
            raise Forbidden("this token has read scope only", code="insufficient_scope")
        call = Call(request=request, principal=principal)
        if endpoint.query is not None:
            call.query = read_query(request, endpoint.query)
        if endpoint.body is not None:
            call.body = await read_json(request, endpoint.body)
        result = await endpoint.handler(call)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=endpoint.status if endpoint.status != 200 else 204)
        if endpoint.response is not None and not isinstance(result, BaseModel):
            result = endpoint.response.model_validate(result)
        return json_response(result, endpoint.status)

    handle.__name__ = endpoint.handler.__name__
    return handle
