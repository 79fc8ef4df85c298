"""A fake WeChat official-account API on 127.0.0.1, for tests and demos.

It answers like ``https://api.weixin.qq.com/cgi-bin/`` for what wxreply uses:

* ``GET token?grant_type=client_credential&appid=&secret=`` and ``POST stable_token``;
  a wrong appid answers 40013, a wrong secret 40125.  As with the real ``token``
  endpoint, a new token leaves the previous ones valid for 5 more minutes; the stable
  token is handed out unchanged while it is valid (``force_refresh`` replaces it).
* ``POST message/custom/send?access_token=`` (text messages; recorded in :attr:`sent`);
* ``GET user/info?access_token=&openid=&lang=`` (no nickname unless one was set, as
  WeChat no longer returns it for most accounts).
* ``POST menu/create?access_token=`` (the custom menu; kept in :attr:`menu`) and
  ``GET menu/get`` (``{"menu": {"button": …}}``, 46003 when there is none).  The checks
  are WeChat's documented limits (developers.weixin.qq.com/doc/subscription/api/
  custommenu/api_createcustommenu.html: at most 3 top-level buttons with at most 5
  sub-buttons each, names of at most 16 bytes on top and 60 below, keys of at most 128
  bytes), answered with the codes of WeChat's global return-code table: 40016 invalid
  button size, 40017 invalid button type, 40018 invalid button name size, 40019 invalid
  button key size, 47001 for a body that is not the documented JSON.  wechatpy's menu
  client (wechatpy/client/api/menu.py, ``create``) posts the same ``{"button": …}``.

A missing token answers 41001, an unknown one 40001, an expired one 42001.  Every API
call is recorded in :attr:`calls` with the errcode it got; token fetches are counted in
:attr:`token_fetches`.

Account kinds (``kind``), as WeChat treats ``message/custom/send`` for each:

* ``"service"`` (the default; also ``"verified_subscription"``, ``"sandbox"``): sends
  work.  A sandbox account (测试号) has the customer-service permission, but its settings
  page offers only URL and Token, so it pushes plaintext (ArtisanCloud/PowerWeChat#372
  "测试号是明文的", baaxl9vh/nest-wechat#19).
* ``"subscription"``: a personal (unverified) subscription account.  Every send answers
  ``{"errcode": 48001, "errmsg": "api unauthorized rid: …"}``: unverified accounts have
  no customer-service permission (niefy/wx-manage#74: a personal subscription account's
  "auto reply" built on 客服消息 "需要认证"; zhayujie/chatgpt-on-wechat → CowAgent#1757
  logs exactly this answer from ``message/custom/send``; node-webot/wechat-api#253 shows
  wechatpy raising it as ``WeChatClientException: Error code: 48001, message: api
  unauthorized``).  Token fetches still work: it is a permission, not a credential.

With ``window=True`` the fake also enforces the customer-service window: the test says
when a user wrote (``user_wrote(openid)``; ``kind`` "m" for a message, "e" for a menu
click/follow/scan), and a send answers 45015 "response out of time limit or subscription
is canceled" outside it (rememberber/WePush#216 logs that answer from
``message/custom/send``) and 45047 "out of response count limit" past its quota
(wechatpy/wechatpy#643 records the payload; the quota of 5 messages in 48 hours after a
user's message, 3 in 1 minute after a click, follow or scan, is WeChat's rule since
June 2023, as tabled in docs.chatalog.ai's 客服消息 page).  Each new action of the user
resets the count (mntuku.cn's guide to the same rule: "可发送客服消息条数不累加").

Test hooks, in Python and (for other processes) over HTTP on the same port:

* ``fail_next(errcode, times=1, path=None, errmsg=None, openid=None)``; HTTP ``POST
  /_fake/fail`` with ``{"errcode", "times", "path", "errmsg", "openid"}`` (``openid``:
  only sends to that user);
* ``kind``; ``POST /_fake/kind`` ``{"kind"}``; ``user_wrote(openid, kind="m")``; ``POST
  /_fake/wrote`` ``{"openid", "kind"}``;
* ``delay(seconds, times=1, path=None)``; ``POST /_fake/delay`` ``{"seconds", "times",
  "path"}``;
* ``expire_tokens()``; ``POST /_fake/expire_tokens``;
* ``set_user(openid, nickname=None, subscribed=True)``; ``POST /_fake/user``
  ``{"openid", "nickname", "subscribed"}``;
* ``reset()``; ``POST /_fake/reset``;
* :attr:`sent`; ``GET /_fake/sent`` answers ``{"sent": [{"openid", "content",
  "msgtype"}]}``;
* :attr:`token_fetches` and :attr:`calls`; ``GET /_fake/stats`` answers
  ``{"token_fetches", "calls": [{"path", "errcode"}]}``.

``times`` None means every matching call until ``reset()``.  ``path`` limits a hook to
one endpoint (``"message/custom/send"``, ``"token"`` …); without it, ``fail_next``
applies to the API calls (not to token fetches) and ``delay`` to every endpoint.

Run it as its own process with ``python -m sandbox.mpapi --port N --appid wx…
--secret …``; it prints
``FAKE_MPAPI_BASE=http://127.0.0.1:N/cgi-bin/`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import secrets
import socket
import sys
from collections.abc import Callable
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.log import access_log
from tornado.netutil import bind_sockets

from config.clock import wall_clock
from sandbox.serving import serve_until_signalled

TOKEN_PATHS = frozenset({"token", "stable_token"})
# How long the real ``token`` endpoint keeps the previous token valid after a refresh.
OLD_TOKEN_GRACE_S = 300.0

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40008: "invalid message type",
    40013: "invalid appid",
    40014: "invalid access_token",
    40125: "invalid appsecret",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    43004: "require subscribe",
    44002: "empty post data",
    45009: "reach max api daily quota limit",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    46003: "menu no exist",
    40016: "invalid button size",
    40017: "invalid button type",
    40018: "invalid button name size",
    40019: "invalid button key size",
    47001: "data format error",
    48001: "api unauthorized",
}
KINDS = frozenset({"service", "verified_subscription", "subscription", "sandbox"})
# The quota table cited in the module docstring: (window seconds, messages).
WINDOWS = {"m": (48 * 3600, 5), "e": (60, 3)}
# Button types of the menu/create document.  click and the scan/picture/location ones
# need a key; view a url.
_KEYED = frozenset({"click", "scancode_push", "scancode_waitmsg", "pic_sysphoto",
                    "pic_photo_or_album", "pic_weixin", "location_select"})
_BUTTON_TYPES = _KEYED | {"view", "miniprogram", "media_id", "article_id",
                          "article_view_limited", "view_limited"}

_OPENID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclasses.dataclass(frozen=True)
class SentMessage:
    """One customer-service message as the fake received it (``body``: the raw bytes)."""

    openid: str
    content: str
    msgtype: str = "text"
    body: bytes = dataclasses.field(default=b"", repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class Call:
    path: str
    errcode: int
    openid: str = ""  # the addressee of a send


@dataclasses.dataclass
class _Hook:
    remaining: int | None  # None: until reset
    path: str | None
    value: Any
    errmsg: str | None = None
    openid: str | None = None

    def applies(self, path: str, *, default_api_only: bool, openid: str | None = None) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.openid is not None and self.openid != openid:
            return False
        if self.path is None:
            return not (default_api_only and path in TOKEN_PATHS)
        return self.path == path


class FakeMpApi:
    """State and behaviour of the fake; :meth:`app` serves it, :meth:`start` listens."""

    def __init__(self, appid: str = "wxfake0123456789ab",
                 secret: str = "fake-app-secret",  # noqa: S107 - made up, for the fake only
                 *, expires_in: int = 7200, now: Callable[[], float] = wall_clock,
                 kind: str = "service", window: bool = False) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}")
        self.appid = appid
        self.secret = secret
        self.expires_in = expires_in
        self.kind = kind
        self.window = window
        self._now = now
        self.server: HTTPServer | None = None
        self.port: int | None = None
        self._stopping: asyncio.Event | None = None
        self.reset()

    def reset(self) -> None:
        """Forget messages, calls, tokens, users and hooks."""
        self.sent: list[SentMessage] = []
        self.calls: list[Call] = []
        self.token_fetches = 0
        self.tokens: dict[str, float] = {}  # token -> expiry (by self._now)
        self.issued: list[str] = []  # every token ever handed out, for leak checks
        self.stable: str | None = None
        self.users: dict[str, dict[str, Any]] = {}
        self.unfollowed: set[str] = set()
        self.menu: dict[str, Any] | None = None
        self._failures: list[_Hook] = []
        self._delays: list[_Hook] = []
        self.wrote: dict[str, tuple[str, float]] = {}  # openid -> (kind, when)
        self.since_wrote: dict[str, int] = {}  # openid -> sends since they wrote

    # -- hooks -------------------------------------------------------------------------

    def fail_next(self, errcode: int, times: int | None = 1, *, path: str | None = None,
                  errmsg: str | None = None, openid: str | None = None) -> None:
        """Answer the next ``times`` matching calls with ``errcode`` (None: every call);
        with ``openid``, only sends to that user."""
        self._failures.append(_Hook(times, path, errcode, errmsg, openid))

    def user_wrote(self, openid: str, kind: str = "m") -> None:
        """The user sent a message ("m") or clicked, followed or scanned ("e")."""
        if kind not in WINDOWS:
            raise ValueError("kind must be 'm' or 'e'")
        now = self._now()
        previous = self.wrote.get(openid)
        if (kind == "e" and previous is not None and previous[0] == "m"
                and now - previous[1] < WINDOWS["m"][0]):
            kind, now = previous  # the longer window stays; the count starts again
        self.wrote[openid] = (kind, now)
        self.since_wrote[openid] = 0

    def sends_to(self, openid: str) -> int:
        return sum(1 for call in self.calls if call.path == "message/custom/send"
                   and call.openid == openid)

    def delay(self, seconds: float, times: int | None = 1, *, path: str | None = None) -> None:
        """Hold the next ``times`` matching requests for ``seconds`` before answering."""
        self._delays.append(_Hook(times, path, seconds))

    def expire_tokens(self) -> None:
        """Every token handed out so far now answers 42001."""
        moment = self._now()
        self.tokens = dict.fromkeys(self.tokens, moment)
        self.stable = None

    def set_user(self, openid: str, *, nickname: str | None = None,
                 subscribed: bool = True) -> None:
        """Give a follower a nickname, or mark them as unfollowed (sends answer 43004)."""
        if subscribed:
            self.unfollowed.discard(openid)
            self.users[openid] = {"nickname": nickname} if nickname is not None else {}
        else:
            self.unfollowed.add(openid)
            self.users.pop(openid, None)

    def calls_to(self, path: str) -> int:
        return sum(1 for call in self.calls if call.path == path)

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the fake is not listening; call start() first")
        return f"http://127.0.0.1:{self.port}/cgi-bin/"

    # -- serving -----------------------------------------------------------------------

    def app(self) -> tornado.web.Application:
        return tornado.web.Application([
            (r"/cgi-bin/(token|stable_token|message/custom/send|user/info|menu/create|menu/get)",
             _ApiHandler,
             {"fake": self}),
            (r"/_fake/(\w+)", _HookHandler, {"fake": self}),
        ], log_function=_log_request)

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Listen (port 0: a free one) in the running event loop; returns base_url."""
        sockets = bind_sockets(port, host, family=socket.AF_INET)
        self.port = sockets[0].getsockname()[1]
        self._stopping = asyncio.Event()
        self.server = HTTPServer(self.app())
        self.server.add_sockets(sockets)
        return self.base_url

    async def stop(self) -> None:
        """Stop listening, release delayed requests at once and drop connections."""
        if self.server is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        self.server.stop()
        await self.server.close_all_connections()
        self.server = None

    async def _wait(self, seconds: float) -> None:
        # Delayed answers end early when the fake stops, so that no handler is still
        # sleeping when the test's event loop closes.
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    # -- behaviour ---------------------------------------------------------------------

    def _take(self, hooks: list[_Hook], path: str, *, default_api_only: bool,
              openid: str = "") -> _Hook | None:
        for hook in hooks:
            if hook.applies(path, default_api_only=default_api_only, openid=openid):
                if hook.remaining is not None:
                    hook.remaining -= 1
                return hook
        return None

    def _new_token(self) -> str:
        token = "FAKE_" + secrets.token_urlsafe(48)
        self.tokens[token] = self._now() + self.expires_in
        self.issued.append(token)
        return token

    def _issue(self, appid: str | None, secret: str | None) -> dict[str, Any]:
        if not appid:
            return _err(41002)
        if appid != self.appid:
            return _err(40013)
        if not secret:
            return _err(41004)
        if secret != self.secret:
            return _err(40125)
        return {}

    def token(self, query: dict[str, str]) -> dict[str, Any]:
        if query.get("grant_type") != "client_credential":
            return _err(40002)
        refused = self._issue(query.get("appid"), query.get("secret"))
        if refused:
            return refused
        self.token_fetches += 1
        moment = self._now()
        for old, expiry in self.tokens.items():
            if old != self.stable:
                self.tokens[old] = min(expiry, moment + OLD_TOKEN_GRACE_S)
        return {"access_token": self._new_token(), "expires_in": self.expires_in}

    def stable_token(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("grant_type") != "client_credential":
            return _err(40002)
        refused = self._issue(body.get("appid"), body.get("secret"))
        if refused:
            return refused
        self.token_fetches += 1
        moment = self._now()
        current = self.stable
        if body.get("force_refresh") or current is None or self.tokens[current] <= moment:
            if current is not None:
                self.tokens[current] = min(self.tokens[current], moment + OLD_TOKEN_GRACE_S)
            current = self.stable = self._new_token()
        return {"access_token": current, "expires_in": int(self.tokens[current] - moment)}

    def check_token(self, token: str | None) -> int:
        if not token:
            return 41001
        expiry = self.tokens.get(token)
        if expiry is None:
            return 40001
        return 42001 if self._now() >= expiry else 0

    def send(self, body: bytes) -> dict[str, Any]:
        if not body:
            return _err(44002)
        try:
            message = json.loads(body.decode("utf-8"))
            openid, msgtype = message["touser"], message["msgtype"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return _err(47001)
        if not isinstance(openid, str) or not _OPENID.fullmatch(openid):
            return _err(40003)
        if msgtype != "text":
            return _err(40008)
        text = message.get("text")
        if not isinstance(text, dict) or not isinstance(text.get("content"), str):
            return _err(47001)
        if openid in self.unfollowed:
            return _err(43004)
        if self.kind == "subscription":
            return _err(48001)
        if self.window:
            wrote = self.wrote.get(openid)
            if wrote is None:
                return _err(45015)
            seconds, allowance = WINDOWS[wrote[0]]
            if self._now() - wrote[1] >= seconds:
                return _err(45015)
            if self.since_wrote.get(openid, 0) >= allowance:
                return _err(45047)
            self.since_wrote[openid] = self.since_wrote.get(openid, 0) + 1
        self.sent.append(SentMessage(openid, text["content"], msgtype, body))
        return {"errcode": 0, "errmsg": "ok"}

    def create_menu(self, body: bytes) -> dict[str, Any]:
        try:
            menu = json.loads(body.decode("utf-8"))
            buttons = menu["button"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return _err(47001)
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return _err(40016)
        for button in buttons:
            if not isinstance(button, dict):
                return _err(47001)
            subs = button.get("sub_button")
            if subs:
                if not isinstance(subs, list) or len(subs) > 5:
                    return _err(40016)
                if any(not isinstance(sub, dict) for sub in subs):
                    return _err(47001)
                errcode = _check_button(button, 16, needs_type=False) or next(
                    (e for e in (_check_button(sub, 60) for sub in subs) if e), 0)
            else:
                errcode = _check_button(button, 16)
            if errcode:
                return _err(errcode)
        self.menu = {"button": buttons}
        return {"errcode": 0, "errmsg": "ok"}

    def get_menu(self) -> dict[str, Any]:
        if self.menu is None:
            return _err(46003)
        return {"menu": self.menu}

    def user_info(self, query: dict[str, str]) -> dict[str, Any]:
        openid = query.get("openid", "")
        if not _OPENID.fullmatch(openid):
            return _err(40003)
        if openid in self.unfollowed:
            return {"subscribe": 0, "openid": openid}
        info: dict[str, Any] = {
            "subscribe": 1, "openid": openid, "language": query.get("lang", "zh_CN"),
            "subscribe_time": 1700000000, "remark": "", "groupid": 0, "tagid_list": [],
            "subscribe_scene": "ADD_SCENE_QR_CODE", "qr_scene": 0, "qr_scene_str": "",
        }
        info.update(self.users.get(openid, {}))
        return info


def _check_button(button: dict[str, Any], name_bytes: int, *, needs_type: bool = True) -> int:
    """The errcode WeChat gives one button (0: fine)."""
    name = button.get("name")
    if not isinstance(name, str) or not name or len(name.encode()) > name_bytes:
        return 40018
    if not needs_type:
        return 0
    kind = button.get("type")
    if kind not in _BUTTON_TYPES:
        return 40017
    if kind in _KEYED:
        key = button.get("key")
        if not isinstance(key, str) or not key or len(key.encode()) > 128:
            return 40019
    return 0


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Tornado's access log would print the query string, which carries the access token
    # and the secret; the tests that check our logs for them would find the fake's.
    access_log.debug("%d %s %s", handler.get_status(), handler.request.method,
                     handler.request.path)


def _addressee(body: bytes) -> str:
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ""
    touser = message.get("touser") if isinstance(message, dict) else None
    return touser if isinstance(touser, str) else ""


def _err(errcode: int, errmsg: str | None = None) -> dict[str, Any]:
    # The real errmsg ends with a request id; callers must not parse it.
    text = errmsg or ERRMSG.get(errcode, "error")
    return {"errcode": errcode, "errmsg": f"{text} rid: {secrets.token_hex(4)}"}


class _FakeHandler(tornado.web.RequestHandler):
    def initialize(self, fake: FakeMpApi) -> None:
        self.fake = fake

    def check_xsrf_cookie(self) -> None:
        """Machine-to-machine endpoints: no cookies, no XSRF."""

    def query(self) -> dict[str, str]:
        return {k: self.get_query_argument(k) for k in self.request.query_arguments}

    def json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "body is not JSON") from None
        if not isinstance(data, dict):
            raise tornado.web.HTTPError(400, "body is not a JSON object")
        return data

    def answer(self, data: dict[str, Any]) -> None:
        # WeChat answers JSON as text/plain; the client must not depend on the type.
        self.set_header("Content-Type", "text/plain")
        self.finish(json.dumps(data, ensure_ascii=False))


class _ApiHandler(_FakeHandler):
    async def get(self, path: str) -> None:
        await self.handle("GET", path)

    async def post(self, path: str) -> None:
        await self.handle("POST", path)

    async def handle(self, method: str, path: str) -> None:
        fake = self.fake
        delay = fake._take(fake._delays, path, default_api_only=False)
        if delay is not None:
            await fake._wait(float(delay.value))
        expected = {"token": "GET", "stable_token": "POST", "user/info": "GET",
                    "message/custom/send": "POST", "menu/create": "POST",
                    "menu/get": "GET"}[path]
        if method != expected:
            raise tornado.web.HTTPError(405)
        openid = _addressee(self.request.body) if path == "message/custom/send" else ""
        failure = fake._take(fake._failures, path, default_api_only=True, openid=openid)
        if failure is not None:
            answer = _err(int(failure.value), failure.errmsg)
        elif path == "token":
            answer = fake.token(self.query())
        elif path == "stable_token":
            answer = fake.stable_token(self.json_body())
        else:
            errcode = fake.check_token(self.get_query_argument("access_token", None))
            if errcode:
                answer = _err(errcode)
            elif path == "user/info":
                answer = fake.user_info(self.query())
            elif path == "menu/create":
                answer = fake.create_menu(self.request.body)
            elif path == "menu/get":
                answer = fake.get_menu()
            else:
                answer = fake.send(self.request.body)
        if path not in TOKEN_PATHS:
            fake.calls.append(Call(path, int(answer.get("errcode", 0)), openid))
        self.answer(answer)


class _HookHandler(_FakeHandler):
    def get(self, hook: str) -> None:
        fake = self.fake
        if hook == "sent":
            self.answer({"sent": [{"openid": m.openid, "content": m.content,
                                   "msgtype": m.msgtype} for m in fake.sent]})
        elif hook == "stats":
            self.answer({"token_fetches": fake.token_fetches, "kind": fake.kind,
                         "calls": [{"path": c.path, "errcode": c.errcode}
                                   for c in fake.calls]})
        else:
            raise tornado.web.HTTPError(404)

    def post(self, hook: str) -> None:
        fake = self.fake
        body = self.json_body()
        try:
            if hook == "fail":
                fake.fail_next(int(body["errcode"]), _times(body), path=body.get("path"),
                               errmsg=body.get("errmsg"), openid=body.get("openid"))
            elif hook == "kind":
                if body["kind"] not in KINDS:
                    raise ValueError(f"kind must be one of {sorted(KINDS)}")
                fake.kind = str(body["kind"])
            elif hook == "wrote":
                fake.user_wrote(str(body["openid"]), str(body.get("kind", "m")))
            elif hook == "delay":
                fake.delay(float(body["seconds"]), _times(body), path=body.get("path"))
            elif hook == "expire_tokens":
                fake.expire_tokens()
            elif hook == "user":
                fake.set_user(str(body["openid"]), nickname=body.get("nickname"),
                              subscribed=bool(body.get("subscribed", True)))
            elif hook == "reset":
                fake.reset()
            else:
                raise tornado.web.HTTPError(404)
        except (KeyError, TypeError, ValueError) as exc:
            raise tornado.web.HTTPError(400, f"bad hook arguments: {exc!r}") from None
        self.answer({"ok": True})


def _times(body: dict[str, Any]) -> int | None:
    times = body.get("times", 1)
    return None if times is None else int(times)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeMpApi(args.appid, args.secret, expires_in=args.expires_in, kind=args.kind)
    await serve_until_signalled(lambda: fake.start(args.port, args.host), fake.stop,
                                "FAKE_MPAPI_BASE")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.mpapi",
                                     description="Fake WeChat official-account API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--appid", default="wxfake0123456789ab")
    parser.add_argument("--secret", default="fake-app-secret")
    parser.add_argument("--expires-in", type=int, default=7200)
    parser.add_argument("--kind", choices=sorted(KINDS), default="service",
                        help="subscription: every customer-service message answers 48001")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
