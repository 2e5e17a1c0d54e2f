"""The OpenAPI 3.1 document, generated from the same endpoint table and models the router uses."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from server.endpoints import Endpoint
from server.models import Error

_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")
_STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad request",
    401: "Missing or invalid credentials", 403: "Not allowed", 404: "Not found",
    409: "Conflict", 413: "Body too large", 415: "Body is not JSON", 422: "Invalid input",
    429: "Too many requests", 500: "The novel's repository is damaged (repository_corrupt)",
    502: "Upstream failure", 503: "Unavailable", 504: "Upstream timeout",
}  # fmt: skip


def openapi_path(path: str) -> str:
    """aiohttp's `{name:regex}` becomes OpenAPI's `{name}`."""
    return _PARAM.sub(lambda match: "{" + match.group(1) + "}", path)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _raw_schema(e: Endpoint, content_type: str) -> dict[str, Any]:
    """A body that is not a model: text, or one Server-Sent Event of a stream (the event
    name, one of `extra["events"]` when given, and its `data`, JSON text)."""
    if content_type != "text/event-stream":
        return {"type": "string"}
    event: dict[str, Any] = {"type": "string"}
    if "events" in e.extra:
        event["enum"] = list(e.extra["events"])
    return {
        "type": "object",
        "properties": {
            "event": event,
            "data": {"type": "string", "contentMediaType": "application/json"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
        "required": ["data"],
    }


def build_openapi(endpoints: list[Endpoint], *, version: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = {Error}
    for e in endpoints:
        models.update(m for m in (e.body, e.response) if m is not None)
    _, schema = models_json_schema(
        [(model, "validation") for model in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        operation: dict[str, Any] = {
            "operationId": e.handler.__name__,
            "summary": e.summary,
            "tags": [e.tag],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PARAM.findall(e.path)
            ],
            "responses": {},
        }
        if e.query is not None:
            query_schema = e.query.model_json_schema()
            for name, prop in query_schema.get("properties", {}).items():
                operation["parameters"].append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in query_schema.get("required", []),
                        "schema": prop,
                    }
                )
        if e.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(e.body)}},
            }
        elif "request_type" in e.extra:  # a body that is not JSON, read by the handler itself
            media = e.extra["request_type"]
            operation["requestBody"] = {
                "required": True,
                "content": {media: {"schema": {"type": "string", "contentMediaType": media}}},
            }
        success: dict[str, Any] = {"description": _STATUS_TEXT.get(e.status, "OK")}
        if e.response is not None:
            success["content"] = {e.content_type: {"schema": _ref(e.response)}}
        elif e.content_type != "application/json":
            success["content"] = {e.content_type: {"schema": _raw_schema(e, e.content_type)}}
        # Other forms of the same success, e.g. an event stream when the body asks for one.
        for content_type, description in e.extra.get("also_answers", {}).items():
            schema_of = {**_raw_schema(e, content_type), "description": description}
            success.setdefault("content", {})[content_type] = {"schema": schema_of}
        operation["responses"][str(e.status)] = success
        statuses = set(e.errors)
        if e.body is not None:
            statuses |= {400, 413, 415, 422}
        if e.query is not None:
            statuses.add(422)
        # An unknown, expired or revoked token is a 401 on every route, even on those
        # that need none: a client should learn its token is dead, not be served anonymously.
        statuses.add(401)
        if e.auth == "required":
            operation["security"] = [{"bearer": []}]
        else:
            operation["security"] = [{"bearer": []}, {}]
        if e.is_write:
            statuses.add(403)
        # Storage faults any route may meet where it touches the disk: a write on a full or
        # read-only disk (503 storage_full, storage_read_only), a novel whose repository
        # Git cannot read (500 repository_corrupt).
        if e.method != "GET":
            statuses.add(503)
        if "{novel_id}" in e.path:
            statuses.add(500)
        for status in sorted(statuses):
            operation["responses"][str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": _ref(Error)}},
            }
        for status, description in e.extra.get("responses", {}).items():
            operation["responses"][str(status)] = {"description": description}
        paths.setdefault(openapi_path(e.path), {})[e.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "OpenWrite sync server", "version": version},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
