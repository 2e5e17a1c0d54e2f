"""AI provider connections and the metered completion proxy."""

from __future__ import annotations

from server.endpoints import Endpoint

ENDPOINTS: list[Endpoint] = []
