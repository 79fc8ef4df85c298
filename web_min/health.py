"""``GET /healthz``: store reachability (and, once workers exist, worker status)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import tornado.web

from store import Stores

try:
    VERSION = metadata.version("wxreply")
except metadata.PackageNotFoundError:  # running from a source tree without install
    VERSION = "0+unknown"


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, stores: Stores,
                   extra: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> None:
        self.stores = stores
        self.extra = extra

    async def get(self) -> None:
        checks = await self.stores.health()
        body: dict[str, Any] = {
            "status": "ok" if all(checks.values()) else "degraded",
            "version": VERSION,
            **checks,
        }
        if self.extra is not None:
            body.update(await self.extra())
        self.set_status(200 if all(checks.values()) else 503)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body, ensure_ascii=False))
