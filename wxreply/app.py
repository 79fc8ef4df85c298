"""Build the Tornado application from its parts."""

from __future__ import annotations

from typing import Any

import tornado.web

from config import Settings
from store import Stores
from web_min.health import HealthHandler


def build_app(settings: Settings, stores: Stores, **extra: Any) -> tornado.web.Application:
    routes: list[Any] = [
        (r"/healthz", HealthHandler, {"stores": stores, "extra": extra.get("health_extra")}),
    ]
    return tornado.web.Application(
        routes,
        cookie_secret=settings.secret_key,
        xsrf_cookies=False,
        compress_response=False,
        # Tornado's default 404/500 pages include no stack trace unless debug is on;
        # it stays off.
        debug=False,
    )
