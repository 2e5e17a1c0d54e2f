"""Hostile input on every route of the router: garbage and path traversal in every path
parameter, oversized, nested, mistyped and undecodable bodies, numbers out of range, bad
limits and forged cursors, escaping file paths inside bodies, SQL metacharacters where
identifiers go, and dead, forged, foreign or under-scoped tokens. Every answer is a 4xx in
the JSON error shape, and the SQLite file, its write-ahead log and every file of every
repository are byte-for-byte what they were.

Routes come from `app.router`, so a new route (also one outside the endpoint table) is
attacked the day it is added. Each request is checked on its own; the data directory is
compared once per batch. Requests go out exactly as written: nothing on the way resolves
`..` or re-encodes a byte."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientTimeout
from aiohttp.test_utils import TestClient
from pydantic import BaseModel, ValidationError
from yarl import URL

from server.app import all_endpoints
from server.config import Settings
from server.endpoints import Endpoint
from server.openapi import openapi_path
from storage.db import connect
from tests.conftest import Writer, sign_up
from tests.db_snapshot import table_rows

BODY_LIMIT = 256 * 1024
TIMEOUT = ClientTimeout(total=30)
_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")
FOLDERS = ("chapters", "characters", "locations")
JSON = {"Content-Type": "application/json"}

# What a path segment may be made of by someone who wants out of it, already
# percent-encoded where a raw byte would not be a valid request line.
SEGMENT_GARBAGE = [
    "..", "%2e%2e", "%2E%2E", ".%2e", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2Fetc%2Fpasswd", "..%5C..%5Cwindows", "%5C%5Cserver%5Cshare", "%E2%80%A4%E2%80%A4",
    "%EF%BC%8E%EF%BC%8E%EF%BC%8F", "%EF%BC%8E%EF%BC%8E", "%00", "a%00b", "%ff%fe", "%C0%AE%C0%AE",
    "%27%20OR%20%271%27%3D%271", "1%3B%20DROP%20TABLE%20novel%3B%20--", "%22%3B--", "*", "%25",
    "%20", "-1", "99999999999999999999999999999999", "x" * 2000, ".git", "HEAD",
]  # fmt: skip
# Repository paths that leave the layout, look like it without being it, or hide a byte.
FILE_PATH_GARBAGE = [
    "../novel.md", "chapters/../novel.md", "chapters/../../../etc/passwd", "../../../../etc/passwd",
    "/etc/passwd", "/novel.md", "chapters\\..\\novel.md", "..\\..\\windows\\win.ini",
    "C:\\Windows\\win.ini", "chapters/\u2024\u2024/novel.md", "\u2024\u2024/novel.md",
    "\uff0e\uff0e\uff0fnovel.md", "chapters\uff0fone.md", "chapters/one.md\x00.txt",
    "chapters/\x00", ".git/config", ".git/HEAD", "novel.md/..", "chapters/.md", "chapters//one.md",
    "chapters/one.md/", "~/.ssh/id_rsa", "chapters/%2e%2e/novel.md", "chapters/one\n.md",
    "chapters/" + "a" * 300 + ".md", "chapters/\u202eevil.md", "chapters/cafe\u0301.md",
    "' OR '1'='1", "chapters/x.md'; DROP TABLE chapter; --",
]  # fmt: skip
SQL = ["' OR '1'='1", "1; DROP TABLE novel; --", '" OR ""="', "x' UNION SELECT * FROM account--"]
# Raw JSON no integer field of a body may take, put where a valid number was.
BAD_INTEGERS = [
    "1" + "0" * 30, "-1" + "0" * 30, "-1", str(2**64), "1e400", "NaN", "Infinity", "-Infinity",
    "1.5", '"5"', "true", "[1]", "9" * 5000,
]  # fmt: skip
BAD_NUMBERS = ["1" + "0" * 30, "-1", "1e400", "NaN", "Infinity", "-Infinity", '"5"', "true"]
BAD_LIMITS = [
    "-1", "0", "-9223372036854775809", "1" + "0" * 30, "1.5", "abc", "", "NaN", "0x10", "%00",
    "100000", "1e3",
]  # fmt: skip
# Cursors no server gave out: not base64, not JSON, JSON of the wrong shape, too long.
BAD_CURSORS = [
    "!!!", "%00", "x" * 3000, "Ig", "bnVsbA", "W10", "eyJiZWZvcmUiOiAiMSJ9", "e30", "-1",
    "99999999999999999999", "%27%20OR%201%3D1%20--",
]  # fmt: skip


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """A body limit small enough that oversized bodies are cheap to send."""
    return Settings(data_dir=data_dir, scrypt_n=2**12, max_body_bytes=BODY_LIMIT)


@dataclass
class Target:
    """Ann's rows by the path parameter names routes use for them, and the callers."""

    ann: Writer
    bob: Writer
    ids: dict[str, str]
    items: dict[str, str]  # folder -> id
    read_token: str  # Ann's personal access token with read scope only
    head: str

    def value(self, pattern: str, name: str) -> str:
        """The real value of path parameter `name` in `pattern`, percent-encoded."""
        if name == "item_id":
            return self.items[next(f for f in FOLDERS if f"/{f}/" in pattern)]
        if name == "path":
            return quote(self.ids["path"], safe="/")
        return self.ids.get(name, self.ids["novel_id"])


@dataclass
class Attack:
    """One hostile request, and the statuses that refuse it properly (None: any 4xx)."""

    label: str
    method: str
    path: str  # as sent
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None
    expect: frozenset[int] | None = None


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    endpoint: Endpoint | None  # None for a route outside the endpoint table

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.pattern)

    @property
    def takes_json(self) -> bool:
        """Reads a JSON body (and, not knowing better, so does any writing raw route)."""
        if self.endpoint is None:
            return self.method in ("POST", "PUT", "PATCH")
        return self.endpoint.body is not None


def routes_of(client: TestClient) -> list[Route]:
    table = {(e.method, openapi_path(e.path)): e for e in all_endpoints()}
    found = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()
        if r.method not in ("HEAD", "OPTIONS")
    }
    return [Route(m, p, table.get((m, p))) for m, p in sorted(found)]


def fill(route: Route, target: Target, **given: str) -> str:
    """The route's path with Ann's rows, but the parameters `given` (sent as written)."""
    return _PARAM.sub(
        lambda m: given.get(m.group(1), target.value(route.pattern, m.group(1))), route.pattern
    )


def valid_request(route: Route) -> tuple[dict[str, str], bytes | None]:
    """Headers and a body the route accepts, so that only what an attack changes is wrong."""
    if route.endpoint is None or route.endpoint.body is None:
        return {}, None
    return JSON, json.dumps(valid_body(route.endpoint.body)).encode()


async def send(client: TestClient, attack: Attack, token: str | None) -> tuple[int, str, str]:
    """Status, content type and text of one request sent exactly as written."""
    headers = dict(attack.headers)
    if token is not None and "Authorization" not in headers:
        headers["Authorization"] = f"Bearer {token}"
    url = URL(str(client.make_url("/")).rstrip("/") + attack.path, encoded=True)
    response = await client.session.request(
        attack.method, url, data=attack.data, headers=headers, timeout=TIMEOUT
    )
    return response.status, response.content_type, await response.text(errors="replace")


def problem(attack: Attack, status: int, content_type: str, text: str) -> str | None:
    """Why this answer is not a proper refusal, or None."""
    where = f"{attack.label}: {attack.method} {attack.path[:160]} -> {status}"
    if status not in (attack.expect or range(400, 500)):
        wanted = sorted(attack.expect) if attack.expect else "a 4xx"
        return f"{where}, not {wanted}: {text[:200]}"
    try:
        error = json.loads(text)["error"] if content_type == "application/json" else None
    except (ValueError, KeyError, TypeError):
        error = None
    if (
        not isinstance(error, dict)
        or set(error) != {"code", "message", "details"}
        or not isinstance(error["code"], str)
        or not isinstance(error["message"], str)
        or not error["message"]
        or not isinstance(error["details"], dict)
    ):
        return f"{where}: not the JSON error shape ({content_type}): {text[:200]}"
    return None


def data_fingerprint(settings: Settings) -> dict[str, Any]:
    """The bytes (hashed) of the SQLite file, its write-ahead log and every file of every
    repository, and every row of every table (to say what changed, if anything did)."""
    database = settings.database_path
    files = [database, database.with_name(database.name + "-wal")]
    files += sorted(p for p in settings.repositories_dir.rglob("*") if p.is_file())
    return {
        "files": {str(p.relative_to(settings.data_dir)): _sha256(p) for p in files},
        "tables": table_rows(database),
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def refuse_all(
    client: TestClient, settings: Settings, attacks: list[Attack], token: str | None
) -> None:
    """Send every attack: each must be a JSON 4xx, and all together must write nothing."""
    assert attacks
    before = data_fingerprint(settings)
    problems = []
    for attack in attacks:
        found = problem(attack, *await send(client, attack, token))
        if found:
            problems.append(found)
    assert problems == [], "\n".join(problems)
    assert data_fingerprint(settings) == before


# -- Ann's world ------------------------------------------------------------------------------


@pytest.fixture
async def target(client: TestClient) -> Target:
    """Ann owns an organization with a team, a novel with a chapter, a character, a
    location and an open conflict, a read-only token and an AI connection; Bob exists."""
    ann = await sign_up(client, "Ann Writer")
    bob = await sign_up(client, "Bob Other")

    async def ok(method: str, path: str, body: Any = None) -> Any:
        status, answer = await ann.call(method, path, body)
        assert 200 <= status < 300, (method, path, status, answer)
        return answer

    await ok("POST", "/api/v1/orgs", {"name": "Ann's Guild", "slug": "anns-guild"})
    team = await ok("POST", "/api/v1/orgs/anns-guild/teams", {"name": "Editors"})
    team_members = f"/api/v1/orgs/anns-guild/teams/{team['id']}/members"
    await ok("POST", team_members, {"user_id": ann.user["id"]})
    novel = await ok("POST", "/api/v1/novels", {"title": "Private", "org": "anns-guild"})
    url = f"/api/v1/novels/{novel['id']}"
    items = {}
    for folder, body in (
        ("chapters", {"title": "One", "content": "Ann's words.\n"}),
        ("characters", {"name": "Mara"}),
        ("locations", {"name": "Harbour"}),
    ):
        answer = await ok("POST", f"{url}/{folder}", body)
        items[folder] = next(v for k, v in answer.items() if k != "head")["id"]
    chapter = await ok("GET", f"{url}/chapters/{items['chapters']}")
    base = (await ok("GET", f"{url}/sync"))["head"]
    for device in ("laptop", "phone"):
        change = {"path": chapter["path"], "content": f"From the {device}.\n"}
        body = {"device_id": device, "op_id": "op", "base": base, "changes": [change]}
        answer = await ok("POST", f"{url}/sync", body)
    token = await ok("POST", "/api/v1/tokens", {"name": "backup", "scopes": ["read"]})
    config = {"base_url": "http://127.0.0.1:9", "timeout_seconds": 1}
    connection = {"provider": "openai", "api_key": "sk-unused", "provider_config": config}
    provider = await ok("POST", "/api/v1/ai/providers", connection)
    sessions = (await ok("GET", "/api/v1/auth/sessions"))["items"]
    # A token's first use stamps last_used_at; later uses within minutes write nothing.
    for credential in (token["token"], bob.token):
        status, _ = await ann.call("GET", "/api/v1/me", headers=_bearer(credential))
        assert status == 200
    ids = {
        "novel_id": novel["id"], "slug": "anns-guild", "team_id": team["id"],
        "user_id": ann.user["id"], "session_id": sessions[0]["id"], "token_id": token["id"],
        "conflict_id": answer["conflicts"][0]["id"], "id": provider["id"], "path": chapter["path"],
    }  # fmt: skip
    head = (await ok("GET", f"{url}/sync"))["head"]
    return Target(ann, bob, ids, items, token["token"], head)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_attacks_reach_every_route_of_the_router(client: TestClient, target: Target):
    routes = routes_of(client)
    served = {(r.method, r.resource.canonical) for r in client.app.router.routes()}
    assert {(r.method, r.pattern) for r in routes} == {
        (m, p) for m, p in served if m not in ("HEAD", "OPTIONS")
    }
    in_table = {(r.endpoint.method, r.endpoint.path) for r in routes if r.endpoint is not None}
    assert in_table == {(e.method, e.path) for e in all_endpoints()}
    for route in routes:
        assert token_attacks(route, target), route
        assert not route.params or segment_attacks(route, target), route
        assert not route.takes_json or body_attacks(route, target), route


# -- path parameters --------------------------------------------------------------------------


def segment_attacks(route: Route, target: Target) -> list[Attack]:
    """Garbage in each path parameter in turn, the others naming Ann's real rows."""
    attacks = []
    for name in route.params:
        real = target.value(route.pattern, name)
        values = [*SEGMENT_GARBAGE, real + "%00", real + "%27--", real + "%2F..", "%20" + real]
        values.append(real.upper())
        if name == "path":
            values += [quote(p, safe="/") for p in FILE_PATH_GARBAGE]
            values += [quote(p, safe="") for p in FILE_PATH_GARBAGE]
        for value in values:
            path = fill(route, target, **{name: value})
            attacks.append(
                Attack(f"{name}={value[:30]}", route.method, path, *valid_request(route))
            )
    return attacks


async def test_garbage_and_traversal_in_every_path_parameter_is_refused(
    client: TestClient, settings: Settings, target: Target
):
    attacks = [a for route in routes_of(client) for a in segment_attacks(route, target)]
    await refuse_all(client, settings, attacks, target.ann.token)


# -- bodies -----------------------------------------------------------------------------------


def body_attacks(route: Route, target: Target) -> list[Attack]:
    """Oversized, mistyped, undecodable and malformed bodies."""
    path = fill(route, target)
    oversized = b'{"title": "' + b"x" * BODY_LIMIT + b'"}'
    attacks = [Attack("oversized", route.method, path, JSON, oversized, frozenset({413}))]
    for content_type in (
        "text/plain", "application/x-www-form-urlencoded", "application/xml", "*/*",
        "multipart/form-data; boundary=x", "application/json; charset=latin-1",
        "application/json; charset=utf-16", "application/jsonp",
    ):  # fmt: skip
        headers = {"Content-Type": content_type}
        attacks.append(Attack(content_type, route.method, path, headers, b'{"title": "x"}',
                              frozenset({415})))  # fmt: skip
    broken = [
        (b'{"title": "\xff\xfe"}', 400), (b'{"title": "\xc0\xaf"}', 400),
        (b'{"title": "\xed\xa0\x80"}', 400), (b"\xef\xbb\xbf{}", 400),
        (b'{"title": "a\x00b"}', 400), (b'{"title": "a\\u0000b"}', 422),
        (b'{"a\\u0000": 1}', 422), (b'{"title": "\\ud800"}', None), (b'{"title": ', 400),
        (b"", 400), (b"null", 422), (b"[]", 422), (b'"text"', 422), (b"1", 422), (b"true", 422),
        (b"{}{}", 400), (b'{"title": "x"} trailing', 400), (b"{'title': 'x'}", 400),
        (b"NaN", 422), (b'{"__proto__": {"admin": true}}', 422),
    ]  # fmt: skip
    for body, status in broken:
        expect = frozenset({status} if status else {400, 422})
        attacks.append(Attack(f"body {body[:20]!r}", route.method, path, JSON, body, expect))
    return attacks


async def test_every_body_route_refuses_oversized_mistyped_and_broken_bodies(
    client: TestClient, settings: Settings, target: Target
):
    attacks = [a for route in routes_of(client) if route.takes_json
               for a in body_attacks(route, target)]  # fmt: skip
    await refuse_all(client, settings, attacks, target.ann.token)


def nested_attacks(route: Route, target: Target) -> list[Attack]:
    """JSON nested deeper than any body needs, well under the size limit."""
    bodies = {f"{n} arrays deep": b"[" * n + b"]" * n
              for n in (100, 500, 900, 990, 1_100, 5_000, 100_000)}  # fmt: skip
    bodies |= {f"{n} objects deep": b'{"a":' * n + b"1" + b"}" * n
               for n in (500, 990, 5_000, 40_000)}  # fmt: skip
    bodies["900 deep in a field"] = b'{"title": ' + b"[" * 900 + b"]" * 900 + b"}"
    path = fill(route, target)
    return [Attack(label, route.method, path, JSON, body, frozenset({400, 422}))
            for label, body in bodies.items()]  # fmt: skip


async def test_deeply_nested_json_is_a_bad_request_on_every_body_route(
    client: TestClient, settings: Settings, target: Target
):
    attacks = [a for route in routes_of(client) if route.takes_json
               for a in nested_attacks(route, target)]  # fmt: skip
    await refuse_all(client, settings, attacks, target.ann.token)


# Values a valid body needs, by field name; everything else is derived from the schema.
FIELD_VALUES: dict[str, Any] = {
    "email": "someone@example.com", "password": "long enough password", "slug": "a-new-slug",
    "provider": "openai", "api_key": "sk-valid-looking", "model": "some-model",
    "messages": [{"role": "user", "content": "Hi"}], "scopes": ["read"], "role": "member",
    "device_id": "laptop", "op_id": "op-9", "path": "chapters/new.md", "order": [],
    "base_url": "http://127.0.0.1:9", "rev": "0" * 40, "base": None,
}  # fmt: skip


def valid_body(model: type[BaseModel]) -> dict[str, Any]:
    """A body `model` accepts: its required fields, with plain values."""
    schema = model.model_json_schema()
    body = _example(schema, schema.get("$defs", {}), None)
    try:
        model.model_validate(body)
    except ValidationError as exc:
        raise AssertionError(f"no valid {model.__name__}; add to FIELD_VALUES: {exc}") from None
    return body


def _example(schema: dict, defs: dict, name: str | None) -> Any:
    if name in FIELD_VALUES:
        return FIELD_VALUES[name]
    if "$ref" in schema:
        return _example(defs[schema["$ref"].split("/")[-1]], defs, name)
    if "anyOf" in schema:
        return _example(next(s for s in schema["anyOf"] if s.get("type") != "null"), defs, name)
    if "enum" in schema or "const" in schema:
        return schema.get("enum", [schema.get("const")])[0]
    kind = schema.get("type")
    if kind == "object":
        required = set(schema.get("required", []))
        properties = schema.get("properties", {}).items()
        return {k: _example(s, defs, k) for k, s in properties if k in required}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return max(schema.get("minimum", 1), 1)
    if kind == "boolean":
        return False
    return "Plain text"


def numeric_fields(schema: dict, defs: dict, at: tuple[str, ...] = ()) -> Iterator[tuple]:
    """(where, "integer" or "number") of every number a body may carry, nested included."""
    if "$ref" in schema:
        yield from numeric_fields(defs[schema["$ref"].split("/")[-1]], defs, at)
        return
    for option in schema.get("anyOf", []):
        yield from numeric_fields(option, defs, at)
    if schema.get("type") in ("integer", "number"):
        yield at, schema["type"]
    for key, sub in schema.get("properties", {}).items():
        yield from numeric_fields(sub, defs, (*at, key))


def number_attacks(route: Route, target: Target) -> list[Attack]:
    """Each number of a valid body in turn replaced by one no field may take."""
    model = route.endpoint.body
    schema = model.model_json_schema()
    attacks = []
    for where, kind in sorted(set(numeric_fields(schema, schema.get("$defs", {})))):
        for raw in BAD_INTEGERS if kind == "integer" else BAD_NUMBERS:
            body = valid_body(model)
            parent = body
            for key in where[:-1]:
                parent = parent.setdefault(key, {})
            parent[where[-1]] = "@NUMBER@"
            data = json.dumps(body).replace('"@NUMBER@"', raw).encode()
            label = f"{'.'.join(where)} = {raw[:30]}"
            path = fill(route, target)
            attacks.append(Attack(label, route.method, path, JSON, data, frozenset({400, 422})))
    return attacks


async def test_numbers_out_of_range_or_of_the_wrong_type_are_refused_in_every_body(
    client: TestClient, settings: Settings, target: Target
):
    attacks = [a for route in routes_of(client) if route.endpoint and route.endpoint.body
               for a in number_attacks(route, target)]  # fmt: skip
    # Novels, chapters, AI connections and completions carry numbers at least.
    assert len({(a.method, a.path) for a in attacks}) >= 7
    await refuse_all(client, settings, attacks, target.ann.token)


# -- file paths inside bodies -------------------------------------------------------------------


async def test_file_paths_inside_bodies_are_refused_when_they_escape_or_are_malformed(
    client: TestClient, settings: Settings, target: Target
):
    novel = f"/api/v1/novels/{target.ids['novel_id']}"
    attacks = []
    for bad in FILE_PATH_GARBAGE:
        for content in ("Words.\n", None):
            changes = [{"path": "chapters/fine.md", "content": "Fine.\n"},
                       {"path": bad, "content": content}]  # fmt: skip
            sync = {"device_id": "laptop", "op_id": "op", "base": target.head, "changes": changes}
            data = json.dumps(sync).encode()
            attacks.append(Attack(f"sync {bad!r}", "POST", novel + "/sync", JSON, data,
                                  frozenset({422})))  # fmt: skip
        data = json.dumps({"path": bad, "rev": target.head}).encode()
        attacks.append(Attack(f"restore {bad!r}", "POST", novel + "/restore", JSON, data,
                              frozenset({422})))  # fmt: skip
    await refuse_all(client, settings, attacks, target.ann.token)


# -- query parameters -------------------------------------------------------------------------


def query_attacks(route: Route, target: Target) -> list[Attack]:
    """Each query parameter in turn: bad limits, forged cursors, SQL, traversal, NUL.
    File-path filters have their own test below."""
    if route.endpoint is None or route.endpoint.query is None:
        return []
    attacks = []
    for name, sub in route.endpoint.query.model_json_schema().get("properties", {}).items():
        kinds = {s.get("type") for s in [sub, *sub.get("anyOf", [])]}
        if "integer" in kinds:
            values = BAD_LIMITS
        elif name == "cursor":
            values = BAD_CURSORS
        elif name == "path":
            continue
        else:
            values = [quote(v, safe="") for v in [*SQL, "../../etc/passwd", "a\x00b", "x" * 3000]]
        for value in values:
            path = f"{fill(route, target)}?{quote(name)}={value}"
            attacks.append(Attack(f"{name}={value[:30]}", route.method, path))
    return attacks


async def test_bad_limits_forged_cursors_and_garbage_queries_are_refused(
    client: TestClient, settings: Settings, target: Target
):
    attacks = [a for route in routes_of(client) for a in query_attacks(route, target)]
    assert {a.label.split("=")[0] for a in attacks} >= {"limit", "cursor", "org", "since", "rev"}
    await refuse_all(client, settings, attacks, target.ann.token)


async def test_file_paths_in_queries_are_refused(
    client: TestClient, settings: Settings, target: Target
):
    attacks = []
    for route in routes_of(client):
        query = route.endpoint.query if route.endpoint is not None else None
        if query is None or "path" not in query.model_json_schema().get("properties", {}):
            continue
        for bad in FILE_PATH_GARBAGE:
            path = f"{fill(route, target)}?path={quote(bad, safe='')}"
            attacks.append(Attack(f"path={bad!r}", route.method, path))
    assert len({a.path.split("?")[0] for a in attacks}) >= 2
    await refuse_all(client, settings, attacks, target.ann.token)


# -- identifiers inside bodies ----------------------------------------------------------------


async def test_sql_and_garbage_where_bodies_name_a_row_are_refused(
    client: TestClient, settings: Settings, target: Target
):
    novel = f"/api/v1/novels/{target.ids['novel_id']}"
    hello = [{"role": "user", "content": "Hi"}]
    sends = [
        ("POST", "/api/v1/novels", {"title": "T", "org": "{}"}),
        ("PUT", "/api/v1/auth/sessions/current", {"organization": "{}"}),
        ("PUT", "/api/v1/auth/sessions/current", {"team_id": "{}"}),
        ("POST", "/api/v1/orgs/anns-guild/members", {"email": "{}", "role": "member"}),
        ("POST", f"/api/v1/orgs/anns-guild/teams/{target.ids['team_id']}/members",
         {"user_id": "{}"}),
        ("POST", novel + "/chapters/reorder", {"order": ["{}"]}),
        ("POST", novel + "/locations", {"name": "Cellar", "parent": "{}"}),
        ("PATCH", f"{novel}/locations/{target.items['locations']}", {"parent": "{}"}),
        ("POST", "/api/v1/ai/complete", {"provider_id": "{}", "model": "m", "messages": hello}),
        ("POST", novel + "/sync", {"device_id": "d", "op_id": "o", "base": "{}", "changes": []}),
        ("POST", novel + "/restore", {"path": target.ids["path"], "rev": "{}"}),
    ]  # fmt: skip
    attacks = []
    for method, path, template in sends:
        for bad in [*SQL, "../../etc/passwd", "x" * 5000, "\uff0e\uff0e\uff0f"]:
            data = json.dumps(template).replace('"{}"', json.dumps(bad)).encode()
            attacks.append(Attack(f"{bad[:20]!r}", method, path, JSON, data))
    await refuse_all(client, settings, attacks, target.ann.token)


async def test_sql_in_a_login_is_only_a_failed_login(
    client: TestClient, settings: Settings, target: Target
):
    """A failed login is counted (the throttle needs that); nothing else is written."""
    email = target.ann.user["email"]
    attacks = [
        Attack(f"login {body}", "POST", "/api/v1/auth/login", JSON, json.dumps(body).encode(),
               frozenset({401, 422, 429}))
        for bad in SQL
        for body in ({"email": bad, "password": "x"}, {"email": email, "password": bad})
    ]  # fmt: skip
    before = data_fingerprint(settings)
    for attack in attacks:
        found = problem(attack, *await send(client, attack, None))
        assert found is None, found
    after = data_fingerprint(settings)
    failures = after["tables"].pop("login_failure")
    del before["tables"]["login_failure"]
    assert after["tables"] == before["tables"]
    repositories = {k: v for k, v in before["files"].items() if k.startswith("novels/")}
    assert {k: v for k, v in after["files"].items() if k.startswith("novels/")} == repositories
    assert {row[0] for row in failures} <= {*SQL, email}
    # The metacharacters went in as text, not as SQL: Ann still logs in.
    status, _ = await target.ann.call(
        "POST", "/api/v1/auth/login", {"email": email, "password": "correct horse"}
    )
    assert status == 200


async def test_sql_in_text_is_stored_as_text(target: Target):
    chapters = f"/api/v1/novels/{target.ids['novel_id']}/chapters"
    title = "Robert'); DROP TABLE chapter;--"
    status, made = await target.ann.call("POST", chapters, {"title": title})
    assert status == 201 and made["chapter"]["title"] == title
    status, listed = await target.ann.call("GET", chapters)
    assert status == 200 and title in {c["title"] for c in listed["items"]}


# -- credentials ------------------------------------------------------------------------------


def token_attacks(route: Route, target: Target) -> list[Attack]:
    """Forged and malformed credentials, on a request that would otherwise succeed."""
    real = target.ann.token
    forged = [
        "Bearer ows_" + "A" * 43, f"Bearer {real[:-2]}xx", f"Bearer {real}x",
        f"Bearer {real.upper()}", "Bearer " + "x" * 5000, "Bearer ' OR '1'='1", "Bearer a%00b",
        "Bearer \t", "Basic Og==", "Basic !!!", "Basic " + "eDp5" * 2000, "Digest abc",
        "Token abc",
    ]  # fmt: skip
    headers, data = valid_request(route)
    path = fill(route, target)
    return [
        Attack("forged credentials", route.method, path, {**headers, "Authorization": value},
               data, frozenset({401}))
        for value in forged
    ]  # fmt: skip


async def test_forged_and_malformed_credentials_are_401_on_every_route(
    client: TestClient, settings: Settings, target: Target
):
    attacks = [a for route in routes_of(client) for a in token_attacks(route, target)]
    await refuse_all(client, settings, attacks, None)


async def dead_credentials(client: TestClient, settings: Settings, target: Target) -> list[str]:
    """Ann's tokens that no longer work: a logged-out session, a revoked token, and a
    session and a token past their expiry."""
    ann = target.ann
    login = {"email": ann.user["email"], "password": "correct horse"}
    sessions = []
    for _ in range(2):
        answer = await (await client.post("/api/v1/auth/login", json=login)).json()
        sessions.append(answer["token"])
    tokens = []
    for _ in range(2):
        _, made = await ann.call("POST", "/api/v1/tokens", {"name": "spare", "scopes": ["read"]})
        tokens.append(made)
    _, listed = await ann.call("GET", "/api/v1/auth/sessions", headers=_bearer(sessions[1]))
    expiring = next(s["id"] for s in listed["items"] if s["current"])
    status, _ = await ann.call("POST", "/api/v1/auth/logout", headers=_bearer(sessions[0]))
    assert status == 204
    status, _ = await ann.call("DELETE", f"/api/v1/tokens/{tokens[0]['id']}")
    assert status == 204
    conn = connect(settings.database_path)
    try:  # the clock moves past their expiry
        past = "2000-01-01T00:00:00.000Z"
        conn.execute("UPDATE session SET expires_at = ? WHERE id = ?", (past, expiring))
        conn.execute(
            "UPDATE personal_access_token SET expires_at = ? WHERE id = ?", (past, tokens[1]["id"])
        )
    finally:
        conn.close()
    return [sessions[0], tokens[0]["token"], sessions[1], tokens[1]["token"]]


async def test_logged_out_revoked_and_expired_tokens_are_401_on_every_route(
    client: TestClient, settings: Settings, target: Target
):
    dead = await dead_credentials(client, settings, target)
    attacks = []
    for route in routes_of(client):
        headers, data = valid_request(route)
        for token in dead:
            basic = base64.b64encode(f"git:{token}".encode()).decode()
            for credentials in (f"Bearer {token}", f"Basic {basic}"):
                attacks.append(Attack("dead credentials", route.method, fill(route, target),
                                      {**headers, "Authorization": credentials}, data,
                                      frozenset({401})))  # fmt: skip
    await refuse_all(client, settings, attacks, None)


async def test_another_writers_token_gets_404_on_every_route_naming_anns_rows(
    client: TestClient, settings: Settings, target: Target
):
    attacks = [
        Attack("Bob's token", route.method, fill(route, target), *valid_request(route),
               frozenset({404}))
        for route in routes_of(client)
        if route.params
    ]  # fmt: skip
    await refuse_all(client, settings, attacks, target.bob.token)


async def test_a_read_only_token_cannot_write_through_any_route(
    client: TestClient, settings: Settings, target: Target
):
    attacks = [
        Attack("read-only token", route.method, fill(route, target), *valid_request(route),
               frozenset({403}))
        for route in routes_of(client)
        if route.endpoint is not None and route.endpoint.is_write
    ]  # fmt: skip
    assert len(attacks) >= 20
    await refuse_all(client, settings, attacks, target.read_token)
