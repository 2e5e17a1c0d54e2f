"""Who is calling: the same answers whether the token is resolved by the authentication
middleware (raw routes, coroutine handlers) or inside a one-read endpoint's read."""

from __future__ import annotations

import base64
import threading

import apsw
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.endpoints import PRINCIPAL
from storage import novels
from tests.conftest import Writer, sign_up
from tests.test_accounts import expire_token


def as_token(writer: Writer, token: str) -> Writer:
    return Writer(writer.client, writer.user, token, writer.org)


async def new_token(writer: Writer, scopes: list[str]) -> dict:
    status, created = await writer.call(
        "POST", "/api/v1/tokens", {"name": "laptop", "scopes": scopes}
    )
    assert status == 201, created
    return created


async def last_used(writer: Writer, token_id: str) -> str | None:
    _, listing = await writer.call("GET", "/api/v1/tokens")
    return next(t["last_used_at"] for t in listing["items"] if t["id"] == token_id)


async def test_a_listing_refuses_a_token_the_moment_it_is_revoked(ann: Writer):
    await ann.call("POST", "/api/v1/novels", {"title": "Draft"})
    created = await new_token(ann, ["read"])
    reader = as_token(ann, created["token"])
    status, listing = await reader.call("GET", "/api/v1/novels")
    assert status == 200 and [n["title"] for n in listing["items"]] == ["Draft"]
    assert (await ann.call("DELETE", f"/api/v1/tokens/{created['id']}"))[0] == 204
    response = await ann.client.get("/api/v1/novels", headers=reader.headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="openwrite"'
    assert (await response.json())["error"]["code"] == "invalid_token"


async def test_a_listing_refuses_an_expired_token(ann: Writer, settings: Settings):
    created = await new_token(ann, ["read"])
    expire_token(settings, created["id"])
    status, body = await as_token(ann, created["token"]).call("GET", "/api/v1/novels")
    assert status == 401 and body["error"]["code"] == "invalid_token"


async def test_a_bad_token_is_answered_before_a_bad_query(ann: Writer):
    stranger = as_token(ann, "ows_" + "x" * 43)
    status, body = await stranger.call("GET", "/api/v1/novels?limit=many")
    assert status == 401 and body["error"]["code"] == "invalid_token"
    status, body = await ann.call("GET", "/api/v1/novels?limit=many")
    assert status == 422 and body["error"]["code"] == "validation_failed"


async def test_a_malformed_authorization_header_is_refused_before_any_read(ann: Writer):
    for header in ("Bearer", "Token abc", "Basic !!!", "Bearer " + "x" * 201):
        response = await ann.client.get("/api/v1/novels", headers={"Authorization": header})
        assert response.status == 401, header
        assert (await response.json())["error"]["code"] == "invalid_token"
    basic = base64.b64encode(f"writer:{ann.token}".encode()).decode()
    response = await ann.client.get("/api/v1/novels", headers={"Authorization": f"Basic {basic}"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"


async def test_without_a_token_a_listing_is_empty_and_a_private_novel_hidden(
    client: TestClient, ann: Writer
):
    _, novel = await ann.call("POST", "/api/v1/novels", {"title": "Private"})
    response = await client.get("/api/v1/novels")
    assert response.status == 200
    assert await response.json() == {"items": [], "next_cursor": None}
    response = await client.get(f"/api/v1/novels/{novel['id']}")
    assert response.status == 404


async def test_a_first_use_is_stamped_even_when_the_read_finds_nothing(ann: Writer):
    created = await new_token(ann, ["read"])
    assert await last_used(ann, created["id"]) is None
    status, _ = await as_token(ann, created["token"]).call("GET", "/api/v1/novels/nonexistent")
    assert status == 404
    assert await last_used(ann, created["id"]) is not None


async def test_a_read_token_reads_through_one_read_endpoints_but_still_cannot_write(ann: Writer):
    _, novel = await ann.call("POST", "/api/v1/novels", {"title": "Draft"})
    reader = as_token(ann, (await new_token(ann, ["read"]))["token"])
    status, read = await reader.call("GET", f"/api/v1/novels/{novel['id']}")
    assert status == 200 and read == novel
    status, body = await reader.call("PATCH", f"/api/v1/novels/{novel['id']}", {"title": "No"})
    assert status == 403 and body["error"]["code"] == "insufficient_scope"


async def test_a_route_outside_the_endpoint_table_sees_the_caller_before_it_runs(
    aiohttp_client, settings: Settings
):
    seen: list[object] = []

    async def probe(request: web.Request) -> web.Response:
        principal = request[PRINCIPAL]
        seen.append(principal.user_id if principal else None)
        return web.Response(text="ok")

    app = create_app(settings)
    app.router.add_get("/probe", probe)
    client = await aiohttp_client(app)
    ann = await sign_up(client, "Ann Writer")
    assert (await client.get("/probe", headers=ann.headers)).status == 200
    assert (await client.get("/probe")).status == 200
    created = await new_token(ann, ["read"])
    assert (await ann.call("DELETE", f"/api/v1/tokens/{created['id']}"))[0] == 204
    refused = await client.get("/probe", headers={"Authorization": f"Bearer {created['token']}"})
    assert refused.status == 401
    assert seen == [ann.user["id"], None]


async def test_a_one_read_endpoint_answered_busy_on_the_loop_is_read_again_on_a_thread(
    ann: Writer, monkeypatch
):
    """SQLite answering busy to the event loop's connection is not the caller's error:
    the whole read, token included, runs again on a reader thread."""
    await ann.call("POST", "/api/v1/novels", {"title": "Draft"})
    real, threads = novels.list_novels, []

    def busy_once(conn, *args, **kwargs):
        threads.append(threading.current_thread().name)
        if len(threads) == 1:
            raise apsw.BusyError("database is locked")
        return real(conn, *args, **kwargs)

    monkeypatch.setattr(novels, "list_novels", busy_once)
    status, listing = await ann.call("GET", "/api/v1/novels")
    assert status == 200, listing
    assert [n["title"] for n in listing["items"]] == ["Draft"]
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("sqlite-read")
