"""The contract, fuzzed: schemathesis sends every operation of /api/v1/openapi.json
generated requests, valid and invalid, to a real server process, as a signed-up writer who
owns an organization, a team, a novel with a chapter, a character and a location, and AI
connections (to the fake provider on loopback). Every answer must be documented: no 5xx
but the documented upstream failures, a documented status code and content type, and a
body (each event, for a stream) and headers matching their schema.

Path parameters, query parameters and body fields that name a resource point at real rows
part of the time, so operations are reached beyond their 404. Whatever an operation
destroys (a DELETE, a conflict resolution, a logout) is made fresh for it, so the writer's
session, novel and organization last the whole run. Each operation's explicit example is
made a valid request on real rows, and must succeed.

OPENWRITE_FUZZ_EXAMPLES raises the generated requests per operation for a longer run by
hand; the suite keeps it small, with a fixed seed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.meta import TestPhase
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.app import all_endpoints, server_version
from server.openapi import build_openapi, openapi_path
from tests.fake_providers import VALID_KEY, FakeProvider, start_fake_provider
from tests.servers import ServerProcess, start_server

MAX_EXAMPLES = int(os.environ.get("OPENWRITE_FUZZ_EXAMPLES", "6"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
PASSWORD = "correct horse battery"
# Stands for "the real row this names" until just before the request. URL-safe, because
# path parameters reach the test percent-encoded.
REAL = "real-row"
# Body and query fields that name an existing resource (or revision, or file).
REFERENCES = {
    "org", "organization", "team_id", "user_id", "provider_id", "order", "base", "base_blob",
    "parent", "since", "rev", "from", "to", "path",
}  # fmt: skip
# A valid request here is Git's own protocol, which the document does not describe: the
# example must reach the novel (no 401, no 404), not succeed.
GIT_PROTOCOL = {
    ("POST", "/git/{novel_id}.git/git-upload-pack"),
    ("POST", "/git/{novel_id}.git/git-receive-pack"),
}


@schemathesis.serializer("application/x-git-upload-pack-request")
def _git_request(_context: Any, value: Any) -> bytes:
    """Git's request body is pkt-lines the document describes only as a string: send the
    generated text as it is (the server must refuse what is not Git's protocol)."""
    return value if isinstance(value, bytes) else str(value).encode()


_PARAM = re.compile(r"{([^}]+)}")
# An event stream never ends: read this long, then validate the events that came.
EVENTS_SECONDS = 0.5
# aiohttp's parser refuses a request line over 8190 bytes with a text/plain 400 before
# the application sees it (docs/security.md, "Input limits").
REQUEST_LINE_LIMIT = 8000

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20_261_125,
        "suppress-health-check": ["all"],
        # 502, 503 and 504 are the documented answers of a failing upstream (an AI provider,
        # Git); an operation that does not document one fails status_code_conformance.
        "checks": {
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", 502, 503, 504]}
        },
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
        "phases": {
            # One example per operation, made a valid request on real rows by the test.
            "examples": {"fill-missing": True, "generation": {"allow-x00": False}},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
    }
)


@dataclass
class World:
    """The fuzzing writer and their rows, and fresh rows for what operations destroy."""

    server: ServerProcess
    fake: FakeProvider
    http: requests.Session = field(default_factory=requests.Session)
    token: str = ""
    email: str = "fuzz-writer@example.com"
    user_id: str = ""
    other_email: str = "fuzz-other@example.com"  # a second member of the organization
    other_id: str = ""
    org: str = "fuzz-guild"
    team_id: str = ""
    novel_id: str = ""
    items: dict[str, str] = field(default_factory=dict)  # folder -> id
    chapter_path: str = ""
    provider_id: str = ""  # what completions use; the fuzzer never edits it
    spare_provider_id: str = ""  # what PATCH edits
    numbers: Iterator[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return self.server.url

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        expect: tuple[int, ...] = (200, 201, 204),
    ) -> Any:
        """One set-up request as the writer (or `token`, "" for nobody); its JSON answer."""
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.request(
            method, self.url + path, json=body, headers=headers, timeout=30
        )
        assert response.status_code in expect, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self.numbers)}"

    def set_up(self) -> None:
        answer = self.sign_up("Fuzz Writer", self.email)
        self.token, self.user_id = answer["token"], answer["user"]["id"]
        self.other_id = self.sign_up("Other Writer", self.other_email)["user"]["id"]
        self.call("POST", "/api/v1/orgs", {"name": "Fuzz Guild", "slug": self.org})
        self.ensure_member()
        self.team_id = self.fresh_team()
        team_members = f"/api/v1/orgs/{self.org}/teams/{self.team_id}/members"
        self.call("POST", team_members, {"user_id": self.user_id})
        self.novel_id = self.fresh_novel()
        for folder in ("chapters", "characters", "locations"):
            self.items[folder] = self.fresh_item(folder)
        chapter = f"/api/v1/novels/{self.novel_id}/chapters/{self.items['chapters']}"
        self.chapter_path = self.call("GET", chapter)["path"]
        self.provider_id = self.fresh_provider(is_default=True)
        self.spare_provider_id = self.fresh_provider()

    def sign_up(self, name: str, email: str) -> dict[str, Any]:
        body = {"name": name, "email": email, "password": PASSWORD}
        return self.call("POST", "/api/v1/auth/signup", body, token="")

    # -- fresh rows -----------------------------------------------------------------------

    def fresh_novel(self) -> str:
        return self.call("POST", "/api/v1/novels", {"title": "Fuzzed", "org": self.org})["id"]

    def fresh_item(self, folder: str) -> str:
        label = "title" if folder == "chapters" else "name"
        body = {label: self.unique("Item"), "content": "Some words.\n"}
        answer = self.call("POST", f"/api/v1/novels/{self.novel_id}/{folder}", body)
        return next(v for k, v in answer.items() if k != "head")["id"]

    def fresh_team(self) -> str:
        body = {"name": self.unique("Team")}
        return self.call("POST", f"/api/v1/orgs/{self.org}/teams", body)["id"]

    def fresh_token(self) -> str:
        return self.call("POST", "/api/v1/tokens", {"name": "spare", "scopes": ["read"]})["id"]

    def fresh_session(self) -> tuple[str, str]:
        """A new session of the writer: its token and its id."""
        body = {"email": self.email, "password": PASSWORD}
        token = self.call("POST", "/api/v1/auth/login", body, token="")["token"]
        sessions = self.call("GET", "/api/v1/auth/sessions", token=token)["items"]
        return token, next(s["id"] for s in sessions if s["current"])

    def fresh_provider(self, *, is_default: bool = False) -> str:
        """A connection to the fake; only the first has the key the fake accepts."""
        body = {
            "provider": "openai",
            "api_key": VALID_KEY if not self.provider_id else self.unique("sk-spare"),
            "is_default": is_default,
            "provider_config": {"base_url": self.fake.base_url("openai"), "timeout_seconds": 5},
        }
        return self.call("POST", "/api/v1/ai/providers", body)["id"]

    def fresh_conflict(self) -> str:
        """Two devices edit one new chapter from the same base: one open conflict."""
        url = f"/api/v1/novels/{self.novel_id}/sync"
        path = f"chapters/{self.unique('conflict')}.md"

        def sync(device: str, base: str, text: str) -> dict[str, Any]:
            changes = [{"path": path, "content": text}]
            body = {"device_id": device, "op_id": self.unique("op"), "base": base}
            return self.call("POST", url, {**body, "changes": changes})

        base = sync("setup", self.head(), "Base line.\n")["head"]
        sync("laptop", base, "Line from the laptop.\n")
        return sync("phone", base, "Line from the phone.\n")["conflicts"][0]["id"]

    def ensure_member(self) -> None:
        body = {"email": self.other_email, "role": "member"}
        self.call("POST", f"/api/v1/orgs/{self.org}/members", body, expect=(201, 409))

    def ensure_in_team(self) -> None:
        self.ensure_member()
        url = f"/api/v1/orgs/{self.org}/teams/{self.team_id}/members"
        self.call("POST", url, {"user_id": self.other_id}, expect=(201, 409))

    def head(self) -> str:
        return self.call("GET", f"/api/v1/novels/{self.novel_id}")["head"]

    # -- pointing a case at real rows -----------------------------------------------------

    def path_value(self, path: str, name: str, fresh: bool) -> str:
        """The real row path parameter `name` names; a new one if the operation destroys it."""
        folder = next((f for f in self.items if f"/{f}/" in path), None)
        if name == "novel_id":
            return self.fresh_novel() if fresh else self.novel_id
        if name == "item_id" and folder is not None:
            return self.fresh_item(folder) if fresh else self.items[folder]
        if name == "path":
            return self.chapter_path
        if name == "slug":
            return self.org
        if name == "team_id":
            return self.fresh_team() if fresh else self.team_id
        if name == "user_id":
            if "/teams/" in path:
                self.ensure_in_team()
            else:
                self.ensure_member()
            return self.other_id
        if name == "session_id":
            return self.fresh_session()[1]
        if name == "token_id":
            return self.fresh_token()
        if name == "id":
            return self.fresh_provider() if fresh else self.spare_provider_id
        if name == "conflict_id":
            return self.fresh_conflict()
        raise AssertionError(f"no real row for path parameter {name!r} of {path}; add one")

    def reference(self, target: str, name: str) -> Any:
        """The real value of a body or query field that names something; `target` is the
        request's path (an item's, for `base_blob`)."""
        if name in ("org", "organization"):
            return self.org
        if name == "team_id":
            return self.team_id
        if name == "user_id":
            self.ensure_member()
            return self.other_id
        if name == "provider_id":
            return self.provider_id
        if name in ("base", "since", "rev", "from", "to"):
            return self.head()
        if name == "path":
            return self.chapter_path
        if name == "order":
            chapters = self.call("GET", f"/api/v1/novels/{self.novel_id}/chapters")["items"]
            return [c["id"] for c in reversed(chapters)]
        if name == "base_blob":
            return self.call("GET", target, expect=(200, 404)).get("blob", "0" * 40)
        if name == "parent":
            return self.items["locations"]
        raise AssertionError(f"no real row for field {name!r}; add one")

    def resolve(self, case: schemathesis.Case) -> None:
        """Replace every REAL marker of `case` with the row it stands for."""
        path = case.operation.path
        params = dict(case.path_parameters or {})
        # What a DELETE (or a resolution) destroys is what the path's last parameter names;
        # it is made fresh when the parameters before it name real rows too.
        names = _PARAM.findall(path)
        destroys = case.method.upper() == "DELETE" or path.endswith("/resolve")
        all_real = all(params.get(n) == REAL for n in names)
        for name, value in params.items():
            if value == REAL:
                fresh = destroys and all_real and name == names[-1]
                case.path_parameters[name] = self.path_value(path, name, fresh)
        for name, value in list((case.query or {}).items()):
            if value == REAL:
                case.query[name] = self.reference(case.formatted_path, name)
        if isinstance(case.body, dict):
            for name, value in list(case.body.items()):
                if value == REAL:
                    case.body[name] = self.reference(case.formatted_path, name)

    def make_valid(self, case: schemathesis.Case) -> None:
        """Turn a generated example into a request on real rows the server must accept."""
        path = case.operation.path
        for name in case.path_parameters or {}:
            case.path_parameters[name] = REAL
        if path.endswith("/info/refs"):
            case.query = {**(case.query or {}), "service": "git-upload-pack"}
        for name in list(case.query or {}):
            if name in REFERENCES:
                case.query[name] = REAL
            elif name == "cursor":
                del case.query[name]
        if isinstance(case.body, dict):
            self._make_body_valid(path, case.body)

    def _make_body_valid(self, path: str, body: dict[str, Any]) -> None:
        for name in list(body):
            if name in REFERENCES:
                body[name] = REAL
        texts = {
            "title": "A title", "name": "A name", "key_label": "A label",
            "content": "Plain words.\n", "message": "A message", "summary": "A summary",
        }  # fmt: skip
        body.update({k: v for k, v in texts.items() if k in body})
        # Left out: a token's expiry, a connection's limits, an edit's base blob, a parent.
        for name in ("expires_at", "usage_limit", "supported_models", "base_blob", "parent"):
            body.pop(name, None)
        if path == "/api/v1/auth/signup":
            body["email"] = f"{self.unique('signup')}@example.com"
        elif path == "/api/v1/auth/login":
            body.update(email=self.email, password=PASSWORD)
        elif path.endswith("/members") and "email" in body:
            member = f"/api/v1/orgs/{self.org}/members/{self.other_id}"
            self.call("DELETE", member, expect=(204, 404))
            body["email"] = self.other_email
        elif path == "/api/v1/orgs":
            body["slug"] = self.unique("fuzz-org")
        if "changes" in body:
            new = {"path": f"chapters/{self.unique('new')}.md", "content": "Words.\n"}
            body.update(device_id="example", op_id=self.unique("op"), base=REAL, changes=[new])
        if "messages" in body:
            hello = [{"role": "user", "content": "Hello"}]
            body.update(model="gpt-test", messages=hello, provider_id=REAL)
            body.pop("max_tokens", None)
        if "api_key" in body:
            body["api_key"] = self.unique("sk-example")
        if "provider" in body:
            body["provider"] = "openai"

    def keep_providers_local(self, body: Any) -> None:
        """AI connections always point at the fake provider, never at the internet."""
        if not isinstance(body, dict):
            return
        config = body.get("provider_config")
        if not isinstance(config, dict) and "provider" not in body:
            return
        config = config if isinstance(config, dict) else {}
        provider = body.get("provider")
        family = provider if provider in ("anthropic", "gemini", "cohere") else "openai"
        timeout = config.get("timeout_seconds")
        short = type(timeout) in (int, float) and timeout <= 5
        body["provider_config"] = {
            **config,
            "base_url": self.fake.base_url(family),
            "timeout_seconds": timeout if short else 5,
        }


def _real_part_of_the_time(value: Any, names: set[str] | None) -> st.SearchStrategy:
    """`value` with each entry named in `names` (every entry: None) kept or made REAL."""
    if not isinstance(value, dict):
        return st.just(value)
    keys = [k for k in value if names is None or k in names]
    choices = st.fixed_dictionaries({k: st.sampled_from([value[k], REAL]) for k in keys})
    return choices.map(lambda chosen: {**value, **chosen})


class FakeProviderThread:
    """The fake AI provider served from its own event loop, for this synchronous suite."""

    def __enter__(self) -> FakeProvider:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = asyncio.run_coroutine_threadsafe(start_fake_provider(), self.loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    with FakeProviderThread() as fake:
        server = start_server(data_dir)
        try:
            world = World(server=server, fake=fake)
            world.set_up()
            yield world
        finally:
            server.stop()
    # Each refusal was an answer: nothing failed inside the server instead.
    assert unhandled_errors(server.log()) == []


def unhandled_errors(log: str) -> list[str]:
    """Each "unhandled error" the server logged, with the last line of its traceback."""
    found = []
    for entry in re.split(r"\n(?=\d{4}-\d\d-\d\d )", log):
        if "unhandled error" in entry:
            found.append(entry.splitlines()[0] + " ... " + entry.strip().splitlines()[-1])
    return found


# The document the server serves at /api/v1/openapi.json (the last test proves it), built
# here so that every operation is a test of its own.
DOCUMENT = build_openapi(all_endpoints(), version=server_version())
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@schema.hook("filter_case")
def fits_in_a_request_line(context: Any, case: schemathesis.Case) -> bool:
    query = urlencode(case.query or {}, doseq=True)
    return len(quote(case.formatted_path)) + len(query) < REQUEST_LINE_LIMIT


@schema.hook("before_generate_path_parameters")
def path_parameters_name_real_rows(context: Any, strategy: st.SearchStrategy):
    return strategy.flatmap(lambda params: _real_part_of_the_time(params, None))


@schema.hook("before_generate_query")
def queries_name_real_rows(context: Any, strategy: st.SearchStrategy):
    return strategy.flatmap(lambda query: _real_part_of_the_time(query, REFERENCES))


@schema.hook("before_generate_body")
def bodies_name_real_rows(context: Any, strategy: st.SearchStrategy):
    return strategy.flatmap(lambda body: _real_part_of_the_time(body, REFERENCES))


@schema.parametrize()
def test_every_operation_answers_as_its_contract_says(case: schemathesis.Case, world: World):
    example = case.meta is not None and case.meta.phase.name == TestPhase.EXAMPLES
    if example:
        world.make_valid(case)
    world.resolve(case)
    world.keep_providers_local(case.body)
    token = world.token
    if case.operation.path == "/api/v1/auth/logout":
        token = world.fresh_session()[0]  # a logout ends a session of its own
    streams = case.operation.path == "/api/v1/events"
    response = case.call_and_validate(
        base_url=world.url,
        headers={"Authorization": f"Bearer {token}"},
        checks=CHECKS,
        timeout=EVENTS_SECONDS if streams else 30,
    )
    if example:
        what = (case.method, case.formatted_path, case.body, response.status_code, response.text)
        if (case.method.upper(), case.operation.path) in GIT_PROTOCOL:
            assert response.status_code not in (401, 404), what
        else:
            assert 200 <= response.status_code < 300, what


def test_the_fuzzed_document_is_the_one_the_live_server_serves(world: World):
    served = world.http.get(world.url + "/api/v1/openapi.json", timeout=30).json()
    assert served == json.loads(json.dumps(DOCUMENT))
    operations = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    assert operations == {(e.method, openapi_path(e.path)) for e in all_endpoints()}
