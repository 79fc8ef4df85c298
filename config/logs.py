"""Logging helpers: what may appear in a log line.

No secrets and no full openids in logs (docs/RELIABILITY.md, 'Logs'): an openid identifies
a person to anyone holding the official account's credentials, so logs show only enough of it to
tell users apart while debugging.
"""

from __future__ import annotations

import logging

import tornado.web


def mask(openid: str) -> str:
    """``oyORnuP8q7ou2gfYjqLzSIWZf0rs`` → ``oyOR…f0rs``."""
    if len(openid) <= 10:
        return openid[:2] + "…"
    return f"{openid[:4]}…{openid[-4:]}"


access_log = logging.getLogger("tornado.access")


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log without the query string: on ``/wechat`` it carries the
    openid and signatures, on other paths it may carry codes."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    millis = 1000.0 * request.request_time()
    if access_log.isEnabledFor(level):
        access_log.log(level, "%d %s %s %.1fms", status, request.method, request.path, millis)
