"""Fixtures: a real server (in-process through pytest-aiohttp) on real SQLite files and real
Git repositories in a temporary data directory, and writers signed up through the API."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings

_emails = itertools.count(1)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    # A cheaper scrypt cost keeps sign-ups fast; the code path is the production one.
    return Settings(data_dir=data_dir, scrypt_n=2**12, cors_origins=("https://editor.example",))


@pytest.fixture
async def client(aiohttp_client, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@dataclass
class Writer:
    """A signed-up user as the tests see them: their token and personal organization."""

    client: TestClient
    user: dict[str, Any]
    token: str
    org: str  # slug of the personal organization

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(
        self, method: str, path: str, json: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """Status and decoded JSON (or None) of one request as this writer."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        response = await self.client.request(method, path, json=json, headers=headers, **kwargs)
        body = await response.read()
        if response.content_type == "application/json" and body:
            return response.status, await response.json()
        return response.status, body.decode("utf-8", "replace") or None


async def sign_up(client: TestClient, name: str = "Ann Writer", email: str | None = None) -> Writer:
    email = email or f"writer{next(_emails)}@example.com"
    response = await client.post(
        "/api/v1/auth/signup", json={"name": name, "email": email, "password": "correct horse"}
    )
    assert response.status == 201, await response.text()
    answer = await response.json()
    writer = Writer(client, answer["user"], answer["token"], "")
    status, me = await writer.call("GET", "/api/v1/me")
    assert status == 200
    writer.org = me["organizations"][0]["slug"]
    return writer


@pytest.fixture
async def ann(client: TestClient) -> Writer:
    return await sign_up(client, "Ann Writer")


@pytest.fixture
async def bob(client: TestClient) -> Writer:
    return await sign_up(client, "Bob Other")


async def novel_pages(writer: Writer, limit: int) -> list[list[str]]:
    """The ids on every page of the writer's novel listing, `limit` a page, following
    `next_cursor` to the end."""
    pages, cursor = [], None
    while True:
        path = f"/api/v1/novels?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        status, page = await writer.call("GET", path)
        assert status == 200, page
        pages.append([n["id"] for n in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
