"""A completion reserves tokens before the provider is called. A server killed during
the call never settles them: the reservation lapses and the writer's limit comes back,
instead of being held forever."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import apsw

from storage.ids import parse_time
from tests.fake_providers import start_fake_provider
from tests.servers import start_server
from tests.test_ai_security import Api

HOLD = {"OPENWRITE_AI_RESERVATION_SECONDS": "3"}


def reservations(data_dir: Path) -> list[tuple[str, int, str]]:
    conn = apsw.Connection(str(data_dir / "openwrite.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return list(
            conn.execute("SELECT provider_id, tokens, expires_at FROM ai_usage_reservation")
        )
    finally:
        conn.close()


async def provider(api: Api, provider_id: str) -> dict:
    status, answer = await api.call("GET", "/api/v1/ai/providers")
    assert status == 200, answer
    return next(item for item in answer["items"] if item["id"] == provider_id)


async def test_a_reservation_left_by_a_killed_server_lapses_and_frees_the_limit(tmp_path: Path):
    fake = await start_fake_provider("slow")
    fake.delay = 60
    data_dir = tmp_path / "data"
    server = start_server(data_dir, env=HOLD)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            await api.sign_up()
            created = await api.connect(fake, "openai")
            status, _ = await api.call(
                "PATCH", f"/api/v1/ai/providers/{created['id']}", {"usage_limit": 800}
            )
            assert status == 200
            in_flight = asyncio.create_task(api.complete(created["id"], max_tokens=500))
            while (await provider(api, created["id"]))["reserved_usage"] == 0:
                await asyncio.sleep(0.05)
            server.kill()
            with contextlib.suppress(aiohttp.ClientError):
                await in_flight

        [(provider_id, tokens, expires_at)] = reservations(data_dir)
        assert provider_id == created["id"] and tokens > 500

        fake.mode = "ok"
        server = start_server(data_dir, env=HOLD)
        async with aiohttp.ClientSession() as http:
            api = Api(http, server, api.token)
            held = await provider(api, created["id"])
            assert held["reserved_usage"] == tokens and held["current_usage"] == 0
            # Wait out the reservation the killed server left (a lapse, not a time limit).
            remaining = (parse_time(expires_at) - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(0.0, remaining) + 0.2)

            status, answer = await api.complete(created["id"], max_tokens=500)
            assert status == 200, answer
            after = await provider(api, created["id"])
            assert after["reserved_usage"] == 0
            assert after["current_usage"] == answer["usage"]["total_tokens"] > 0
        assert reservations(data_dir) == []
    finally:
        server.stop()
        await fake.close()


async def test_settled_completions_leave_no_reservation_behind(tmp_path: Path):
    fake = await start_fake_provider("ok")
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            await api.sign_up()
            created = await api.connect(fake, "anthropic")
            calls = [api.complete(created["id"], max_tokens=500) for _ in range(5)]
            answers = await asyncio.gather(*calls)
            assert [status for status, _ in answers] == [200] * 5
            state = await provider(api, created["id"])
            assert state["reserved_usage"] == 0
            assert state["current_usage"] == sum(a["usage"]["total_tokens"] for _, a in answers)
        assert reservations(data_dir) == []
    finally:
        server.stop()
        await fake.close()
