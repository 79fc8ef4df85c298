"""Logging helpers: what may appear in a log line.

No secrets and no full openids in logs (docs/RELIABILITY.md, 'Logs'): an openid identifies
a person to anyone holding the official account's credentials, so logs show only enough of it to
tell users apart while debugging.

``WXR_LOG_FORMAT=json`` (:class:`JsonFormatter`) writes one JSON object per line for log
shippers, with the same message text as the default format.
"""

from __future__ import annotations

import datetime
import json
import logging
import re

import tornado.web


def mask(openid: str) -> str:
    """``oyORnuP8q7ou2gfYjqLzSIWZf0rs`` → ``oyOR…f0rs``."""
    if len(openid) <= 10:
        return openid[:2] + "…"
    return f"{openid[:4]}…{openid[-4:]}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``; ``request_id``, ``uid`` and ``openid`` (masked) when the record carries
    them (``extra=``); ``exc`` with the traceback of a logged exception."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("request_id", "uid"):
            value = getattr(record, field, None)
            if value is not None:
                out[field] = value
        openid = getattr(record, "openid", None)
        if isinstance(openid, str):
            out["openid"] = mask(openid)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


access_log = logging.getLogger("tornado.access")
# A request id set by the proxy in front (nginx: proxy_set_header X-Request-Id
# $request_id), if it looks like one; anything else is not repeated into the log.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(request: object) -> str | None:
    headers = getattr(request, "headers", None)
    value = headers.get("X-Request-Id", "") if headers is not None else ""
    return value if _REQUEST_ID.fullmatch(value) else None


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log without the query string: on ``/wechat`` it carries the
    openid and signatures, on other paths it may carry codes."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    millis = 1000.0 * request.request_time()
    if access_log.isEnabledFor(level):
        access_log.log(level, "%d %s %s %.1fms", status, request.method, request.path, millis,
                       extra={"request_id": request_id(request)})
