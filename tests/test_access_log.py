"""The access log: one line per request in the format it always had, never a token, off
with OPENWRITE_ACCESS_LOG=false, and every line written by the time the server stops."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger

from server import access_log
from server.access_log import AccessLog
from tests.servers import start_server


def test_a_line_reads_as_aiohttps_own_logger_wrote_it_through_logging(caplog, capsys):
    request = make_mocked_request("GET", "/api/v1/novels?limit=20&cursor=abc")
    response = web.Response(text="{}")
    logger = logging.getLogger("aiohttp.access")
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        AccessLogger(logger, '%a "%r" %s %b %Tfs').log(request, response, 0.0123456)
    theirs = formatter.format(caplog.records[0])
    capsys.readouterr()
    # The same moment for both, so the time stamps can be compared too.
    moment = caplog.records[0].created
    access_log._clock = lambda: moment
    try:
        AccessLog(logger, "").log(request, response, 0.0123456)  # no loop: written at once
    finally:
        access_log._clock = access_log.time.time
    ours = capsys.readouterr().err
    assert ours == theirs + "\n"
    assert ours.endswith(' aiohttp.access - "GET /api/v1/novels?limit=20&cursor=abc HTTP/1.1"'
                         " 200 0 0.012346s\n")  # fmt: skip


async def test_lines_go_out_together_within_a_quarter_second(capsys):
    request = make_mocked_request("GET", "/healthz")
    logger = AccessLog(logging.getLogger("aiohttp.access"), "")
    capsys.readouterr()
    for _ in range(3):
        logger.log(request, web.Response(text="{}"), 0.001)
    assert capsys.readouterr().err == ""  # held back, to be written in one go
    await asyncio.sleep(access_log.FLUSH_SECONDS + 0.2)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all('"GET /healthz HTTP/1.1" 200 0 0.001000s' in x for x in lines)


def request_lines(data_dir: Path, env: dict[str, str]) -> list[str]:
    """The log lines of a real server that answered a sign-up and a listing with its token."""
    server = start_server(data_dir, env=env)
    try:
        account = {"name": "Ann", "email": "ann@example.com", "password": "correct horse"}
        signup = urllib.request.Request(
            server.url + "/api/v1/auth/signup",
            data=json.dumps(account).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(signup) as answer:
            token = json.loads(answer.read())["token"]
        listing = urllib.request.Request(
            server.url + "/api/v1/novels?limit=5", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(listing) as answer:
            assert answer.status == 200
    finally:
        server.stop()
    log = server.log()
    assert token not in log
    return [line for line in log.splitlines() if "aiohttp.access" in line]


def test_the_server_logs_each_request_unless_told_not_to(tmp_path: Path):
    lines = request_lines(tmp_path / "on", {})
    assert any('"GET /api/v1/novels?limit=5 HTTP/1.1" 200 ' in line for line in lines)
    assert any('"POST /api/v1/auth/signup HTTP/1.1" 201 ' in line for line in lines)
    assert request_lines(tmp_path / "off", {"OPENWRITE_ACCESS_LOG": "false"}) == []
