"""Git's smart HTTP, read side: `git clone` and `git fetch` of /git/<novel-id>.git, answered
by Git's own `upload-pack` with the request body and the pack streamed both ways. Pushing
is refused (novels change through the sync API); dumb HTTP is not served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, StringConstraints

from server.endpoints import Call, Endpoint, UnsupportedMediaType
from server.state import GIT_SLOTS, LIBRARY, SETTINGS
from storage.access import Level, authorize_novel
from storage.errors import Forbidden, NotFound, OpenWriteError, TooLarge, Unauthorized

log = logging.getLogger("openwrite.git")

UPLOAD_PACK = "git-upload-pack"
RECEIVE_PACK = "git-receive-pack"
REQUEST_TYPE = "application/x-git-upload-pack-request"
ADVERTISEMENT_TYPE = "application/x-git-upload-pack-advertisement"
RESULT_TYPE = "application/x-git-upload-pack-result"
BASIC_CHALLENGE = 'Basic realm="openwrite"'
# What Git's http-backend sends: no proxy or browser may answer a fetch from a cache.
NO_CACHE = {
    "Cache-Control": "no-cache, max-age=0, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "Fri, 01 Jan 1980 00:00:00 GMT",
}
# Bytes per read of upload-pack's output, and the most its pipe buffers before Git waits.
CHUNK = 256 * 1024
_GIT_PROTOCOL = re.compile(r"[A-Za-z0-9=:._-]{1,256}")
# Content-Encodings aiohttp's server decodes by itself as the body arrives.
_DECODED_BY_AIOHTTP = {"gzip", "deflate", "br", "zstd"}
# Headers of a refusal that still matter when it is re-written for Git.
_KEPT_HEADERS = ("www-authenticate", "allow", "retry-after")


class CredentialsNeeded(Unauthorized):
    """Git asks its user (or credential helper) for a password only after a Basic challenge."""

    challenge = BASIC_CHALLENGE


class BodyTimeout(OpenWriteError):
    status = 408
    code = "request_timeout"


class GitTimeout(OpenWriteError):
    status = 504
    code = "git_timeout"


class GitFailed(OpenWriteError):
    status = 503
    code = "git_failed"


class GitBusy(OpenWriteError):
    """Every Git slot of this server stayed taken for `git_queue_seconds`."""

    status = 503
    code = "git_busy"


class GitRefused(OpenWriteError):
    status = 400
    code = "git_protocol_error"


class ClientGone(OpenWriteError):
    """The request body broke off: the client went away or sent a body that does not decode."""

    status = 400
    code = "request_body_broken"


class ServiceQuery(BaseModel):
    service: Annotated[str, StringConstraints(max_length=64)] | None = None


# -- handlers -------------------------------------------------------------------------------


async def git_info_refs(call: Call) -> web.StreamResponse:
    """The ref advertisement that starts every clone and fetch."""
    repository = await readable_repository(call)
    service = call.query.service
    if service is None:
        raise NotFound("only Git's smart HTTP is served here: use a Git client", code="not_found")
    if service == RECEIVE_PACK:
        raise push_refused()
    if service != UPLOAD_PACK:
        raise Forbidden(f"unsupported service {service!r}", code="unsupported_service")
    protocol = git_protocol(call.request)
    # Protocol v2 answers with its capabilities only; v0 and v1 clients expect this header
    # line first (Git's http-backend does the same, see get_info_refs there).
    preamble = b"" if protocol_version(protocol) == 2 else service_preamble(UPLOAD_PACK)
    return await upload_pack(call.request, repository, protocol, preamble=preamble)


async def git_upload_pack(call: Call) -> web.StreamResponse:
    """One round of negotiation, or the pack itself."""
    repository = await readable_repository(call)
    if call.request.content_type != REQUEST_TYPE:
        raise UnsupportedMediaType(f"send the body as {REQUEST_TYPE}")
    body_encoding(call.request)
    return await upload_pack(call.request, repository, git_protocol(call.request), body=True)


async def git_receive_pack(call: Call) -> web.StreamResponse:
    await readable_repository(call)
    raise push_refused()


def push_refused() -> Forbidden:
    return Forbidden(
        "pushing to OpenWrite is not supported yet: change the novel through the app or"
        " the sync API, and use git clone/fetch for backups",
        code="push_not_supported",
    )


async def readable_repository(call: Call) -> Path:
    """The novel's repository if the caller may read it; Git gets a Basic challenge first."""
    novel_id = call.params["novel_id"]
    try:
        await call.db.read_quick(authorize_novel, call.principal, novel_id, Level.READ)
    except NotFound:
        if call.principal is None:
            # Not public: maybe readable with credentials. Git asks for them on a 401 only.
            raise CredentialsNeeded("this novel needs a user name and a token") from None
        raise
    return call.request.app[LIBRARY].path(novel_id)


# -- running upload-pack --------------------------------------------------------------------


def git_protocol(request: web.Request) -> str | None:
    """The client's `Git-Protocol` header (e.g. `version=2`), if it is well formed."""
    value = request.headers.get("Git-Protocol", "")
    return value if _GIT_PROTOCOL.fullmatch(value) else None


def protocol_version(protocol: str | None) -> int:
    """The highest `version=N` the client asked for, as Git's own server reads it."""
    versions = [0]
    for item in (protocol or "").split(":"):
        key, _, value = item.partition("=")
        if key == "version" and value in ("1", "2"):
            versions.append(int(value))
    return max(versions)


def body_encoding(request: web.Request) -> str | None:
    """`x-gzip` when the body is ours to inflate, None when it arrives decoded.

    aiohttp inflates `gzip` (what Git sends for requests over 1 KiB) and its other
    encodings itself; `x-gzip`, the old name Git's http-backend also accepts, is ours.
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity") or encoding in _DECODED_BY_AIOHTTP:
        return None
    if encoding == "x-gzip":
        return encoding
    raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not accepted: use gzip")


def pkt_line(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


def service_preamble(service: str) -> bytes:
    return pkt_line(f"# service={service}\n".encode()) + b"0000"


def git_environment(protocol: str | None) -> dict[str, str]:
    """A clean environment: none of the server's secrets, no user or system Git config."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    if protocol:
        env["GIT_PROTOCOL"] = protocol
    return env


async def upload_pack(
    request: web.Request,
    repository: Path,
    protocol: str | None,
    *,
    body: bool = False,
    preamble: bytes = b"",
) -> web.StreamResponse:
    """Run `git upload-pack --stateless-rpc` for one request, streaming both ways.

    The request body (already decoded by aiohttp if it came gzip-compressed) is copied
    to Git's stdin as it arrives while Git's stdout is copied to the answer, so neither
    the request nor the pack is ever held whole. When nothing moves for
    `git_timeout_seconds` (a stalled body, a stuck Git, a client that stops reading), the
    exchange ends; Git is killed whenever the exchange ends before it does.
    """
    settings = request.app[SETTINGS]
    slots = request.app[GIT_SLOTS]
    try:
        # A burst of clones queues here rather than starting a Git process each.
        await asyncio.wait_for(slots.acquire(), settings.git_queue_seconds)
    except TimeoutError:
        raise GitBusy(
            f"the server is running {settings.git_max_processes} Git processes; try again",
            details={"retry_after": 5},
        ) from None
    try:
        exchange = await _start_upload_pack(request, repository, protocol, body=body)
    except BaseException:
        slots.release()
        raise
    try:
        return await exchange.run(preamble, body_limit=settings.max_body_bytes if body else None)
    finally:
        reaping = exchange.close()
        # The slot is Git's: given back once the process is reaped and its pipes closed.
        reaping.add_done_callback(lambda _: slots.release())
        # Shielded: aiohttp cancels the handler of a client that went away, possibly while
        # it waits here, and the reaping must run to its end all the same.
        await asyncio.shield(reaping)


async def _start_upload_pack(
    request: web.Request, repository: Path, protocol: str | None, *, body: bool
) -> _Exchange:
    args = ["git", "upload-pack", "--strict", "--stateless-rpc"]
    if not body:
        args.append("--advertise-refs")
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            str(repository),
            stdin=asyncio.subprocess.PIPE if body else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=git_environment(protocol),
            # Its own process group: a kill reaches pack-objects, upload-pack's child, too.
            start_new_session=True,
            limit=CHUNK,
        )
    except OSError as exc:
        raise GitFailed(f"git upload-pack could not start: {exc}") from exc
    return _Exchange(request, process, request.app[SETTINGS].git_timeout_seconds)


# Reaping tasks still running, whose handler may have been cancelled meanwhile.
_REAPING: set[asyncio.Task] = set()


class _Exchange:
    """One upload-pack process and the request it answers."""

    def __init__(self, request: web.Request, process: asyncio.subprocess.Process, timeout: float):
        self.request = request
        self.process = process
        self.timeout = timeout
        self.deadline: asyncio.Timeout | None = None
        self.awaiting_body = False
        self.errors = asyncio.create_task(_tail(process.stderr))
        self.feeding: asyncio.Task | None = None

    def progress(self) -> None:
        """Something moved: the exchange may now stall for another full timeout."""
        deadline = self.deadline
        if deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time() + self.timeout)

    async def run(self, preamble: bytes, *, body_limit: int | None) -> web.StreamResponse:
        stdout = self.process.stdout
        response: web.StreamResponse | None = None
        try:
            async with asyncio.timeout(self.timeout) as self.deadline:
                if body_limit is not None:
                    self.feeding = asyncio.create_task(self._feed(body_limit))
                    self.feeding.add_done_callback(self._stop_on_failure)
                chunk = await stdout.read(CHUNK)
                if not chunk:
                    await self._failed_silently(request_body=body_limit is not None)
                response = web.StreamResponse(
                    headers={
                        "Content-Type": _content_type(body_limit),
                        **NO_CACHE,
                    }
                )
                await response.prepare(self.request)
                chunk = preamble + chunk
                while chunk:
                    await response.write(chunk)
                    self.progress()
                    chunk = await stdout.read(CHUNK)
                    self.progress()
                await self._body_outcome()
                code = await self.process.wait()
                if code != 0:
                    stderr = (await self.errors).decode("utf-8", "replace").strip()
                    log.warning("git upload-pack exited %d after answering: %s", code, stderr)
                await response.write_eof()
                return response
        except (OpenWriteError, TimeoutError, ConnectionError) as exc:
            if response is None:
                raise self._refusal(exc) from None
            # The answer has begun and a second status line is impossible: cut the
            # connection, so the client sees a broken transfer, not a pack that looks short.
            log.info("git upload-pack answer cut short: %s", self._refusal(exc).message)
            if self.request.transport is not None:
                self.request.transport.close()
            return response
        finally:
            self.deadline = None

    async def _failed_silently(self, *, request_body: bool) -> None:
        """Git wrote nothing: raise what went wrong, unless it simply had nothing to say."""
        await self._body_outcome()
        code = await self.process.wait()
        if code == 0:
            return
        stderr = (await self.errors).decode("utf-8", "replace").strip()
        if request_body:
            # Git refuses a malformed negotiation this way: the client's mistake.
            log.info("git upload-pack refused a request (exit %d): %s", code, stderr)
            raise GitRefused(f"git upload-pack refused the request (exit {code})")
        log.warning("git upload-pack could not advertise (exit %d): %s", code, stderr)
        raise GitFailed(f"git upload-pack failed (exit {code})")

    def _refusal(self, exc: BaseException) -> OpenWriteError:
        if isinstance(exc, OpenWriteError):
            return exc
        if isinstance(exc, TimeoutError):
            if self.awaiting_body:
                return BodyTimeout(f"the request body stalled for {self.timeout}s")
            return GitTimeout(f"git upload-pack made no progress for {self.timeout}s")
        return ClientGone("the client went away")

    async def _feed(self, limit: int) -> None:
        """Copy the request body to Git's stdin as it arrives, then close stdin."""
        stdin = self.process.stdin
        inflate = None
        if body_encoding(self.request) is not None:
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        received = 0
        try:
            while True:
                self.awaiting_body = True
                try:
                    chunk = await self.request.content.readany()
                except (ConnectionError, web.RequestPayloadError) as exc:
                    raise ClientGone(f"the request body broke off: {exc}") from None
                finally:
                    self.awaiting_body = False
                if not chunk:
                    if inflate is not None and not inflate.eof:
                        raise ClientGone("the gzip body is cut short")
                    return
                self.progress()
                for piece in _inflated(inflate, chunk):
                    received += len(piece)
                    if received > limit:
                        raise TooLarge(
                            f"the body is larger than {limit} bytes", details={"limit": limit}
                        )
                    stdin.write(piece)
                    try:
                        await stdin.drain()
                    except ConnectionError:
                        # Git stopped reading: it has answered or failed; stdout says which.
                        return
        finally:
            stdin.close()

    def _stop_on_failure(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            _kill(self.process)

    async def _body_outcome(self) -> None:
        """Raise what stopped the request body, if anything did."""
        if self.feeding is not None:
            await self.feeding

    def close(self) -> asyncio.Task:
        """End Git if it still runs; the task that reaps it and closes its pipes, which
        runs to its end whatever happens to the handler meanwhile."""
        _kill(self.process)
        task = asyncio.create_task(self._reap())
        _REAPING.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(_REAPING.discard)
        return task

    async def _reap(self) -> None:
        if self.feeding is not None and not self.feeding.done():
            self.feeding.cancel()
        # What Git wrote and nobody read (a client that stopped reading) is read to its
        # end first: the pipe, paused while full, would never see its end, and asyncio's
        # wait() returns only once every pipe has (Python 3.11).
        with contextlib.suppress(OSError, ValueError):
            while await self.process.stdout.read(CHUNK):
                pass
        await self.process.wait()
        await asyncio.gather(self.errors, *filter(None, [self.feeding]), return_exceptions=True)


def _inflated(inflate: zlib._Decompress | None, data: bytes) -> Iterator[bytes]:
    """`data` decoded in pieces of at most CHUNK bytes, so no gzip bomb grows in memory."""
    if inflate is None:
        yield data
        return
    while data and not inflate.eof:
        try:
            piece = inflate.decompress(data, CHUNK)
        except zlib.error as exc:
            raise ClientGone(f"the gzip body does not decode: {exc}") from None
        if not piece and inflate.unconsumed_tail == data:
            return
        if piece:
            yield piece
        data = inflate.unconsumed_tail


def _content_type(body_limit: int | None) -> str:
    return ADVERTISEMENT_TYPE if body_limit is None else RESULT_TYPE


async def _tail(stream: asyncio.StreamReader, keep: int = 4096) -> bytes:
    """Read a stream to its end (so Git never blocks on it), keeping its last bytes."""
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-keep:]
    return tail


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


# -- what Git shows its user ------------------------------------------------------------------


@web.middleware
async def git_answers(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    """Refusals under /git/ in the form Git uses: a Basic challenge on every 401 (Git
    answers no other), and, for Git's own client, the error message as text/plain, the
    only body Git prints to its user ("remote: ..."). Everyone else gets the JSON shape."""
    response = await handler(request)
    if response.status < 400 or not request.path.startswith("/git/"):
        return response
    if response.status == 401:
        response.headers["WWW-Authenticate"] = BASIC_CHALLENGE
    agent = request.headers.get("User-Agent", "")
    if agent.startswith("git/") and isinstance(response, web.Response) and response.body:
        try:
            message = json.loads(response.text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return response
        kept = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
        return web.Response(
            status=response.status, text=message + "\n", content_type="text/plain", headers=kept
        )
    return response


ENDPOINTS = [
    Endpoint("GET", "/git/{novel_id}.git/info/refs", git_info_refs,
             "Git smart HTTP: the ref advertisement of `git clone` and `git fetch`"
             " (`service=git-upload-pack`; user name anything, password a token)", "git",
             query=ServiceQuery, auth="optional", content_type=ADVERTISEMENT_TYPE,
             errors=(401, 403, 404, 503, 504)),
    Endpoint("POST", "/git/{novel_id}.git/git-upload-pack", git_upload_pack,
             "Git smart HTTP: negotiation and the pack (body: application/x-git-upload-pack-"
             "request, gzip accepted; `Git-Protocol` passed on)", "git",
             auth="optional", writes=False, content_type=RESULT_TYPE,
             errors=(400, 401, 404, 408, 413, 415, 503, 504),
             extra={"request_type": REQUEST_TYPE}),
    Endpoint("POST", "/git/{novel_id}.git/git-receive-pack", git_receive_pack,
             "Git push: not supported yet, 403 `push_not_supported` once the novel is readable",
             "git", auth="optional", writes=True, errors=(401, 403, 404)),
]  # fmt: skip
