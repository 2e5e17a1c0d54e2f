"""The access log: one line per request in the format it always had, never a token, and off
with OPENWRITE_ACCESS_LOG=false."""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger

from server.cli import AccessLog
from tests.servers import start_server


def test_a_line_reads_as_aiohttps_own_logger_wrote_it(caplog):
    request = make_mocked_request("GET", "/api/v1/novels?limit=20&cursor=abc")
    response = web.Response(text="{}")
    logger = logging.getLogger("aiohttp.access")
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        AccessLogger(logger, '%a "%r" %s %b %Tfs').log(request, response, 0.0123456)
        AccessLog(logger, "").log(request, response, 0.0123456)
    theirs, ours = (record.getMessage() for record in caplog.records)
    assert ours == theirs == '- "GET /api/v1/novels?limit=20&cursor=abc HTTP/1.1" 200 0 0.012346s'


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
