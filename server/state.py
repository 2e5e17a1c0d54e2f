"""Typed application state: every resource the handlers reach through `request.app`."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from server.config import Settings
from server.events import EventHub
from storage.db import Database
from storage.library import Library
from storage.secrets import SecretBox

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
LIBRARY = web.AppKey("library", Library)
SECRETS = web.AppKey("secrets", SecretBox)
# One outgoing HTTP client for the whole app (AI providers), closed on clean-up.
HTTP = web.AppKey("http", aiohttp.ClientSession)
EVENTS = web.AppKey("events", EventHub)
# Slots for Git child processes (settings.git_max_processes).
GIT_SLOTS = web.AppKey("git_slots", asyncio.Semaphore)
