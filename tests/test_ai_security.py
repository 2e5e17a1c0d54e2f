"""Provider keys at rest and in logs, and rotating the server key, against real server processes.

The server runs as `openwrite serve` in a subprocess (DEBUG logging) on a real data
directory; the fake provider on loopback checks that the right key arrives.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storage.secrets import ServerKey
from tests.fake_providers import VALID_KEY, FakeProvider, start_fake_provider
from tests.servers import REPO_ROOT, ServerProcess, start_server

WRONG_KEY = "sk-wrong-5e6f7a8b9c0d1e2f3a4b"
FAMILIES = ("openai", "anthropic", "gemini", "cohere")
DEBUG = {"OPENWRITE_LOG_LEVEL": "DEBUG"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    fake = await start_fake_provider()
    yield fake
    await fake.close()


class Api:
    """One writer talking to a server process over HTTP."""

    def __init__(self, http: aiohttp.ClientSession, server: ServerProcess, token: str = ""):
        self.http, self.server, self.token = http, server, token

    async def call(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(
            method, self.server.url + path, json=json, headers=headers
        ) as response:
            body = await response.text()
            is_json = response.content_type == "application/json" and body
            return response.status, (await response.json()) if is_json else body

    async def sign_up(self) -> None:
        status, answer = await self.call(
            "POST",
            "/api/v1/auth/signup",
            {"name": "Ann Writer", "email": "ann@example.com", "password": "correct horse"},
        )
        assert status == 201, answer
        self.token = answer["token"]

    async def connect(self, fake: FakeProvider, provider: str, key: str = VALID_KEY) -> dict:
        status, answer = await self.call(
            "POST",
            "/api/v1/ai/providers",
            {
                "provider": provider,
                "api_key": key,
                "provider_config": {"base_url": fake.base_url(provider), "timeout_seconds": 5},
            },
        )
        assert status == 201, answer
        return answer

    async def complete(
        self, provider_id: str, *, stream: bool = False, max_tokens: int | None = None
    ) -> tuple[int, Any]:
        body = {
            "provider_id": provider_id,
            "model": "novel-model",
            "messages": [{"role": "user", "content": "Open chapter one by the sea."}],
            "stream": stream,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return await self.call("POST", "/api/v1/ai/complete", body)


def database_bytes(data_dir: Path) -> bytes:
    """The SQLite file and its write-ahead log and shared-memory index, as stored."""
    return b"".join(
        path.read_bytes()
        for name in ("openwrite.db", "openwrite.db-wal", "openwrite.db-shm")
        if (path := data_dir / name).exists()
    )


def rotate_key(data_dir: Path, *args: str, env: dict[str, str] | None = None):
    environment = {k: v for k, v in os.environ.items() if k != "OPENWRITE_SECRET_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "admin", "rotate-key", "--data-dir", str(data_dir),
         *args],
        cwd=REPO_ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def key_file(data_dir: Path) -> str:
    return (data_dir / "secret.key").read_text().strip()


async def test_no_plaintext_key_or_token_reaches_the_database_files_or_the_debug_log(
    tmp_path: Path, fake: FakeProvider
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, env=DEBUG)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            await api.sign_up()
            for provider in FAMILIES:
                created = await api.connect(fake, provider)
                assert (await api.complete(created["id"]))[0] == 200
                assert (await api.complete(created["id"], stream=True))[0] == 200
            wrong = await api.connect(fake, "openrouter", WRONG_KEY)
            status, refused = await api.complete(wrong["id"])  # the fake echoes the key back
            assert status == 502 and WRONG_KEY not in str(refused)
            await api.connect(fake, "groq", WRONG_KEY)
            duplicate = await api.call(
                "POST", "/api/v1/ai/providers", {"provider": "openai", "api_key": VALID_KEY}
            )
            assert duplicate[0] == 409
            patched = await api.call(
                "PATCH", f"/api/v1/ai/providers/{wrong['id']}", {"api_key": VALID_KEY}
            )
            assert patched[0] == 200
        secrets = [VALID_KEY, WRONG_KEY, api.token]
        while_running = database_bytes(data_dir)
    finally:
        server.stop()
    log = server.log()

    assert "POST /api/v1/ai/complete" in log  # DEBUG logging did record the calls
    for secret in secrets:
        assert secret.encode() not in while_running
        assert secret.encode() not in database_bytes(data_dir)
        assert secret not in log
    assert len(fake.requests) == 2 * len(FAMILIES) + 1


async def test_rotating_the_server_key_keeps_every_secret_and_retires_the_old_key(
    tmp_path: Path, fake: FakeProvider
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            await api.sign_up()
            ids = [(await api.connect(fake, provider))["id"] for provider in FAMILIES]
    finally:
        server.stop()
    old_key = key_file(data_dir)

    rotated = rotate_key(data_dir)

    assert rotated.returncode == 0, rotated.stderr
    assert f"{len(FAMILIES)} AI provider connection(s)" in rotated.stdout
    new_key = key_file(data_dir)
    assert new_key != old_key
    assert old_key not in rotated.stdout + rotated.stderr
    assert new_key not in rotated.stdout + rotated.stderr
    assert stat.S_IMODE((data_dir / "secret.key").stat().st_mode) == 0o600
    assert not (data_dir / "secret.key.new").exists()

    server = start_server(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server, api.token)
            for provider_id in ids:
                status, answer = await api.complete(provider_id)
                assert status == 200, answer
            # The key hash was recomputed under the new key: duplicates are still caught.
            duplicate = await api.call(
                "POST", "/api/v1/ai/providers", {"provider": "gemini", "api_key": VALID_KEY}
            )
            assert duplicate[0] == 409
    finally:
        server.stop()
    assert [r.headers.get("x-api-key") or r.headers.get("x-goog-api-key") or
            r.headers["Authorization"].removeprefix("Bearer ") for r in fake.requests] == [
        VALID_KEY
    ] * len(FAMILIES)  # fmt: skip

    with pytest.raises(RuntimeError) as refused:
        start_server(data_dir, env={"OPENWRITE_SECRET_KEY": old_key})
    assert "does not match the one this database was written with" in str(refused.value)


async def test_an_interrupted_rotation_is_finished_by_running_it_again(
    tmp_path: Path, fake: FakeProvider
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            await api.sign_up()
            created = await api.connect(fake, "anthropic")
    finally:
        server.stop()
    # A key beginning with "-" (1 in 64 generated keys) is still the flag's value.
    old_key, new_key = key_file(data_dir), ServerKey(b"\xf8" + os.urandom(31)).to_text()
    assert new_key.startswith("-")
    rotated = rotate_key(data_dir, "--new-key", new_key)
    assert rotated.returncode == 0, rotated.stderr
    assert key_file(data_dir) == new_key
    # The state a crash between the commit and the rename leaves: the database is under
    # the new key, secret.key still holds the old one, the new one is staged beside it.
    (data_dir / "secret.key.new").write_text(new_key + "\n")
    (data_dir / "secret.key.new").chmod(0o600)
    (data_dir / "secret.key").write_text(old_key + "\n")
    with pytest.raises(RuntimeError) as refused:
        start_server(data_dir)
    assert "rotate-key" in str(refused.value)

    finished = rotate_key(data_dir)

    assert finished.returncode == 0, finished.stderr
    assert "finished an interrupted rotation" in finished.stdout
    assert key_file(data_dir) == new_key
    server = start_server(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            status, answer = await Api(http, server, api.token).complete(created["id"])
            assert status == 200, answer
    finally:
        server.stop()


async def test_rotation_with_a_key_that_does_not_open_the_database_changes_nothing(
    tmp_path: Path, fake: FakeProvider
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            await api.sign_up()
            await api.connect(fake, "openai")
    finally:
        server.stop()
    before = (key_file(data_dir), database_bytes(data_dir))
    stranger = ServerKey.generate().to_text()

    refused = rotate_key(data_dir, env={"OPENWRITE_SECRET_KEY": stranger})

    assert refused.returncode == 1
    assert "does not match" in refused.stderr
    assert stranger not in refused.stderr + refused.stdout
    assert (key_file(data_dir), database_bytes(data_dir)) == before
    assert not (data_dir / "secret.key.new").exists()
