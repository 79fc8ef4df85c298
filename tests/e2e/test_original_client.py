"""A client written only from the original API document (shared/SEED-original-readme.md),
with nothing but ``urllib``: register with the code that the official account's
``验证码`` gives, log in, add / show / update / delete rules, start a QR login, log out,
and get the original codes at every step.

What the original document says and this client therefore does: JSON bodies, the codes
200 / -1 / -2 / -3 / -4 / -5, the session cookie, "每次post请求都需要带csrf_token参数"
(the token comes from the ``csrftoken`` cookie, as Django's did), the rule keys from
``/database/show`` used as ``?id=`` of delete and update, and the QR image at
``/static/qrimages/<pid>.png``.  The blocking ``urllib`` calls run on a thread, so the
server (on this test's event loop) keeps serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil

from config import Settings
from mpbot.simulator import Simulator
from replybot.webwx.driver import ItchatDriver
from replybot.worker import Worker
from sandbox.webwx import FakeWebWx
from store import Stores
from tests.conftest import remember_secret
from tests.util import until
from wxreply.app import build_app

OPENID = "o-original-client-0000000001"
for _secret in ("pwd-12345", "wrong-pwd"):
    remember_secret(_secret)


class OriginalClient:
    """The API as the original document describes it, over urllib and a cookie jar."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/") + "/"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def csrf_token(self) -> str:
        for cookie in self.jar:
            if cookie.name == "csrftoken" and cookie.value:
                return cookie.value
        return ""

    def _open(self, request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
        try:
            with self.opener.open(request, timeout=20) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:  # 401 when not logged in: body is JSON too
            with err:
                return err.code, json.loads(err.read())

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        token = self.csrf_token()
        if token:
            body = {**body, "csrf_token": token}
        request = urllib.request.Request(
            self.base + path, data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json"}, method="POST")
        return self._open(request)

    def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
        data = urllib.parse.urlencode(fields).encode()
        return self._open(urllib.request.Request(self.base + path, data=data, method="POST"))

    def get(self, path: str, **params: str) -> tuple[int, dict[str, Any]]:
        if path.startswith("database/delete"):
            params["csrf_token"] = self.csrf_token()
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return self._open(urllib.request.Request(self.base + path + query))

    def get_raw(self, path: str) -> tuple[int, str, bytes]:
        try:
            with self.opener.open(self.base + path, timeout=20) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.headers.get("Content-Type", ""), err.read()


@dataclasses.dataclass
class Server:
    base_url: str
    simulator: Simulator
    webwx: FakeWebWx


@pytest.fixture
async def server(stores: Stores, settings: Settings,
                 fake_webwx: FakeWebWx) -> AsyncIterator[Server]:
    """wxreply as ``serve`` builds it (product bcrypt cost), with a worker on the fake
    web WeChat so that the QR image really appears."""
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    base_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    settings = dataclasses.replace(settings, public_url=base_url, qr_ttl=60)
    http_server = tornado.httpserver.HTTPServer(build_app(settings, stores), xheaders=True,
                                                max_body_size=1 << 20)
    http_server.add_sockets(sockets)
    stop = asyncio.Event()
    worker = Worker(stores, settings, lambda: ItchatDriver(save_interval=0.2),
                    worker_id="w-original", heartbeat_s=0.3, lease_ms=3000)
    running = asyncio.ensure_future(worker.run(stop))
    try:
        yield Server(base_url, Simulator(f"{base_url}/wechat", settings.mp_token), fake_webwx)
    finally:
        stop.set()
        await running
        http_server.stop()
        await http_server.close_all_connections()


async def test_a_client_from_the_original_document(server: Server) -> None:
    client = OriginalClient(server.base_url)
    call = asyncio.to_thread

    # The code comes from the official account, as the original's last_name did.
    reply = (await server.simulator.send("验证码", OPENID)).text
    code = re.search(r"注册验证码：(\d+-\d{6})", reply)
    assert code is not None, reply

    # 1. 用户注册
    assert (await call(client.post, "account/register", {
        "username": "username", "password": "pwd-12345", "last_name": "000000"}))[1][
        "code"] == -1
    assert await call(client.post, "account/register", {
        "username": "username", "password": "pwd-12345", "last_name": code.group(1)}) == (
        200, {"code": 200, "message": "ok", "data": {"userid": 1000, "username": "username"}})
    other_code = re.search(r"(\d+-\d{6})", (await server.simulator.send(
        "验证码", "o-original-client-0000000002")).text)
    assert other_code is not None
    status, body = await call(client.post, "account/register", {
        "username": "username", "password": "pwd-12345", "last_name": other_code.group(1)})
    assert (status, body["code"]) == (200, -2)

    # 2. 用户登录
    status, body = await call(client.post, "account/login",
                              {"username": "username", "password": "wrong-pwd"})
    assert (status, body) == (200, {"code": -3, "message": "用户名或密码错误"})
    status, body = await call(client.post_form, "account/login",
                              {"username": "username", "password": "pwd-12345"})
    assert (status, body["code"], body["message"]) == (200, 200, "ok")
    assert client.csrf_token() == body["csrf_token"]

    # 5. 添加回复 (several at once)
    assert await call(client.post, "database/add", {"收到内容": "回复内容", "苹果": "樱桃"}) == (
        200, {"code": 200, "message": "ok",
              "data": {"01": {"收到内容": "回复内容"}, "02": {"苹果": "樱桃"}}})
    status, body = await call(client.post, "database/add", {"苹果": "梨子"})
    assert (status, body["code"]) == (200, -2)  # '收到内容'有重复
    status, body = await call(client.post, "database/add", {"香蕉": 3})
    assert (status, body["code"]) == (200, -4)

    # 4. 用户回复数据查看
    status, body = await call(client.get, "database/show")
    assert (status, body) == (200, {"code": 200, "message": "ok", "data": {
        "01": {"收到内容": "回复内容"}, "02": {"苹果": "樱桃"}}})

    # 7. 修改回复: the key from show is the id
    status, body = await call(client.post, "database/update/?id=02", {"苹果": "梨子"})
    assert (status, body["code"]) == (200, 200)
    status, body = await call(client.post, "database/update/?id=99", {"西瓜": "葡萄"})
    assert (status, body["code"]) == (200, -5)

    # 6. 删除回复
    status, body = await call(client.get, "database/delete/", id="01")
    assert (status, body["code"]) == (200, 200)
    status, body = await call(client.get, "database/delete/", id="01")
    assert (status, body["code"]) == (200, -5)
    status, body = await call(client.get, "database/show")
    assert body["data"] == {"02": {"苹果": "梨子"}}

    # 8. 微信二维码地址
    status, body = await call(client.get, "wechat/testlogin")
    assert (status, body["code"]) == (200, 200)
    pid = body["pid"]

    async def png() -> bool:
        got = await call(client.get_raw, f"static/qrimages/{pid}.png")
        return got[0] == 200 and got[1] == "image/png" and got[2].startswith(b"\x89PNG")

    await until(png)

    # 3. 用户退出
    assert await call(client.get, "account/logout") == (200, {"code": 200, "message": "ok"})
    status, body = await call(client.get, "database/show")
    assert (status, body["code"]) == (401, -3)
