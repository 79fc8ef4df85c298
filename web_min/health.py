"""``GET /healthz``: store reachability (and, once workers exist, worker status);
``GET /metrics``: the process's Prometheus metrics (config.metrics).

Anyone may ask whether wxreply is up (``{"status": "ok"}``, HTTP 200 or 503, for a load
balancer or an uptime check).  The detail (version, each store, workers with their host
names, pids and capacity) is for the operator: a caller on loopback, or one that sends
``Authorization: Bearer <WXR_HEALTH_TOKEN>``.  A request relayed by a proxy is not
"on loopback" because the proxy is: only the client address counts (web_min.addresses).
``/metrics`` is for the same callers only (:func:`operator_allowed`); anyone else gets 403.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import tornado.web
from tornado.httputil import HTTPServerRequest

from config.metrics import CONTENT_TYPE_LATEST, PROCESS, Metrics
from store import Stores
from web_min.addresses import client_address, from_trusted_proxy, is_loopback

_FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")

try:
    VERSION = metadata.version("wxreply")
except metadata.PackageNotFoundError:  # running from a source tree without install
    VERSION = "0+unknown"


def operator_allowed(request: HTTPServerRequest, token: str, trusted: tuple[str, ...]) -> bool:
    """Whether ``request`` comes from the operator: it carries ``Bearer <token>`` (when a
    token is set), or its client is on loopback."""
    if token:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
    relayed = any(name in request.headers for name in _FORWARDING_HEADERS)
    if relayed and not from_trusted_proxy(request, trusted):
        return False  # a proxy we were not told about: the client is somewhere else
    return is_loopback(client_address(request, trusted))


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, stores: Stores,
                   extra: Callable[[], Awaitable[dict[str, Any]]] | None = None,
                   token: str = "", trusted: tuple[str, ...] = ()) -> None:
        self.stores = stores
        self.extra = extra
        self.token = token
        self.trusted = trusted

    def detail_allowed(self) -> bool:
        return operator_allowed(self.request, self.token, self.trusted)

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


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics`` in the Prometheus text format, for the operator only."""

    def initialize(self, metrics: Metrics = PROCESS, token: str = "",
                   trusted: tuple[str, ...] = ()) -> None:
        self.metrics = metrics
        self.token = token
        self.trusted = trusted

    def prepare(self) -> None:
        if not operator_allowed(self.request, self.token, self.trusted):
            raise tornado.web.HTTPError(403)

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(self.metrics.render())

    def write_error(self, status_code: int, **kwargs: object) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}\n")


def metrics_routes(metrics: Metrics, token: str, trusted: tuple[str, ...]
                   ) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, object]]]:
    return [(r"/metrics", MetricsHandler, {"metrics": metrics, "token": token,
                                           "trusted": trusted})]
