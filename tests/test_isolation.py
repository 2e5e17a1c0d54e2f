"""Tenant isolation: Bob (and an anonymous caller) tries every route on Ann's organization,
novels, sessions and tokens. Routes come from the app's router, so a new route is covered
the day it is added: its path parameters are filled with Ann's ids and its body (built
from the endpoint's pydantic model) names Ann's organization, team and user."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import ClientTimeout
from aiohttp.test_utils import TestClient
from pydantic import BaseModel

from server.app import all_endpoints
from server.config import Settings
from server.git_http import pkt_line
from tests.conftest import Writer
from tests.db_snapshot import data_state

_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")
# Body and query fields that name an existing resource (a new slug is not one: it is
# unique server-wide, so a taken slug is a 409 for everybody).
REFERENCES = {"org", "organization", "team_id", "user_id", "novel_id"}
# Query fields that choose what a route does, set so that it does its real work.
QUERY_EXAMPLES = {"service": "git-upload-pack"}
# A POST that only reads: a Git fetch posts its negotiation.
READING_POSTS = {("POST", "/git/{novel_id}.git/git-upload-pack")}
# Routes whose body is not JSON (Git's smart HTTP): the request a real client sends.
RAW_REQUESTS = {
    ("POST", "/git/{novel_id}.git/git-upload-pack"): (
        pkt_line(b"command=ls-refs\n") + b"0001" + pkt_line(b"symrefs\n") + b"0000",
        {"Content-Type": "application/x-git-upload-pack-request", "Git-Protocol": "version=2"},
    ),
    ("POST", "/git/{novel_id}.git/git-receive-pack"): (
        b"0000",
        {"Content-Type": "application/x-git-receive-pack-request"},
    ),
}
TIMEOUT = ClientTimeout(total=30)


@dataclass
class Target:
    """Ann's resources, by the parameter names routes use for them."""

    ids: dict[str, str]
    secrets: list[str]  # strings Bob must never see in an answer

    def fill(self, name: str) -> str:
        if name == "path":
            return self.ids.get("path", "chapters/0001.md")
        return self.ids.get(name, self.ids["novel_id"])


@dataclass
class Attempt:
    method: str
    pattern: str
    path: str
    body: Any
    has_body: bool
    query: dict[str, str]
    reads: bool  # a read, whatever its method (a Git fetch is a POST)
    raw: tuple[bytes, dict[str, str]] | None = None


def _schema_example(schema: dict, defs: dict, name: str | None, target: Target, me: Writer) -> Any:
    """A value valid for `schema`, pointing at Ann's resources where the field names one."""
    if "$ref" in schema:
        return _schema_example(defs[schema["$ref"].split("/")[-1]], defs, name, target, me)
    if name in REFERENCES:
        return target.fill(name)
    if name == "email":
        return me.user["email"]
    if name and name.endswith("url") or schema.get("format") == "uri":
        return "http://127.0.0.1:9/"
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return _schema_example(options[0], defs, name, target, me)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][-1]
    kind = schema.get("type")
    if kind == "object":
        return {
            key: _schema_example(sub, defs, key, target, me)
            for key, sub in schema.get("properties", {}).items()
        }
    if kind == "array":
        count = max(schema.get("minItems", 1), 1)
        return [_schema_example(schema.get("items", {}), defs, None, target, me)] * count
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if schema.get("format") == "date-time":
        return (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return _text_example(schema)


def _text_example(schema: dict) -> str:
    """The first plain text the schema's pattern and lengths accept."""
    shortest, longest = schema.get("minLength", 1), schema.get("maxLength", 10_000)
    candidates = [
        "example-text",
        "example",
        "chapters/0001.md",
        "a1",
        "1",
        "0" * 40,
        "x" * shortest,
    ]
    for text in candidates:
        pattern = schema.get("pattern")
        if shortest <= len(text) <= longest and (pattern is None or re.search(pattern, text)):
            return text
    raise AssertionError(f"no example text fits {schema}; add one to _text_example")


def example_body(model: type[BaseModel], target: Target, me: Writer) -> Any:
    schema = model.model_json_schema()
    return _schema_example(schema, schema.get("$defs", {}), None, target, me)


def attempts_on(client: TestClient, target: Target, me: Writer) -> list[Attempt]:
    """Every route that names a resource of Ann's, in its path, body or query."""
    endpoints = {(e.method, e.path): e for e in all_endpoints()}
    found = []
    for route in client.app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*"):
            continue
        pattern = route.resource.canonical
        endpoint = endpoints.get((route.method, pattern))
        body = query = None
        if endpoint is not None and endpoint.body is not None:
            body = example_body(endpoint.body, target, me)
        if endpoint is not None and endpoint.query is not None:
            query = {
                key: target.fill(key) if key in REFERENCES else QUERY_EXAMPLES[key]
                for key in endpoint.query.model_json_schema().get("properties", {})
                if key in REFERENCES or key in QUERY_EXAMPLES
            }
        names_ann = (
            bool(_PARAM.search(pattern))
            or bool(query)
            or (isinstance(body, dict) and REFERENCES & set(body))
        )
        if names_ann:
            path = _PARAM.sub(lambda m: target.fill(m.group(1)), pattern)
            found.append(
                Attempt(
                    route.method,
                    pattern,
                    path,
                    body,
                    endpoint is not None and endpoint.body is not None,
                    query or {},
                    reads=route.method == "GET" or (route.method, pattern) in READING_POSTS,
                    raw=RAW_REQUESTS.get((route.method, pattern)),
                )
            )
    return found


async def attempt(client: TestClient, item: Attempt, headers: dict[str, str]) -> tuple[int, str]:
    kwargs: dict[str, Any] = {"headers": headers, "params": item.query, "timeout": TIMEOUT}
    if item.has_body:
        kwargs["json"] = item.body
    if item.raw is not None:
        kwargs["data"], extra = item.raw
        kwargs["headers"] = {**headers, **extra}
    response = await client.request(item.method, item.path, **kwargs)
    return response.status, await response.text()


@pytest.fixture
async def target(ann: Writer) -> Target:
    """Ann's organization with a team, a private novel, a second session and a token."""
    status, org = await ann.call(
        "POST", "/api/v1/orgs", {"name": "Ann's Guild", "slug": "anns-guild"}
    )
    assert status == 201
    _, team = await ann.call("POST", "/api/v1/orgs/anns-guild/teams", {"name": "Editors"})
    await ann.call(
        "POST", f"/api/v1/orgs/anns-guild/teams/{team['id']}/members", {"user_id": ann.user["id"]}
    )
    _, novel = await ann.call("POST", "/api/v1/novels", {"title": "Private", "org": "anns-guild"})
    _, token = await ann.call(
        "POST", "/api/v1/tokens", {"name": "sync", "scopes": ["read", "write"]}
    )
    _, sessions = await ann.call("GET", "/api/v1/auth/sessions")
    ids = {
        "slug": "anns-guild",
        "org": "anns-guild",
        "organization": "anns-guild",
        "team_id": team["id"],
        "user_id": ann.user["id"],
        "novel_id": novel["id"],
        "session_id": sessions["items"][0]["id"],
        "token_id": token["id"],
        "organization_id": org["id"],
    }
    ids.update(await _content_ids(ann, novel["id"]))
    secrets = [novel["id"], org["id"], team["id"], ann.user["email"], token["id"], token["token"]]
    secrets += [ann.token, ids["session_id"], "Private", "Ann's Guild"]
    return Target(ids=ids, secrets=secrets)


async def _content_ids(ann: Writer, novel_id: str) -> dict[str, str]:
    """Ids of a chapter, character and location, on servers that already have those routes."""
    ids = {}
    routes = {(r.method, r.resource.canonical) for r in ann.client.app.router.routes()}
    for kind, single, body in (
        ("chapters", "chapter", {"title": "One", "content": "Ann's words."}),
        ("characters", "character", {"name": "Mara"}),
        ("locations", "location", {"name": "Harbour"}),
    ):
        if ("POST", f"/api/v1/novels/{{novel_id}}/{kind}") not in routes:
            continue
        status, answer = await ann.call("POST", f"/api/v1/novels/{novel_id}/{kind}", body)
        if status == 201 and isinstance(answer, dict):
            item = answer.get(single, answer)
            ids[f"{single}_id"] = item["id"]
            ids.setdefault("path", item.get("path", "chapters/0001.md"))
    return ids


# Refusals that depend only on the caller's own credential, never on Ann's data.
CALLER_ONLY = {"not_a_session"}


def refusals(
    results: list[tuple[Attempt, int, str]], target: Target, allowed: dict[str, set[int]]
) -> list[str]:
    """What went wrong: a status outside `allowed`, or one of Ann's secrets in a success."""
    problems = []
    for item, status, text in results:
        ok = allowed["GET" if item.reads else "write"]
        if status == 422 and '"validation_failed"' in text:
            problems.append(f"{item.method} {item.pattern}: the example body is invalid: {text}")
        elif status not in ok and not any(f'"code":"{c}"' in text for c in CALLER_ONLY):
            problems.append(f"{item.method} {item.pattern} -> {status}: {text[:200]}")
        leaked = [s for s in target.secrets if status < 300 and s in text]
        if leaked:
            problems.append(f"{item.method} {item.pattern} -> {status} shows {leaked}")
    return problems


async def test_the_matrix_reaches_every_route_with_a_parameter(
    client: TestClient, target: Target, bob: Writer
):
    attempts = attempts_on(client, target, bob)
    patterns = {(a.method, a.pattern) for a in attempts}
    with_parameters = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()
        if "{" in r.resource.canonical and r.method not in ("HEAD", "OPTIONS", "*")
    }
    assert with_parameters <= patterns
    # Routes that name Ann's organization in the body or the query are tried too.
    assert ("POST", "/api/v1/novels") in patterns
    assert ("PUT", "/api/v1/auth/sessions/current") in patterns
    assert ("GET", "/api/v1/novels") in patterns


async def test_another_writer_gets_404_on_everything_of_anns_and_changes_nothing(
    client: TestClient, target: Target, bob: Writer, settings: Settings
):
    before = data_state(settings)
    results = []
    for item in attempts_on(client, target, bob):
        status, text = await attempt(client, item, bob.headers)
        results.append((item, status, text))
    # A 200 is only the empty answer to "list the novels of Ann's organization".
    problems = refusals(results, target, {"GET": {404, 200}, "write": {404}})
    assert problems == []
    assert data_state(settings) == before


async def test_an_anonymous_caller_gets_401_or_404_on_everything_of_anns(
    client: TestClient, target: Target, bob: Writer, settings: Settings
):
    before = data_state(settings)
    results = []
    for item in attempts_on(client, target, bob):
        status, text = await attempt(client, item, {})
        results.append((item, status, text))
    problems = refusals(results, target, {"GET": {401, 404, 200}, "write": {401, 404}})
    assert problems == []
    assert data_state(settings) == before


async def test_a_read_token_of_another_writer_gets_nothing_either(
    client: TestClient, target: Target, bob: Writer, settings: Settings
):
    _, token = await bob.call("POST", "/api/v1/tokens", {"name": "r", "scopes": ["read"]})
    await bob.call("GET", "/api/v1/me", headers={"Authorization": f"Bearer {token['token']}"})
    before = data_state(settings)
    results = []
    for item in attempts_on(client, target, bob):
        status, text = await attempt(client, item, {"Authorization": f"Bearer {token['token']}"})
        results.append((item, status, text))
    # Writes are stopped by scope (403 insufficient_scope) before anything is looked up.
    problems = refusals(results, target, {"GET": {404, 200}, "write": {403, 404}})
    assert problems == []
    assert data_state(settings) == before


async def test_a_public_novel_is_readable_by_another_writer_but_never_writable(
    client: TestClient, target: Target, ann: Writer, bob: Writer, settings: Settings
):
    novel_id = target.ids["novel_id"]
    status, _ = await ann.call("PATCH", f"/api/v1/novels/{novel_id}", {"visibility": "public"})
    assert status == 200
    # What the public novel's own answer shows is no longer secret.
    shown = {novel_id, target.ids["organization_id"], "Private"}
    public = Target(ids=target.ids, secrets=[s for s in target.secrets if s not in shown])
    before = data_state(settings)
    results = []
    for item in attempts_on(client, target, bob):
        status, text = await attempt(client, item, bob.headers)
        results.append((item, status, text))
        if "{novel_id}" in item.pattern:
            # Bob may read this novel, so refusing a write is a 403, and reads succeed.
            assert status in ({200, 304, 404} if item.reads else {403, 404}), (
                item.method,
                item.pattern,
                status,
                text[:200],
            )
        else:
            assert status in ({200, 404} if item.reads else {404}), (
                item.method,
                item.pattern,
                status,
                text[:200],
            )
    assert refusals(results, public, {"GET": {200, 304, 404}, "write": {403, 404}}) == []
    # Reading a public novel includes cloning it: the Git reads really answered.
    git_reads = {status for item, status, _ in results if item.reads and "/git/" in item.pattern}
    assert git_reads == {200}
    status, body = await bob.call("GET", f"/api/v1/novels/{novel_id}")
    assert status == 200 and body["title"] == "Private"
    assert data_state(settings) == before
