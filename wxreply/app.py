"""Build the Tornado application from its parts."""

from __future__ import annotations

from typing import Any

import tornado.web

from config import Settings
from config.logs import log_request
from config.metrics import PROCESS, Metrics
from mpbot.context import BotControl
from mpbot.edge import Edge
from mpbot.edge import routes as wechat_routes
from mpbot.mpapi import MpApi
from store import Stores
from store.bots import BotService, QrStore
from web_min import api, home, qr
from web_min.accounts import DEFAULT_BCRYPT_ROUNDS
from web_min.health import HealthHandler, metrics_routes


def build_mpapi(settings: Settings, stores: Stores) -> MpApi:
    return MpApi(settings.mp_api_base, settings.mp_appid, settings.mp_secret, stores.kv)


def build_bot_service(settings: Settings, stores: Stores) -> BotService:
    return BotService(stores.bots, stores.bus, stores.kv, public_url=settings.public_url,
                      qr_ttl_s=settings.qr_ttl)


def build_app(settings: Settings, stores: Stores, *, bot: BotControl | None = None,
              mpapi: MpApi | None = None, health_extra: Any = None,
              password_rounds: int = DEFAULT_BCRYPT_ROUNDS,
              metrics: Metrics = PROCESS) -> tornado.web.Application:
    """The whole web tier.  ``password_rounds`` exists for tests only (a cost-12 hash
    takes 0.25 s, too slow for hundreds of logins); the product keeps the default."""
    bot = bot if bot is not None else build_bot_service(settings, stores)
    edge = Edge(settings, stores, bot=bot, mpapi=mpapi or build_mpapi(settings, stores),
                metrics=metrics)
    routes: list[Any] = [
        (r"/healthz", HealthHandler, {"stores": stores, "extra": health_extra,
                                      "token": settings.health_token,
                                      "trusted": settings.trust_proxy}),
        *metrics_routes(metrics, settings.health_token, settings.trust_proxy),
        *home.routes(),
        *wechat_routes(edge),
        *qr.routes(QrStore(stores.kv)),
        *api.routes(api.build_api(settings, stores, bot, password_rounds=password_rounds)),
    ]
    return tornado.web.Application(
        routes,
        cookie_secret=settings.secret_key,
        log_function=log_request,
        # Tornado's default error pages include a stack trace only in debug mode.
        debug=False,
    )
