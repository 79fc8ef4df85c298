"""Notices that reach every owner: the fake official-account API answers as each account
kind does (48001, 45015, 45047, its quota), the stores are real, and what the owner sees
is the passive reply of their next push."""

from __future__ import annotations

import logging
import re
import time

import pytest

from config import Settings
from mpbot.commands import TABLE
from mpbot.hints import received
from mpbot.mailbox import HEADER
from mpbot.mpapi import MpApi
from mpbot.notifier import SEND_RETRY_S, Notifier
from mpbot.simulator import Simulator
from sandbox.mpapi import FakeMpApi
from sandbox.webwx import FakeAccount
from store import Stores
from store.bots import QrStore
from tests.conftest import start_web
from tests.e2e.botrig import OWNER, Rig
from tests.util import until
from wxreply.app import build_app

OTHER = "o-other-00000000000000000002"
SEND = "message/custom/send"


async def _pending(rig: Rig, openid: str = OWNER) -> int:
    return len(await rig.stores.mailbox.peek(openid))


async def _pending_is(rig: Rig, count: int) -> bool:
    return await _pending(rig) == count


async def _login_as(rig: Rig, account: FakeAccount, openid: str) -> None:
    reply = await rig.chat("登录", openid)
    assert "/qr/" in reply, reply
    pending = await until(lambda: rig.webwx.pending_logins())
    rig.webwx.scan(pending[-1]["uuid"], account)
    rig.webwx.confirm(pending[-1]["uuid"])
    user = await rig.stores.users.by_openid(openid)
    assert user is not None
    await until(lambda: _state_is(rig, user.uid, "online"))


async def _state_is(rig: Rig, uid: int, state: str) -> bool:
    return await rig.state(uid) == state


async def _publish(rig: Rig, openid: str, **event: object) -> None:
    """An event as a worker publishes it (store.bus, the same stream and fields)."""
    user, _ = await rig.stores.users.get_or_create(openid)
    await rig.stores.bus.publish({"uid": user.uid, "pid": "", "origin": "request", **event})


async def test_personal_subscription_account_gets_notices_in_its_next_replies(rig: Rig) -> None:
    rig.mp.kind = "subscription"  # every customer-service message answers 48001
    account = rig.webwx.add_account("小林", friends=1)
    await rig.chat("添加 你好 稍后回复")
    await rig.login(account)
    await until(lambda: _pending(rig))
    reply = await rig.chat("列表")
    assert reply.startswith(f"{HEADER}\n· 今天 ")
    assert "你的微信「小林」已登录，自动回复开始工作。" in reply
    assert reply.endswith("01 你好 → 稍后回复")
    assert "已登录" not in await rig.chat("列表")  # once

    rig.webwx.kick(account, "1101")
    await until(lambda: rig.state_is("logged_out"))
    await until(lambda: _pending(rig))
    # 帮助 is normally answered from the cache in the claim itself: the mailbox holds
    # that shortcut back, so the notice rides on it too.
    reply = await rig.chat("帮助")
    assert "你的微信「小林」的网页版登录已结束" in reply
    assert reply.endswith(TABLE.help_text())
    assert await rig.chat("帮助") == TABLE.help_text()
    status = await rig.chat("状态")
    assert "机器人：已退出（发送「登录」重新登录）" in status
    assert "原因：在手机上退出了网页版微信，或在别处登录了网页版" in status
    assert re.search(r"最近变化：今天 \d\d:\d\d（刚刚）", status)
    assert "下一步：发送「登录」重新登录" in status
    assert rig.mp.sent == []
    # One 48001, then the notifier stopped asking.
    assert [c.errcode for c in rig.mp.calls if c.path == SEND] == [48001]


async def test_45015_for_one_user_sends_the_others_as_usual(rig: Rig) -> None:
    rig.mp.fail_next(45015, times=None, path=SEND, openid=OWNER)
    await _login_as(rig, rig.webwx.add_account("阿甲"), OWNER)
    await _login_as(rig, rig.webwx.add_account("阿乙"), OTHER)
    await until(lambda: [m for m in rig.mp.sent if m.openid == OTHER and "已登录" in m.content])
    await until(lambda: _pending(rig, OWNER))
    status = await rig.chat("状态")
    assert "你的微信「阿甲」已登录" in status
    assert "机器人：在线（阿甲）" in status
    assert HEADER not in await rig.chat("状态", OTHER)
    assert await _pending(rig, OTHER) == 0
    assert [m for m in rig.mp.sent if m.openid == OWNER] == []


async def test_a_working_api_sends_once_and_replies_do_not_repeat_it(rig: Rig) -> None:
    await rig.login(rig.webwx.add_account("阿丙"))
    await until(lambda: [n for n in rig.notices() if "已登录" in n])
    for text in ("列表", "状态", "帮助", "你好"):
        assert HEADER not in await rig.chat(text)
    assert await _pending(rig) == 0
    assert len([n for n in rig.notices() if "已登录" in n]) == 1


async def test_many_notices_one_reply_and_wechat_retries_get_the_same(rig: Rig) -> None:
    rig.mp.kind = "subscription"
    contacts = [f"联系人{i:02d}" + "很长的备注名字" * 4 for i in range(15)]
    await _publish(rig, OWNER, type="state", state="online", nickname="阿丁")
    for name in contacts:
        await _publish(rig, OWNER, type="loop_guard", contact=name)
    await _publish(rig, OWNER, type="send_failures", count=3)
    await until(lambda: _pending_is(rig, 17), timeout=15)

    push = rig.sim.prepare(OWNER, "列表")
    deliveries = await rig.sim.send_times(push, 4)  # WeChat's retries, all at once
    texts = {d.text for d in deliveries}
    assert len(texts) == 1, "every delivery of one push gets the one stored reply"
    (reply,) = texts
    assert len(reply.encode()) <= 2048
    lines = reply.splitlines()
    assert lines[0] == HEADER
    assert "你的微信「阿丁」已登录" in lines[1]  # the state first
    shown = [name for name in contacts if name in reply]
    summary = re.search(r"另有 (\d+) 条较早的通知", reply)
    assert summary is not None
    # Nothing lost: every notice is shown or counted in the summary, once.
    assert 1 + len(shown) + ("没有发送成功" in reply) + int(summary.group(1)) == 17
    assert all(reply.count(name) == 1 for name in shown)
    assert reply.endswith("你还没有规则。添加一条试试：添加 苹果 梨子")
    assert await _pending(rig) == 0
    later = await rig.chat("列表")
    assert later == "你还没有规则。添加一条试试：添加 苹果 梨子"


async def test_quota_is_counted_and_the_rest_waits_in_the_mailbox(rig: Rig) -> None:
    rig.mp.window = True  # the fake enforces 45015 and 45047 itself
    await rig.chat("列表")
    rig.mp.user_wrote(OWNER)
    for i in range(6):
        await _publish(rig, OWNER, type="loop_guard", contact=f"朋友{i}")
    await until(lambda: len(rig.notices()) >= 4)
    await until(lambda: _pending_is(rig, 2))
    assert len(rig.notices()) == 4  # 5 allowed; one kept in reserve
    assert {c.errcode for c in rig.mp.calls if c.path == SEND} == {0}  # never 45047
    reply = await rig.chat("列表")
    assert reply.count("提醒：和「朋友") == 2


async def test_a_resume_that_needs_a_scan_gets_a_fresh_link(rig: Rig) -> None:
    rig.mp.kind = "subscription"
    stale = "S" * 24
    await _publish(rig, OWNER, type="state", state="waiting_scan", origin="resume", pid=stale)
    await until(lambda: _pending_is(rig, 1))
    # 退出 must not start the login it ends, nor show the link that expired meanwhile.
    reply = await rig.chat("退出")
    assert "自动回复没能恢复登录，已停止。" in reply
    assert "/qr/" not in reply
    assert rig.webwx.pending_logins() == []

    await _publish(rig, OWNER, type="state", state="waiting_scan", origin="resume", pid=stale)
    await _publish(rig, OWNER, type="state", state="expired", origin="resume", pid=stale)
    await until(lambda: _pending_is(rig, 1))
    reply = await rig.chat("帮助")
    match = re.search(rf"{re.escape(rig.base_url)}/qr/([A-Za-z0-9_-]{{24}})", reply)
    assert match is not None, reply
    assert "需要重新扫码" in reply
    pid = match.group(1)
    assert pid != stale
    view = await QrStore(rig.stores.kv).view(pid)
    assert view is not None
    assert view.expires_at > time.time() + 30
    await until(lambda: rig.webwx.pending_logins())  # a worker is showing that QR


async def test_no_credentials_and_an_unreachable_api_fall_back_to_the_mailbox(
        stores: Stores, fake_mpapi: FakeMpApi, mpapi: MpApi) -> None:
    user, _ = await stores.users.get_or_create(OWNER)
    event = {"uid": user.uid, "type": "send_failures", "count": 3}
    none = Notifier(stores, MpApi(fake_mpapi.base_url, "", "", stores.kv), "http://x",
                    consumer="n1")
    assert await none.deliver(OWNER, event, "提醒", time.time(), 1.0, "1-0")
    assert fake_mpapi.calls == []
    assert [n.slot for n in await stores.mailbox.peek(OWNER)] == ["send_failures"]

    await stores.mailbox.supersede(OWNER, "send_failures", time.time() + 1)
    await fake_mpapi.stop()  # connection refused from now on
    notifier = Notifier(stores, mpapi, "http://x", consumer="n2")
    # Within the retry time it stays on the bus for another try ...
    assert not await notifier.deliver(OWNER, event, "提醒", time.time(), 5.0, "2-0")
    assert await stores.mailbox.peek(OWNER) == []
    # ... past it, the mailbox keeps it.
    assert await notifier.deliver(OWNER, event, "提醒", time.time(), SEND_RETRY_S + 1, "3-0")
    assert [n.slot for n in await stores.mailbox.peek(OWNER)] == ["send_failures"]


async def test_whatever_the_owner_sends_carries_the_notices(rig: Rig) -> None:
    rig.mp.kind = "subscription"

    async def one_pending(contact: str) -> None:
        await _publish(rig, OWNER, type="loop_guard", contact=contact)
        await until(lambda: _pending_is(rig, 1))

    await one_pending("图片")
    picture = await rig.sim.post(rig.sim.prepare(OWNER, msg_type="image"))
    assert "提醒：和「图片」" in picture.text
    assert picture.text.endswith(received("image"))

    await one_pending("菜单")
    # A VIEW click opens a web page: WeChat shows no reply to it, so nothing is taken.
    view = await rig.sim.post(rig.sim.prepare(OWNER, event="VIEW", event_key="https://x.cn"))
    assert view.text == ""
    assert await _pending(rig) == 1
    click = await rig.sim.post(rig.sim.prepare(OWNER, event="CLICK", event_key="帮助"))
    assert "提醒：和「菜单」" in click.text
    assert click.text.endswith(TABLE.help_text())

    await one_pending("关注")
    follow = await rig.sim.post(rig.sim.prepare(OWNER, event="subscribe"))
    assert "提醒：和「关注」" in follow.text
    assert "欢迎回来" in follow.text
    assert await _pending(rig) == 0


async def test_a_hostile_contact_name_stays_inside_a_valid_reply(rig: Rig) -> None:
    rig.mp.kind = "subscription"
    name = "]]></Content><MsgType>evil</MsgType><![CDATA[" + "名" * 3000
    await _publish(rig, OWNER, type="loop_guard", contact=name)
    await until(lambda: _pending_is(rig, 1))
    delivery = await rig.sim.post(rig.sim.prepare(OWNER, "列表"))
    assert delivery.status == 200
    assert "提醒：和「]]></Content><MsgType>evil</MsgType>" in delivery.text  # as text
    assert len(delivery.text.encode()) <= 2048
    assert delivery.text.endswith("你还没有规则。添加一条试试：添加 苹果 梨子")


async def test_a_push_in_the_unexpected_mode_logs_the_sandbox_hint(
        stores: Stores, safe_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    web, server = await start_web(build_app(safe_settings, stores))
    try:
        plain = Simulator(f"{web.base_url}/wechat", safe_settings.mp_token)
        with caplog.at_level(logging.INFO, logger="wxreply.mpbot"):
            assert (await plain.send("帮助", OWNER)).status == 200  # accepted, and logged
    finally:
        server.stop()
    assert "WeChat sends plaintext-mode pushes; this server expects safe mode" in caplog.text
    assert "(a sandbox account, 测试号" in caplog.text
    assert "leave WXR_MP_AES_KEY empty" in caplog.text
