"""``GET /healthz``: store reachability (and, once workers exist, worker status).

Anyone may ask whether wxreply is up (``{"status": "ok"}``, HTTP 200 or 503, for a load
balancer or an uptime check).  The detail (version, each store, workers with their host
names, pids and capacity) is for the operator: a caller on loopback, or one that sends
``Authorization: Bearer <WXR_HEALTH_TOKEN>``.  A request relayed by a proxy is not
"on loopback" because the proxy is: only the client address counts (web_min.addresses).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import tornado.web

from store import Stores
from web_min.addresses import client_address, from_trusted_proxy, is_loopback

_FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")

try:
    VERSION = metadata.version("wxreply")
except metadata.PackageNotFoundError:  # running from a source tree without install
    VERSION = "0+unknown"


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, stores: Stores,
                   extra: Callable[[], Awaitable[dict[str, Any]]] | None = None,
                   token: str = "", trusted: tuple[str, ...] = ()) -> None:
        self.stores = stores
        self.extra = extra
        self.token = token
        self.trusted = trusted

    def detail_allowed(self) -> bool:
        if self.token:
            given = self.request.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return True
        request = self.request
        relayed = any(name in request.headers for name in _FORWARDING_HEADERS)
        if relayed and not from_trusted_proxy(request, self.trusted):
            return False  # a proxy we were not told about: the client is somewhere else
        return is_loopback(client_address(request, self.trusted))

    async def get(self) -> None:
        checks = await self.stores.health()
        body: dict[str, Any] = {"status": "ok" if all(checks.values()) else "degraded"}
        if self.detail_allowed():
            body.update({"version": VERSION, **checks})
            if self.extra is not None:
                body.update(await self.extra())
        self.set_status(200 if all(checks.values()) else 503)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body, ensure_ascii=False))
