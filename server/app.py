"""The aiohttp application: one factory wires state, middlewares and every endpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

import aiohttp
from aiohttp import web

from server import (
    api_accounts,
    api_ai,
    api_content,
    api_history,
    api_novels,
    api_organizations,
    api_sync,
    git_http,
)
from server.config import Settings
from server.endpoints import Call, Endpoint, bind, json_response
from server.events import EventHub
from server.memory import start_trimming
from server.middleware import authenticate, cors, cors_headers, errors
from server.models import Health
from server.openapi import build_openapi
from server.periodic import every
from server.state import DB, EVENTS, GIT_SLOTS, HTTP, LIBRARY, SECRETS, SETTINGS
from storage.db import open_database, query_one
from storage.errors import Unavailable
from storage.keyring import ensure_key_verifier
from storage.library import KEEP_OPEN, Library
from storage.reindex import check_novels
from storage.repository import enable_durability
from storage.secrets import SecretBox, load_server_key
from storage.words import word_count

log = logging.getLogger("openwrite")

OPENAPI = web.AppKey("openapi", dict)
ENDPOINTS = web.AppKey("endpoints", list)


def server_version() -> str:
    try:
        return version("openwrite")
    except PackageNotFoundError:
        return "0.0.0"


async def healthz(call: Call) -> dict:
    settings = call.settings
    try:
        await call.db.read(lambda conn: query_one(conn, "SELECT 1 AS ok"))
    except Exception as exc:
        raise Unavailable("the database does not answer", code="database_unavailable") from exc
    if not settings.repositories_dir.is_dir():
        raise Unavailable("the repository root is missing", code="repositories_unavailable")
    return {"status": "ok", "database": "ok", "repositories": "ok"}


async def openapi_document(call: Call) -> web.Response:
    return json_response(call.request.app[OPENAPI])


SERVICE = [
    Endpoint("GET", "/healthz", healthz, "200 when SQLite and the repository root answer",
             "service", response=Health, auth="none", errors=(503,)),
    Endpoint("GET", "/api/v1/openapi.json", openapi_document, "This document", "service",
             auth="none"),
]  # fmt: skip


def all_endpoints() -> list[Endpoint]:
    return [
        *SERVICE,
        *api_accounts.ENDPOINTS,
        *api_organizations.ENDPOINTS,
        *api_novels.ENDPOINTS,
        *api_content.ENDPOINTS,
        *api_sync.ENDPOINTS,
        *api_history.ENDPOINTS,
        *api_ai.ENDPOINTS,
        *git_http.ENDPOINTS,
    ]


def create_app(settings: Settings) -> web.Application:
    """The whole server for `settings`; resources open on start-up and close on clean-up."""
    # CORS only when origins are configured: otherwise there is no origin to answer, and
    # every request would pay for asking (a middleware and a signal, ~3% of a read).
    middlewares = [cors] if settings.cors_origins else []
    app = web.Application(
        middlewares=[*middlewares, git_http.git_answers, errors, authenticate],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[GIT_SLOTS] = asyncio.Semaphore(settings.git_max_processes)
    endpoints = all_endpoints()
    app[ENDPOINTS] = endpoints
    app[OPENAPI] = build_openapi(endpoints, version=server_version())
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, bind(endpoint))
    if settings.cors_origins:
        app.on_response_prepare.append(cors_headers)
    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.append(_idle_repositories)
    app.cleanup_ctx.append(_memory_trimmer)
    app.on_shutdown.append(_end_event_streams)
    return app


async def _memory_trimmer(app: web.Application) -> AsyncIterator[None]:
    task = start_trimming(app[SETTINGS].memory_trim_seconds)
    yield
    if task is not None:
        task.cancel()


async def _idle_repositories(app: web.Application) -> AsyncIterator[None]:
    """Close repositories kept open and then left unused for `repository_idle_seconds`,
    checking every half of that (at most every 30 s)."""
    seconds = app[SETTINGS].repository_idle_seconds
    library = app[LIBRARY]
    # None when 0: no repository is kept open then (`_storage`).
    task = every(
        min(seconds / 2, 30), lambda: library.close_idle(seconds), "closing idle repositories"
    )
    yield
    if task is not None:
        task.cancel()


async def _end_event_streams(app: web.Application) -> None:
    """Close every open `GET /events` stream as shutdown begins: aiohttp waits for open
    handlers before clean-up, and a stream only ends when it is told to."""
    if EVENTS in app:
        await app[EVENTS].stop()


async def _storage(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.repositories_dir.mkdir(parents=True, exist_ok=True)
    enable_durability()
    box = SecretBox(load_server_key(settings.data_dir, settings.secret_key))
    db = open_database(
        settings.database_path,
        readers=settings.sqlite_readers,
        quick_reads=settings.sqlite_quick_reads,
    )
    try:
        db.write_sync(ensure_key_verifier, box)
    except BaseException:
        db.close()
        raise
    app[DB] = db
    app[SECRETS] = box
    library = Library(
        settings.repositories_dir,
        loose_threshold=settings.loose_object_threshold,
        keep_open=KEEP_OPEN if settings.repository_idle_seconds > 0 else 0,
    )
    # Git is the truth for content: a crash between a commit and its SQLite write
    # leaves the index behind Git, and this brings it back before serving.
    report = await library.call(check_novels, db, settings.repositories_dir)
    if report.repaired or report.missing or report.damaged:
        log.warning("start-up check: %d novels rebuilt from Git, %d without a repository,"
                    " %d with a damaged repository (served as they are)",
                    len(report.repaired), len(report.missing), len(report.damaged))  # fmt: skip
    app[LIBRARY] = library
    # Word counting builds its Unicode classes on first use (~0.2 s of CPU); build them
    # now rather than inside the first syncs, several at once, holding the GIL.
    await asyncio.to_thread(word_count, "")
    app[HTTP] = aiohttp.ClientSession()
    hub = app[EVENTS] = EventHub(db)
    await hub.start()
    log.info("data directory %s", settings.data_dir.resolve())
    yield
    await hub.stop()
    await app[HTTP].close()
    app[LIBRARY].close()
    db.close()
