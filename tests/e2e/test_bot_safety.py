"""Behaving so that WeChat does not ban the account: pacing in the real loop, the loop
guard, the owner taking over, owner control from filehelper, watchdog, send failures."""

from __future__ import annotations

import asyncio
import time

from replybot.driver import LoginState
from tests.e2e.botrig import NO_PACING, Rig
from tests.util import until


async def test_owner_controls_the_bot_from_filehelper(rig: Rig) -> None:
    account = rig.webwx.add_account("阿强", friends=2)
    await rig.chat("添加 你好 在忙")
    await rig.login(account)
    friend = account.friend_name(0)

    rig.webwx.push_self_text(account, "filehelper", "#off")
    off = ["自动回复已关闭。发送 #on 恢复。"]
    await until(lambda: rig.replies_to(account, "filehelper") == off)
    assert "自动回复：关闭" in await rig.chat("状态")  # the same switch as 关闭
    rig.webwx.push_friend_text(account, 0, "你好")
    await asyncio.sleep(1.0)
    assert rig.replies_to(account, friend) == []

    rig.webwx.push_self_text(account, "filehelper", "＃ON")  # full-width, any case
    await until(lambda: len(rig.replies_to(account, "filehelper")) == 2)
    assert rig.replies_to(account, "filehelper")[1] == "自动回复已开启。"
    rig.webwx.push_friend_text(account, 0, "你好")
    await until(lambda: rig.replies_to(account, friend) == ["在忙"])

    rig.webwx.push_self_text(account, "filehelper", "#status")
    status = await until(lambda: rig.replies_to(account, "filehelper")[2:])
    assert status == ["自动回复：开启\n规则：1 条\n今日已回复：1 次"]
    rig.webwx.push_self_text(account, "filehelper", "买牛奶")  # a note, not a command
    await asyncio.sleep(0.8)
    assert len(rig.replies_to(account, "filehelper")) == 3


async def test_owner_typing_in_a_chat_pauses_it(rig: Rig) -> None:
    await rig.restart_worker(takeover_pause_s=600)
    account = rig.webwx.add_account("阿美", friends=3)
    await rig.chat("添加 你好 在忙")
    await rig.login(account)
    friend0, friend1 = account.friend_name(0), account.friend_name(1)
    rig.webwx.push_self_text(account, 0, "我来回复你")  # the owner, by hand
    await until(lambda: rig.worker is not None and rig.worker.stats["takeovers"] == 1)
    rig.webwx.push_friend_text(account, 0, "你好")
    rig.webwx.push_friend_text(account, 1, "你好")
    await until(lambda: rig.replies_to(account, friend1) == ["在忙"])
    await asyncio.sleep(0.8)
    assert rig.replies_to(account, friend0) == []  # paused: the owner is talking
    assert rig.worker is not None
    assert rig.worker.stats["held_paused"] == 1


async def test_echoes_of_our_own_replies_are_not_a_takeover(rig: Rig) -> None:
    rig.webwx.set_options(echo_sent=True)  # WeChat shows the web client's sends as "self"
    account = rig.webwx.add_account("阿杰", friends=2)
    await rig.chat("添加 *你好 在忙")
    await rig.login(account)
    friend = account.friend_name(0)
    rig.webwx.push_friend_text(account, 0, "你好")
    await until(lambda: rig.replies_to(account, friend) == ["在忙"])
    await asyncio.sleep(0.8)  # the echo arrives and must be recognised
    rig.webwx.push_friend_text(account, 0, "你好呀")
    await until(lambda: rig.replies_to(account, friend) == ["在忙", "在忙"])
    assert rig.worker is not None
    assert rig.worker.stats["takeovers"] == 0


async def test_loop_guard_stops_a_bot_conversation_and_tells_the_owner_once(rig: Rig) -> None:
    await rig.restart_worker(loop_guard_replies=5, pace_cooldown_s=0)
    account = rig.webwx.add_account("阿飞", friends=2)
    await rig.chat("添加 *在吗 我在忙，稍后回复")
    await rig.login(account)
    friend = account.friend_name(0)
    for i in range(8):  # another bot that answers every reply with "在吗"
        rig.webwx.push_friend_text(account, 0, f"在吗 {i}")
        await asyncio.sleep(0.15)
    await until(lambda: rig.worker is not None and rig.worker.stats["held_loop_guard"] == 3)
    assert len(rig.replies_to(account, friend)) == 5
    notice = await until(lambda: [n for n in rig.notices() if "连续触发" in n])
    assert notice == [f"提醒：和「{account.friend_nick(0)}」的对话里自动回复已连续触发多次，"
                      "可能是对方也在自动回复。已暂停对这位联系人的自动回复 10 分钟。"]


async def test_pacing_in_the_loop(rig: Rig) -> None:
    await rig.restart_worker(pace_delay_min_ms=300, pace_delay_max_ms=600, pace_cooldown_s=60)
    account = rig.webwx.add_account("阿星", friends=2)
    await rig.chat("添加 价格 十元")
    await rig.login(account)
    friend = account.friend_name(0)
    started = time.monotonic()
    rig.webwx.push_friend_text(account, 0, "价格")
    await until(lambda: rig.replies_to(account, friend) == ["十元"])
    assert time.monotonic() - started >= 0.3  # a human-like pause before answering
    rig.webwx.push_friend_text(account, 0, "价格")
    await asyncio.sleep(1.5)
    assert rig.replies_to(account, friend) == ["十元"]  # cooldown: once a minute per rule
    assert rig.worker is not None
    assert rig.worker.stats["held_cooldown"] == 1


async def test_repeated_send_failures_tell_the_owner_once(rig: Rig) -> None:
    account = rig.webwx.add_account("阿华", friends=5)
    await rig.chat("添加 你好 在忙")
    await rig.login(account)
    # A plain failure (Ret 1): 1204/1205 mean a restriction, which pauses replies
    # altogether (tests/e2e/test_bot_today.py).
    rig.webwx.fail_sends(account, 5, ret=1)
    for i in range(5):
        rig.webwx.push_friend_text(account, i, "你好")
    await until(lambda: rig.worker is not None and rig.worker.stats["send_failed"] == 5)
    notices = await until(lambda: [n for n in rig.notices() if "没有发送成功" in n])
    await asyncio.sleep(0.5)
    assert len([n for n in rig.notices() if "没有发送成功" in n]) == 1
    assert notices[0].startswith("提醒：最近几条自动回复没有发送成功")
    rig.webwx.push_friend_text(account, 0, "你好")  # sends work again
    await until(lambda: rig.replies_to(account, account.friend_name(0)) == ["在忙"])


async def test_watchdog_recycles_a_silent_session_without_a_scan(rig: Rig) -> None:
    worker = await rig.restart_worker(watchdog_s=1, **NO_PACING)
    worker.heartbeat_s = 0.3
    account = rig.webwx.add_account("阿东", friends=2)
    await rig.chat("添加 你好 在忙")
    await rig.login(account)
    uid = await rig.uid()
    rig.webwx.set_options(hold_sync=5.0)  # the connection goes quiet
    await until(lambda: worker.stats["recycled"] >= 1, timeout=15)
    rig.webwx.set_options(hold_sync=0.4)
    await until(lambda: uid in worker.sessions
                and worker.sessions[uid].state == LoginState.ONLINE, timeout=15)
    assert rig.webwx.pending_logins() == []  # resumed from saved state, no QR
    assert await rig.state(uid) == "online"
    rig.webwx.push_friend_text(account, 0, "你好")
    await until(lambda: rig.replies_to(account, account.friend_name(0)) == ["在忙"])
    # The owner heard nothing of it: only the first "online" notice.
    assert len(rig.notices()) == 1
    assert rig.notices()[0].startswith("你的微信「阿东」已登录")
