"""Build the Tornado application from its parts."""

from __future__ import annotations

from typing import Any

import tornado.web

from config import Settings
from config.logs import log_request
from mpbot.context import BotControl
from mpbot.edge import Edge
from mpbot.edge import routes as wechat_routes
from store import Stores
from web_min.health import HealthHandler


def build_app(settings: Settings, stores: Stores, *, bot: BotControl | None = None,
              health_extra: Any = None) -> tornado.web.Application:
    edge = Edge(settings, stores, bot=bot)
    routes: list[Any] = [
        (r"/healthz", HealthHandler, {"stores": stores, "extra": health_extra}),
        *wechat_routes(edge),
    ]
    return tornado.web.Application(
        routes,
        cookie_secret=settings.secret_key,
        log_function=log_request,
        # Tornado's default error pages include a stack trace only in debug mode.
        debug=False,
    )
