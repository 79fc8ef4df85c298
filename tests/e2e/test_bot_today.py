"""The whole bot against today's web WeChat: closures by WeChat and the login guard,
refusals with WeChat's own words, restriction notices, non-text messages, an edited reply
inside the cooldown."""

from __future__ import annotations

import asyncio
import json
import re

from tornado.httpclient import AsyncHTTPClient

from sandbox.webwx.messages import KINDS, SEND_TOO_OFTEN
from tests.e2e.botrig import Rig
from tests.util import until


async def _login_reply(rig: Rig) -> str:
    """The reply to 登录 once the previous one's 5 s start claim has lapsed."""
    async def settled() -> str | None:
        reply = await rig.chat("登录")
        return None if reply.startswith("正在生成二维码") else reply
    return await until(settled, timeout=15, every=0.5)


async def test_1102_after_login_is_closed_told_plainly_and_login_is_held_back(
        rig: Rig) -> None:
    account = rig.webwx.add_account("小周")
    await rig.login(account)
    rig.webwx.kick(account, "1102")  # WeChat closes the fresh web session
    await until(lambda: rig.state_is("closed"))
    notice = await until(lambda: [n for n in rig.notices() if "微信关闭了" in n])
    assert "这不是你的操作" in notice[0]
    assert "请不要马上重新扫码" in notice[0]
    assert "（北京时间）之前「登录」会被暂缓" in notice[0]
    assert not [n for n in rig.notices() if "在手机上退出" in n]
    record = await rig.stores.bots.get(await rig.uid())
    assert record is not None
    assert record.retry_after > 0

    reply = await _login_reply(rig)
    assert reply.startswith("暂不生成新的二维码：微信刚刚关闭了你的网页版登录")
    assert re.search(r"请在 \d\d-\d\d \d\d:\d\d（北京时间）之后再发送「登录」", reply)
    assert "/qr/" not in reply
    assert len(rig.webwx.pending_logins()) == 0  # no new QR was asked for
    assert "微信关闭了网页登录" in await rig.chat("状态")


async def test_the_login_guard_can_be_switched_off(rig: Rig) -> None:
    await rig.restart_worker(login_guard_s=0)
    account = rig.webwx.add_account("小吴")
    await rig.login(account)
    rig.webwx.kick(account, "1102")
    await until(lambda: rig.state_is("closed"))
    assert "/qr/" in await _login_reply(rig)


async def test_refusals_keep_wechats_words_and_two_in_a_row_hold_login(rig: Rig) -> None:
    account = rig.webwx.add_account("新号")
    for attempt in (1, 2):
        reply = await _login_reply(rig)
        pid = re.search(r"/qr/([A-Za-z0-9_-]{24})", reply)
        assert pid is not None, reply
        pending = await until(lambda: [p for p in rig.webwx.pending_logins()
                                       if p["state"] == "waiting"])
        rig.webwx.scan(pending[0]["uuid"], account)
        rig.webwx.refuse(pending[0]["uuid"], "env")
        await until(lambda: rig.state_is("refused"))
        told = await until(lambda n=attempt: [t for t in rig.notices() if "环境异常" in t][n - 1:])
        assert "微信的提示：当前登录环境异常。" in told[0]
        status = await AsyncHTTPClient().fetch(  # the QR page shows the words too
            f"{rig.base_url}/qr/{pid.group(1)}/status")
        page = json.loads(status.body)
        assert page["state"] == "refused"
        assert "当前登录环境异常" in page["label"]
    assert "（北京时间）之前「登录」会被暂缓" in told[0]  # the second refusal
    reply = await _login_reply(rig)
    assert reply.startswith("暂不生成新的二维码：微信连续拒绝了这个账号的网页版登录")
    assert "微信的提示：当前登录环境异常" in reply


async def test_a_restriction_notice_pauses_replies_and_tells_the_owner_once(
        rig: Rig) -> None:
    account = rig.webwx.add_account("阿乐", friends=3)
    await rig.chat("添加 价格 十元")
    await rig.login(account)
    friend = account.friend_name(0)
    rig.webwx.push_friend_text(account, 0, "价格")
    await until(lambda: rig.replies_to(account, friend) == ["十元"])

    rig.webwx.push_message(account, "too_often", 1)
    await until(lambda: rig.worker is not None and rig.worker.stats["restricted"] == 1)
    told = await until(lambda: [n for n in rig.notices() if "发送消息受限" in n])
    assert f"微信的提示：{SEND_TOO_OFTEN}" in told[0]
    rig.webwx.push_friend_text(account, 2, "价格")
    await until(lambda: rig.worker is not None and rig.worker.stats["held_restricted"] == 1)
    assert rig.replies_to(account, account.friend_name(2)) == []
    rig.webwx.push_message(account, "restricted", "weixin")  # more of the same episode
    await asyncio.sleep(1.0)
    assert len([n for n in rig.notices() if "发送消息受限" in n]) == 1
    assert await rig.state(await rig.uid()) == "online"


async def test_non_text_messages_get_no_reply_and_text_still_does(rig: Rig) -> None:
    account = rig.webwx.add_account("阿图", friends=2)
    await rig.chat("添加 价格 十元")
    await rig.login(account)
    for kind in KINDS:
        if kind not in ("too_often", "restricted"):
            rig.webwx.push_message(account, kind, 0)  # quote and emoji_text read "价格"
    rig.webwx.push_friend_text(account, 1, "价格")
    await until(lambda: rig.replies_to(account, account.friend_name(1)) == ["十元"])
    # The quoted reply reads exactly "价格" but is no text; "价格😄" (emoji_text, a real
    # text) is not the exact keyword: friend 0 gets nothing.
    assert rig.replies_to(account, account.friend_name(0)) == []
    assert await rig.state(await rig.uid()) == "online"


async def test_an_edited_reply_goes_out_inside_the_old_ones_cooldown(rig: Rig) -> None:
    await rig.restart_worker(pace_cooldown_s=600)
    account = rig.webwx.add_account("小美", friends=1)
    await rig.chat("添加 价格 十元")
    await rig.login(account)
    friend = account.friend_name(0)
    rig.webwx.push_friend_text(account, 0, "价格")
    await until(lambda: rig.replies_to(account, friend) == ["十元"])
    rig.webwx.push_friend_text(account, 0, "价格")
    await until(lambda: rig.worker is not None and rig.worker.stats["held_cooldown"] == 1)
    await rig.chat("修改 01 今天特价八元")
    rig.webwx.push_friend_text(account, 0, "价格")
    await until(lambda: rig.replies_to(account, friend) == ["十元", "今天特价八元"])
    rig.webwx.push_friend_text(account, 0, "价格")
    await until(lambda: rig.worker is not None and rig.worker.stats["held_cooldown"] == 2)
    assert rig.replies_to(account, friend) == ["十元", "今天特价八元"]


async def test_a_relogin_with_new_usernames_keeps_rules_cooldown_and_takeover(
        rig: Rig) -> None:
    rig.webwx.set_options(new_names_per_login=True)
    await rig.restart_worker(pace_cooldown_s=600, takeover_pause_s=600)
    account = rig.webwx.add_account("阿新", friends=3)
    await rig.chat("添加 价格 十元")
    await rig.login(account)
    first_names = [account.friend_name(i) for i in range(3)]
    rig.webwx.push_friend_text(account, 0, "价格")
    await until(lambda: rig.replies_to(account, first_names[0]) == ["十元"])
    rig.webwx.push_self_text(account, 1, "我自己来回")  # the owner takes chat 1 over
    await until(lambda: rig.worker is not None and rig.worker.stats["takeovers"] == 1)

    rig.webwx.kick(account, "1101")
    await until(lambda: rig.state_is("logged_out"))
    assert "/qr/" in await _login_reply(rig)
    pending = await until(lambda: [p for p in rig.webwx.pending_logins()
                                   if p["state"] == "waiting"])
    rig.webwx.scan(pending[0]["uuid"], account)
    rig.webwx.confirm(pending[0]["uuid"])
    await until(lambda: rig.state_is("online"))
    second_names = [account.friend_name(i) for i in range(3)]
    assert not set(first_names) & set(second_names)  # every UserName is new

    for i in range(3):
        rig.webwx.push_friend_text(account, i, "价格")
    await until(lambda: rig.replies_to(account, second_names[2]) == ["十元"])  # rules
    await until(lambda: rig.worker is not None and rig.worker.stats["held_cooldown"] == 1
                and rig.worker.stats["held_paused"] == 1)
    assert rig.replies_to(account, second_names[0]) == []  # still in its cooldown
    assert rig.replies_to(account, second_names[1]) == []  # still taken over


async def test_sends_refused_as_restricted_pause_replies_and_tell_once(rig: Rig) -> None:
    account = rig.webwx.add_account("阿限", friends=4)
    await rig.chat("添加 你好 在忙")
    await rig.login(account)
    rig.webwx.fail_sends(account, 1, ret=1205)  # "操作太频繁"
    rig.webwx.push_friend_text(account, 0, "你好")
    told = await until(lambda: [n for n in rig.notices() if "发送消息受限" in n])
    assert "恢复" in told[0]
    rig.webwx.push_friend_text(account, 1, "你好")
    await until(lambda: rig.worker is not None and rig.worker.stats["held_restricted"] == 1)
    assert rig.replies_to(account, account.friend_name(1)) == []
    assert len([n for n in rig.notices() if "发送消息受限" in n]) == 1
