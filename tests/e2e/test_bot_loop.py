"""The whole loop: 登录 → QR page → scan → online notice → a friend is answered.

Unmodified itchat (in a worker, on session threads or on its loop) against the fake web WeChat, the
official-account API fake for notices, real Redis and MongoDB-wire servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.e2e.botrig import OWNER, Rig
from tests.util import until


@pytest.fixture(params=["thread", "async"])
def bot_driver(request: pytest.FixtureRequest) -> str:
    """The whole loop on both drivers (WXR_BOT_DRIVER, tests/e2e/botrig.py)."""
    return str(request.param)


async def test_the_whole_loop(rig: Rig) -> None:
    account = rig.webwx.add_account("小明", friends=3)
    assert await rig.chat("添加 你好 我在开会，稍后回复") == "已添加 01：你好 → 我在开会，稍后回复"

    reply = await rig.chat("登录")
    assert "另一台设备" in reply
    pid = re.search(r"/qr/([A-Za-z0-9_-]{24})", reply).group(1)  # type: ignore[union-attr]
    client = AsyncHTTPClient()
    page = await client.fetch(f"{rig.base_url}/qr/{pid}")
    assert f'src="/static/qrimages/{pid}.png"'.encode() in page.body
    assert "另一台设备".encode() in page.body
    status = await until(lambda: _status(client, rig.base_url, pid, "waiting_scan"))
    assert status["label"] == "等待扫码"
    png = await client.fetch(f"{rig.base_url}/static/qrimages/{pid}.png")
    assert png.headers["Content-Type"] == "image/png"
    assert png.body.startswith(b"\x89PNG\r\n\x1a\n")

    (pending,) = rig.webwx.pending_logins()
    rig.webwx.scan(pending["uuid"], account)
    assert (await until(lambda: _status(client, rig.base_url, pid, "scanned")))["label"] == (
        "已扫码，请在手机上确认")
    rig.webwx.confirm(pending["uuid"])
    online = await until(lambda: _status(client, rig.base_url, pid, "online"))
    assert online["label"] == "已登录：小明"
    notice = await until(lambda: [n for n in rig.notices() if "已登录" in n])
    assert notice == [
        "你的微信「小明」已登录，自动回复开始工作。\n发送「状态」查看，发送「退出」随时下线。"]

    friend = account.friend_name(0)
    started = time.monotonic()
    rig.webwx.push_friend_text(account, 0, "你好")
    assert await until(lambda: rig.replies_to(account, friend), timeout=2.0) == [
        "我在开会，稍后回复"]
    assert time.monotonic() - started < 2.0

    status_text = await rig.chat("状态")
    assert "机器人：在线（小明）" in status_text
    assert "今日已回复：1 次" in status_text


async def _status(client: AsyncHTTPClient, base: str, pid: str, state: str) -> dict | None:  # type: ignore[type-arg]
    import json

    response = await client.fetch(f"{base}/qr/{pid}/status")
    body = json.loads(response.body)
    return body if body["state"] == state else None


async def test_rule_changes_and_on_off_take_effect_at_once(rig: Rig) -> None:
    account = rig.webwx.add_account("小红", friends=2)
    await rig.chat("添加 价格 十元")
    await rig.login(account)
    friend = account.friend_name(0)
    rig.webwx.push_friend_text(account, 0, "价格")
    await until(lambda: rig.replies_to(account, friend) == ["十元"])

    assert await rig.chat("修改 01 二十元") == "已修改 01：价格 → 二十元"
    rig.webwx.push_friend_text(account, 0, "价格")
    await until(lambda: rig.replies_to(account, friend) == ["十元", "二十元"])

    await rig.chat("关闭")
    rig.webwx.push_friend_text(account, 0, "价格")
    await asyncio.sleep(1.5)
    assert rig.replies_to(account, friend) == ["十元", "二十元"]

    await rig.chat("开启")
    rig.webwx.push_friend_text(account, 0, "价格")
    await until(lambda: rig.replies_to(account, friend) == ["十元", "二十元", "二十元"])


async def test_priorities_and_who_never_gets_a_reply(rig: Rig) -> None:
    account = rig.webwx.add_account("小刚", friends=2, groups=1, members=3, mps=1)
    await rig.chat("添加 *价格 请看菜单")
    await rig.chat("添加 *价格表 菜单在朋友圈")
    await rig.chat("添加 价格 十元")
    await rig.login(account)
    friend = account.friend_name(0)

    rig.webwx.push_friend_text(account, 0, "价格")            # exact beats contains
    rig.webwx.push_friend_text(account, 0, "请问价格表呢")    # longer contains wins
    rig.webwx.push_friend_text(account, 0, "价格多少")        # contains
    await until(lambda: len(rig.replies_to(account, friend)) == 3)
    assert sorted(rig.replies_to(account, friend)) == sorted(["十元", "菜单在朋友圈", "请看菜单"])

    rig.webwx.push_self_text(account, 1, "价格")             # the owner, by hand
    rig.webwx.push_self_text(account, "filehelper", "价格")  # to filehelper
    rig.webwx.push_mp_text(account, 0, "价格")               # an official account
    rig.webwx.push_group_text(account, 0, 0, "价格")         # group, not @-mentioned
    rig.webwx.push_group_text(account, 0, 1, "价格", mention_self=True)  # group replies off
    await asyncio.sleep(1.5)
    assert len(rig.webwx.sent(account)) == 3


async def test_refused_web_login_1203(rig: Rig) -> None:
    account = rig.webwx.add_account("新号", refuse_web_login=True)
    reply = await rig.chat("登录")
    assert "/qr/" in reply
    pending = await until(lambda: rig.webwx.pending_logins())
    rig.webwx.scan(pending[0]["uuid"], account)
    rig.webwx.refuse(pending[0]["uuid"])
    await until(lambda: rig.state_is("refused"))
    notice = await until(lambda: [n for n in rig.notices() if "1203" in n])
    assert notice[0].startswith("微信拒绝了这个账号的网页版登录（错误 1203）")
    assert "不允许登录网页版微信" in notice[0]
    assert "机器人：微信拒绝了网页登录（发送「登录」重试）" in await rig.chat("状态")


async def test_kicked_1101_is_logged_out(rig: Rig) -> None:
    account = rig.webwx.add_account("小李")
    await rig.login(account)
    rig.webwx.kick(account, "1101")
    await until(lambda: rig.state_is("logged_out"))
    notice = await until(lambda: [n for n in rig.notices() if "网页版登录已结束" in n])
    assert notice[0].startswith("你的微信「小李」的网页版登录已结束：在手机上退出了网页版")
    assert "已退出" in await rig.chat("状态")


async def test_qr_expiry_is_told(rig: Rig) -> None:
    rig.settings = dataclasses.replace(rig.settings, qr_ttl=2)
    # The web tier decides the deadline: rebuild its bot service with the short TTL.
    from wxreply.app import build_bot_service

    service = build_bot_service(rig.settings, rig.stores)
    user, _ = await rig.stores.users.get_or_create(OWNER)
    ticket = await service.login(user)
    await until(lambda: rig.state_is("expired"), timeout=15)
    notice = await until(lambda: [n for n in rig.notices() if "过期" in n])
    assert notice == ["登录二维码已过期，自动回复没有启动。发送「登录」获取新的二维码。"]
    page = await AsyncHTTPClient().fetch(f"{rig.base_url}/qr/{ticket.pid}/status")
    assert b'"state": "expired"' in page.body


async def test_logout_command(rig: Rig) -> None:
    account = rig.webwx.add_account("小王")
    await rig.login(account)
    assert await rig.chat("退出") == "好的，正在退出登录，自动回复随后停止。"
    await until(lambda: rig.state_is("logged_out"))
    await until(lambda: rig.webwx.logouts)
    assert rig.webwx.logouts[0].uin == account.uin
    assert not rig.webwx.session_valid(account)
    assert await rig.chat("退出") == "你的微信没有在线，不需要退出。"
    record = await rig.stores.bots.get(await rig.uid())
    assert record is not None
    assert record.login_data is None


async def test_login_twice_gives_the_same_link_and_online_says_so(rig: Rig) -> None:
    account = rig.webwx.add_account("小周")
    first = await rig.chat("登录")
    second = await rig.chat("登录")
    assert re.findall(r"/qr/\S+", first) == re.findall(r"/qr/\S+", second)
    pending = await until(lambda: rig.webwx.pending_logins())
    rig.webwx.scan(pending[-1]["uuid"], account)
    rig.webwx.confirm(pending[-1]["uuid"])
    await until(lambda: rig.state_is("online"))
    assert await rig.chat("登录") == "你的微信「小周」已经在线。要换一个微信号，先发送「退出」。"


async def test_restart_resumes_without_a_scan_and_never_answers_twice(rig: Rig) -> None:
    account = rig.webwx.add_account("小陈", friends=2)
    await rig.chat("添加 你好 稍后回复")
    await rig.login(account)
    uid = await rig.uid()
    # The login state as first saved: its sync key predates the message below, like a
    # save that lagged behind when a worker died.
    early = await until(lambda: _login_data(rig, uid))
    friend = account.friend_name(0)
    rig.webwx.push_friend_text(account, 0, "你好")
    await until(lambda: rig.replies_to(account, friend) == ["稍后回复"])

    await rig.stop_worker()
    record = await rig.stores.bots.get(uid)
    assert record is not None
    assert record.state == "online"
    assert record.login_data
    assert rig.webwx.session_valid(account)  # stopping is not logging out
    await rig.stores.bots.save_login_data(uid, early)

    pendings_before = len(rig.webwx.pending_logins())
    rig.start_worker("w-second")
    await until(lambda: rig.worker is not None and uid in rig.worker.sessions)
    await until(lambda: rig.worker.sessions[uid].state == "online")  # type: ignore[union-attr]
    assert len(rig.webwx.pending_logins()) == pendings_before  # no new QR, no scan
    rig.webwx.push_friend_text(account, 0, "你好")
    await until(lambda: len(rig.replies_to(account, friend)) >= 2)
    await asyncio.sleep(1.0)  # time for a duplicate, if there were one
    # The first message was delivered again after the resume, but answered only once.
    assert rig.worker is not None
    assert rig.worker.stats["duplicates"] == 1
    assert rig.replies_to(account, friend) == ["稍后回复", "稍后回复"]
    assert not [n for n in rig.notices() if "已登录" in n][1:]  # no second "online" notice


async def _login_data(rig: Rig, uid: int) -> dict[str, Any] | None:
    record = await rig.stores.bots.get(uid)
    return record.login_data if record else None
