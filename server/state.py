"""Typed application state: every resource the handlers reach through `request.app`."""

from __future__ import annotations

from aiohttp import web

from server.config import Settings
from storage.db import Database

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
