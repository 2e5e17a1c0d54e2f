"""The access log: one line per request, written to standard error in batches.

A line reads exactly as `logging` wrote it before (`serve` formats every record as
`%(asctime)s %(levelname)s %(name)s %(message)s`, and aiohttp's message is
`%a "%r" %s %b %Tfs`), but it is made here without a log record: going through
`logging` cost ~8 µs of CPU a request in-process and ~30 µs under load, a tenth of an
authenticated read, with a `write` system call each. Made here it costs ~2 µs, and the
lines of up to `FLUSH_SECONDS` go out in one write (nginx's `access_log ... buffer= flush=`).

What that costs: a process killed with SIGKILL loses at most the last `FLUSH_SECONDS` of
access lines (nothing else: they record requests, they do not make them durable), and an
access line may follow an error line logged in the same fraction of a second.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from storage.ids import SecondText

FLUSH_SECONDS = 0.25
FLUSH_BYTES = 64 * 1024
_LOCAL_SECOND = SecondText("%Y-%m-%d %H:%M:%S", time.localtime)


class _Lines:
    """The lines not written yet, shared by the loggers of every connection."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.size = 0
        self.timer: asyncio.TimerHandle | None = None

    @staticmethod
    def stamp(moment: float) -> str:
        """`logging`'s default `asctime`: local time, with milliseconds as it counts them."""
        second = int(moment)
        return f"{_LOCAL_SECOND(second)},{int((moment - second) * 1000):03d}"

    def add(self, line: str) -> None:
        self.pending.append(line)
        self.size += len(line)
        if self.size >= FLUSH_BYTES:
            self.flush()
        elif self.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # outside a server (a test calling `log` itself)
                self.flush()
                return
            self.timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending.clear()
        self.size = 0
        stream = sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # standard error closed or gone: lines are dropped
            pass


LINES = _Lines()
atexit.register(LINES.flush)  # the last lines, when the server stops
_clock = time.time  # `log` has an argument named `time`


class AccessLog(AbstractAccessLogger):
    """One line per request: client, request line, status, body bytes, seconds. Never a
    header, so never a token. `OPENWRITE_ACCESS_LOG=false` leaves it out, and so does a log
    level above INFO."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        stamp = LINES.stamp(_clock())
        LINES.add(f"{stamp} INFO {self.logger.name} {message(request, response, time)}\n")

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def message(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> str:
    """What aiohttp's own logger writes for `%a "%r" %s %b %Tfs`, with the path and query as
    the request line sent them (aiohttp re-encodes a parsed URL: 2% of a read, for the same
    text unless the client's percent-encoding was unusual)."""
    version = request.version
    remote = "-" if request.remote is None else request.remote
    return (
        f'{remote} "{request.method} {request.raw_path} HTTP/{version.major}.{version.minor}"'
        f" {response.status} {response.body_length} {seconds:f}s"
    )
