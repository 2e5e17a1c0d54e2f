"""The HTTP contract every route keeps: the error shape and statuses, body limits, CORS,
the OpenAPI document and /healthz. Routes are enumerated from the app, so a new route
is held to the same contract without touching this file."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from server.app import all_endpoints, create_app
from server.config import Settings
from server.endpoints import Endpoint
from server.openapi import openapi_path
from tests.conftest import Writer, sign_up
from tests.db_snapshot import data_state

ALLOWED_ORIGIN = "https://editor.example"
BODY_LIMIT = 4096
_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """The suite's settings with a small body limit, so 413 is cheap to provoke."""
    return Settings(
        data_dir=data_dir,
        scrypt_n=2**12,
        cors_origins=(ALLOWED_ORIGIN,),
        max_body_bytes=BODY_LIMIT,
    )


def concrete(path: str) -> str:
    """A route pattern with every parameter filled by an id nobody has."""
    return _PARAM.sub(lambda m: "chapters/none.md" if m.group(1) == "path" else "x0none", path)


def routes_of(client: TestClient) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method not in ("HEAD", "*", "OPTIONS")
    }


def body_endpoints() -> list[Endpoint]:
    return [e for e in all_endpoints() if e.body is not None]


def headers_for(endpoint: Endpoint, writer: Writer) -> dict[str, str]:
    return writer.headers if endpoint.auth != "none" else {}


def assert_error_shape(body: dict, code: str | None = None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body


# -- 401 --------------------------------------------------------------------------


async def test_every_route_that_needs_a_token_answers_401_with_a_challenge_without_one(
    client: TestClient,
):
    required = [e for e in all_endpoints() if e.auth == "required"]
    assert required
    for endpoint in required:
        response = await client.request(endpoint.method, concrete(endpoint.path))
        assert response.status == 401, (endpoint.method, endpoint.path)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="openwrite"'
        assert_error_shape(await response.json(), "unauthorized")


async def test_an_unknown_or_malformed_token_is_401_on_every_route(client: TestClient):
    for method, path in sorted(routes_of(client)):
        for header in ("Bearer ows_unknown", "Bearer ", "Bearer " + "x" * 201, "Digest abc"):
            response = await client.request(
                method, concrete(path), headers={"Authorization": header}
            )
            assert response.status == 401, (method, path, header)
            assert "WWW-Authenticate" in response.headers
            assert_error_shape(await response.json(), "invalid_token")


# -- request bodies: 422, 415, 413, 400 -------------------------------------------


async def test_every_body_route_answers_422_with_field_details_and_writes_nothing(
    ann: Writer, settings: Settings
):
    before = data_state(settings)
    for endpoint in body_endpoints():
        for body in ([], {"no_such_field": 1}):
            response = await ann.client.request(
                endpoint.method,
                concrete(endpoint.path),
                json=body,
                headers=headers_for(endpoint, ann),
            )
            assert response.status == 422, (endpoint.method, endpoint.path, body)
            answer = await response.json()
            assert_error_shape(answer, "validation_failed")
            fields = answer["error"]["details"]["fields"]
            assert fields and all({"loc", "message", "type"} <= set(f) for f in fields)
    assert data_state(settings) == before


async def test_a_nul_character_in_text_is_refused(ann: Writer, settings: Settings):
    before = data_state(settings)
    status, body = await ann.call("POST", "/api/v1/novels", {"title": "Bad\x00Title"})
    assert status == 422 and body["error"]["code"] == "nul_character"
    status, body = await ann.call("GET", "/api/v1/novels", params={"org": "a\x00b"})
    assert status == 422
    assert data_state(settings) == before


async def test_every_body_route_refuses_a_body_that_is_not_json_with_415(
    ann: Writer, settings: Settings
):
    before = data_state(settings)
    for endpoint in body_endpoints():
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = headers_for(endpoint, ann)
            if content_type:
                headers = {**headers, "Content-Type": content_type}
            response = await ann.client.request(
                endpoint.method, concrete(endpoint.path), data=b'{"title": "x"}', headers=headers
            )
            assert response.status == 415, (endpoint.method, endpoint.path, content_type)
            assert_error_shape(await response.json(), "unsupported_media_type")
        response = await ann.client.request(
            endpoint.method,
            concrete(endpoint.path),
            data='{"title": "é"}'.encode("latin-1"),
            headers={
                **headers_for(endpoint, ann),
                "Content-Type": "application/json; charset=latin-1",
            },
        )
        assert response.status == 415, (endpoint.method, endpoint.path)
    assert data_state(settings) == before


async def test_every_body_route_refuses_a_body_over_the_limit_with_413(
    ann: Writer, settings: Settings
):
    oversized = b'{"title": "' + b"x" * BODY_LIMIT + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(oversized), 1000):
            yield oversized[start : start + 1000]

    before = data_state(settings)
    for endpoint in body_endpoints():
        headers = {**headers_for(endpoint, ann), "Content-Type": "application/json"}
        for data in (oversized, chunks()):  # with a Content-Length, then chunked
            response = await ann.client.request(
                endpoint.method, concrete(endpoint.path), data=data, headers=headers
            )
            assert response.status == 413, (endpoint.method, endpoint.path)
            answer = await response.json()
            assert_error_shape(answer, "payload_too_large")
            assert answer["error"]["details"]["limit"] == BODY_LIMIT
    assert data_state(settings) == before


async def test_a_body_just_under_the_limit_is_accepted(ann: Writer):
    description = "x" * (BODY_LIMIT - 100)
    status, novel = await ann.call(
        "POST", "/api/v1/novels", {"title": "Long", "description": description}
    )
    assert status == 201 and novel["description"] == description


async def test_broken_json_and_broken_utf8_are_400(ann: Writer, settings: Settings):
    before = data_state(settings)
    headers = {**ann.headers, "Content-Type": "application/json"}
    for data, code in ((b'{"title": ', "invalid_json"), (b'{"title": "\xff"}', "invalid_encoding")):
        response = await ann.client.post("/api/v1/novels", data=data, headers=headers)
        assert response.status == 400
        assert_error_shape(await response.json(), code)
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await ann.client.post("/api/v1/novels", data=deep[:BODY_LIMIT], headers=headers)
    assert response.status in (400, 413)
    assert data_state(settings) == before


# -- 404, 405, 409 ----------------------------------------------------------------


async def test_an_unknown_path_is_a_json_404(ann: Writer):
    for path in ("/api/v1/nothing-here", "/api/v2/novels", "/"):
        status, body = await ann.call("GET", path)
        assert status == 404, path
        assert_error_shape(body, "not_found")


async def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones(ann: Writer):
    response = await ann.client.put("/api/v1/me", headers=ann.headers)
    assert response.status == 405
    assert "GET" in response.headers["Allow"]
    assert_error_shape(await response.json(), "method_not_allowed")


async def test_duplicates_are_409_conflicts(ann: Writer, bob: Writer, settings: Settings):
    before = data_state(settings)
    response = await ann.client.post(
        "/api/v1/auth/signup",
        json={"name": "Again", "email": ann.user["email"], "password": "correct horse"},
    )
    assert response.status == 409
    assert_error_shape(await response.json(), "email_taken")
    status, body = await bob.call("POST", "/api/v1/orgs", {"name": "Copy", "slug": ann.org})
    assert status == 409
    assert_error_shape(body, "slug_taken")
    assert data_state(settings) == before


# -- CORS -------------------------------------------------------------------------


async def test_a_preflight_from_an_allowed_origin_is_answered_with_204(client: TestClient):
    for path in ("/api/v1/novels", "/api/v1/novels/x0none", "/api/v1/me"):
        response = await client.options(
            path,
            headers={
                "Origin": ALLOWED_ORIGIN,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert response.status == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        allowed = {
            h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
        }
        assert {"authorization", "content-type"} <= allowed
        methods = response.headers["Access-Control-Allow-Methods"]
        assert {"GET", "POST", "PATCH", "DELETE", "PUT"} <= {m.strip() for m in methods.split(",")}
        assert "Origin" in response.headers.getall("Vary")


async def test_answers_to_an_allowed_origin_carry_cors_headers_even_for_errors(ann: Writer):
    status_by_call = {}
    for headers in ({**ann.headers, "Origin": ALLOWED_ORIGIN}, {"Origin": ALLOWED_ORIGIN}):
        response = await ann.client.get("/api/v1/me", headers=headers)
        status_by_call[bool(headers.get("Authorization"))] = response.status
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        exposed = response.headers["Access-Control-Expose-Headers"]
        assert "ETag" in exposed and "WWW-Authenticate" in exposed
    assert status_by_call == {True: 200, False: 401}


async def test_a_streamed_answer_to_an_allowed_origin_carries_cors_headers(ann: Writer):
    """The event stream's headers go out before its handler returns."""
    headers = {**ann.headers, "Origin": ALLOWED_ORIGIN}
    async with ann.client.get("/api/v1/events", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        assert "Origin" in response.headers.getall("Vary")
        assert await response.content.readline() == b": connected\n"


async def test_a_disallowed_origin_gets_no_cors_headers(ann: Writer):
    for origin in ("https://evil.example", "null", ALLOWED_ORIGIN + ".evil.example"):
        preflight = await ann.client.options(
            "/api/v1/novels",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status != 204
        response = await ann.client.get("/api/v1/me", headers={**ann.headers, "Origin": origin})
        assert response.status == 200
        for answer in (preflight, response):
            assert not [h for h in answer.headers if h.lower().startswith("access-control-")]


async def test_without_configured_origins_no_origin_gets_cors_headers(
    aiohttp_client, settings: Settings
):
    """The default: no origin is allowed, so the server asks nothing about origins."""
    settings = dataclasses.replace(settings, cors_origins=())
    client = await aiohttp_client(create_app(settings))
    writer = await sign_up(client)
    preflight = await client.options(
        "/api/v1/novels", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status == 405
    assert (await preflight.json())["error"]["code"] == "method_not_allowed"
    response = await client.get("/api/v1/me", headers={**writer.headers, "Origin": ALLOWED_ORIGIN})
    assert response.status == 200
    for answer in (preflight, response):
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]


# -- OpenAPI and health -----------------------------------------------------------


async def openapi(client: TestClient) -> dict:
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    return await response.json()


async def test_the_openapi_document_describes_every_route_of_the_router(client: TestClient):
    document = await openapi(client)
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = {(method, openapi_path(path)) for method, path in routes_of(client)}
    assert served - documented == set(), "routes the OpenAPI document does not describe"
    assert documented - served == set(), "documented operations the router does not serve"


async def test_every_documented_path_parameter_is_declared(client: TestClient):
    document = await openapi(client)
    for path, operations in document["paths"].items():
        in_path = set(re.findall(r"{([^}]+)}", path))
        for method, operation in operations.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == in_path, (method, path)
            assert any(code.startswith("2") for code in operation["responses"]), (method, path)


async def test_the_openapi_document_is_valid_openapi_3_1(client: TestClient):
    validator = pytest.importorskip("openapi_spec_validator")
    document = await openapi(client)
    assert document["openapi"].startswith("3.1")
    validator.validate(document)


async def test_healthz_answers_200_when_the_database_and_repositories_answer(client: TestClient):
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "database": "ok", "repositories": "ok"}


async def test_healthz_answers_503_when_the_repository_root_is_gone(
    client: TestClient, settings: Settings
):
    settings.repositories_dir.rmdir()
    response = await client.get("/healthz")
    assert response.status == 503
    assert_error_shape(await response.json(), "repositories_unavailable")
