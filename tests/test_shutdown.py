"""A server process told to stop (SIGINT) while clients hold event streams and one is
cut off mid-upload: it closes the streams and exits on its own, and logs no error."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import aiohttp

from server.events import EventHub
from storage.db import open_database
from tests.servers import start_server


async def _sign_up(url: str) -> dict[str, str]:
    account = {"name": "Eve Writer", "email": "eve@example.com", "password": "correct horse"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/api/v1/auth/signup", json=account) as response,
    ):
        assert response.status == 201
        return {"Authorization": f"Bearer {(await response.json())['token']}"}


def _upload_cut_off(port: int, token: str) -> None:
    """A POST whose body stops half way, then the connection is dropped."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /api/v1/novels HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\nAuthorization: " + token.encode() + b"\r\n\r\n"
            b'{"title": "half'
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def test_open_event_streams_end_when_the_server_stops(tmp_path: Path):
    server = start_server(tmp_path / "data")
    try:
        headers = asyncio.run(_sign_up(server.url))
        _upload_cut_off(server.port, headers["Authorization"])

        async def listen_then_stop() -> list[bytes]:
            async with aiohttp.ClientSession() as session:
                streams = [
                    await session.get(server.url + "/api/v1/events", headers=headers)
                    for _ in range(3)
                ]
                for stream in streams:
                    assert stream.status == 200
                    assert await stream.content.readline() == b": connected\n"
                server.process.send_signal(signal.SIGINT)
                # Each stream is ended by the server (EOF), long before a keep-alive is due.
                return [await asyncio.wait_for(s.content.read(), 30) for s in streams]

        try:
            ends = asyncio.run(listen_then_stop())
        except TimeoutError:
            raise AssertionError(server.log()) from None
        assert all(rest in (b"", b"\n") for rest in ends)
        assert server.process.wait(30) == 0, server.log()
    finally:
        server.kill()
    log = server.log()
    assert "Error handling request" not in log and "unhandled" not in log.lower(), log
    assert "ConnectionResetError" not in log, log


async def test_the_event_hub_stops_even_when_a_poke_meets_the_cancellation(tmp_path: Path):
    """A head moved just before shutdown: the poke wakes the hub's wait in the very turn
    its task is cancelled. Python 3.11's `asyncio.wait_for` then returns the wait's
    result and drops the cancellation, and a hub that only stopped on cancellation went
    on forever, and so did the server's shutdown, which waits for it."""
    db = open_database(tmp_path / "openwrite.db", readers=1)
    try:
        for turns in range(4):  # where exactly the cancellation lands
            hub = EventHub(db, interval=60)
            await hub.start()
            await asyncio.sleep(0.01)  # the hub waits for a poke
            hub.poke()
            for _ in range(turns):
                await asyncio.sleep(0)
            stopping = asyncio.ensure_future(hub.stop())
            # A guard, not a measurement: a hub that does not stop fails here, not hangs.
            done, _ = await asyncio.wait({stopping}, timeout=5)
            if not done:
                stopping.cancel()  # reaches the hub's task too, this time
                await asyncio.wait({stopping})
            assert done, f"the hub did not stop (cancelled {turns} turns after the poke)"
    finally:
        db.close()
