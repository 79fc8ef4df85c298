"""WeChat's login service cannot be reached: the QR page and 状态 say so within seconds
(not after the QR's whole lifetime of "正在生成二维码…"), the worker keeps trying, and the
login goes on as soon as the service answers again."""

from __future__ import annotations

import json
import re
import socket

from tornado.httpclient import AsyncHTTPClient

from mpbot.commands import LOGIN_UNREACHABLE
from replybot.webwx.library import configure_itchat
from tests.e2e.botrig import Rig
from tests.util import until
from web_min.qr import UNREACHABLE


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _label(rig: Rig, pid: str) -> str:
    response = await AsyncHTTPClient().fetch(f"{rig.base_url}/qr/{pid}/status")
    return str(json.loads(response.body)["label"])


async def test_an_unreachable_login_service_is_reported_at_once(rig: Rig) -> None:
    configure_itchat(f"http://127.0.0.1:{_closed_port()}")  # nothing listens there
    try:
        reply = await rig.chat("登录")
        match = re.search(r"/qr/([A-Za-z0-9_-]{24})", reply)
        assert match is not None, reply
        pid = match.group(1)

        async def said() -> bool:
            return await _label(rig, pid) == UNREACHABLE

        await until(said)  # within until's 10 s: seconds, not the QR's 60 s lifetime
        status = await rig.chat("状态")
        assert f"机器人：{LOGIN_UNREACHABLE}" in status
    finally:
        configure_itchat(rig.webwx.base_url)
    # The service is back: the next attempt gets a QR, and the words go away.

    async def back() -> bool:
        return await _label(rig, pid) == "等待扫码"

    await until(back)
    assert "机器人：等待扫码" in await rig.chat("状态")
