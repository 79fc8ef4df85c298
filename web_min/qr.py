"""The QR login page: ``/qr/<pid>``, its ``/status`` JSON and the PNG itself.

A pid is 144 random bits and lives only as long as its QR (plus a short grace so the
page can still say "expired" or "online"); anything that is not a well-formed, live pid
is a plain 404, so the page leaks nothing about other users.  The page loads nothing
from elsewhere (no CDN, no QR service): the PNG was drawn by the worker and comes out
of Redis.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import tornado.web

from config.clock import wall_clock
from store.bots import FINAL_STATES, ONLINE, QrStore, QrView, valid_pid
from web_min.bodies import encode_json

TEMPLATES = Path(__file__).parent / "templates"

LABELS = {
    "requested": "正在生成二维码…",
    "waiting_scan": "等待扫码",
    "scanned": "已扫码，请在手机上确认",
    "online": "已登录",
    "logged_out": "已退出",
    "refused": "无法登录：微信不允许这个账号登录网页版",
    "closed": "微信关闭了这次网页登录，请不要马上重新扫码",
    "expired": "已过期，请在公众号重新发送「登录」",
}
UNREACHABLE = "暂时连不上微信的登录服务，正在重试…"
# What the empty QR frame says while there is no image to show.
PLACEHOLDERS = {"requested": "正在生成二维码…", "online": "已登录", "unreachable": "连不上微信"}
FINAL_PLACEHOLDER = "二维码已失效"


def describe(view: QrView, now: float) -> dict[str, object]:
    state = view.state
    if state not in FINAL_STATES and state != ONLINE and now >= view.expires_at:
        state = "expired"  # the worker may not have said so yet
    label = LABELS.get(state, state)
    if state == ONLINE and view.nickname:
        label = f"已登录：{view.nickname}"
    if state in ("refused", "closed") and view.wechat_message:
        label = f"{label}。微信的提示：{view.wechat_message}"  # escaped by the template
    final = state in FINAL_STATES or state == ONLINE
    # The worker could not reach WeChat's login service (it keeps trying): said within
    # seconds instead of "正在生成二维码…" for the whole QR lifetime.
    problem = "unreachable" if state == "requested" and view.reason == "unreachable" else ""
    if problem:
        label = UNREACHABLE
    placeholder = (FINAL_PLACEHOLDER if state in FINAL_STATES
                   else PLACEHOLDERS.get(problem or state, PLACEHOLDERS["requested"]))
    return {"state": state, "label": label, "nickname": view.nickname,
            "expires_in": max(0, round(view.expires_at - now)), "final": final,
            "has_png": view.has_png, "problem": problem, "placeholder": placeholder}


class _QrBase(tornado.web.RequestHandler):
    def initialize(self, qr: QrStore, now: Callable[[], float] = wall_clock) -> None:
        self.qr = qr
        self.now = now

    def get_template_path(self) -> str:
        return str(TEMPLATES)

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")

    async def _view(self, pid: str) -> QrView | None:
        return await self.qr.view(pid) if valid_pid(pid) else None


class QrPageHandler(_QrBase):
    async def get(self, pid: str) -> None:
        view = await self._view(pid)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        if view is None:
            self.set_status(404)
            self.set_header("Content-Security-Policy",
                            "default-src 'none'; style-src 'unsafe-inline'; "
                            "frame-ancestors 'none'")
            self.render("qr_missing.html")
            return
        nonce = secrets.token_urlsafe(16)
        self.set_header("Content-Security-Policy",
                        f"default-src 'none'; img-src 'self'; connect-src 'self'; "
                        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        info = describe(view, self.now())
        self.render("qr.html", pid=pid, uid=view.uid, nonce=nonce, **info)


class QrStatusHandler(_QrBase):
    async def get(self, pid: str) -> None:
        view = await self._view(pid)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if view is None:
            self.set_status(404)
            self.finish(encode_json({"state": "missing", "label": "二维码不存在或已过期"}))
            return
        # The nickname is whatever the WeChat account calls itself: encode_json keeps any
        # markup in it inert even if this JSON were ever rendered as HTML.
        self.finish(encode_json(describe(view, self.now())))


class QrImageHandler(_QrBase):
    async def get(self, pid: str) -> None:
        png = await self.qr.png(pid) if valid_pid(pid) else None
        if png is None:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "image/png")
        self.finish(png)


def routes(qr: QrStore) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, object]]]:
    args: dict[str, object] = {"qr": qr}
    return [
        (r"/qr/([^/]{1,100})/status", QrStatusHandler, args),
        (r"/qr/([^/]{1,100})/?", QrPageHandler, args),
        (r"/static/qrimages/([^/]{1,100})\.png", QrImageHandler, args),
    ]
