"""Where the notifier sends a notice, against the real Redis and the fake official-account
API answering the errcodes: the capability check after 48001, 45047 and the window, old
events, and the account kind."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from mpbot.mpapi import MpApi
from mpbot.notifier import MAX_AGE_S, Notifier
from sandbox.mpapi import FakeMpApi
from store import Stores
from store.mailbox import seen_key

OWNER = "o-routes-0000000000000001"
SEND = "message/custom/send"
EVENT = {"uid": 1000, "type": "send_failures", "count": 3}


def _notifier(stores: Stores, mpapi: MpApi, name: str = "n", kind: str = "auto") -> Notifier:
    return Notifier(stores, mpapi, "http://x", consumer=name, account_kind=kind)


async def _slots(stores: Stores) -> list[str]:
    return [n.slot for n in await stores.mailbox.peek(OWNER)]


async def test_after_48001_one_probe_checks_again_and_logs_it_once(
        stores: Stores, fake_mpapi: FakeMpApi, mpapi: MpApi,
        caplog: pytest.LogCaptureFixture) -> None:
    fake_mpapi.kind = "subscription"
    first, second = _notifier(stores, mpapi, "n1"), _notifier(stores, mpapi, "n2")
    with caplog.at_level(logging.INFO, logger="wxreply.notifier"):
        for i in range(3):
            assert await first.deliver(OWNER, EVENT, "提醒", time.time(), 1.0, f"{i}-0")
            assert await second.deliver(OWNER, EVENT, "提醒", time.time(), 1.0, f"{i}-1")
    assert fake_mpapi.calls_to(SEND) == 1
    assert caplog.text.count("may not send customer-service messages") == 1
    assert await _slots(stores) == ["send_failures"]

    # Six hours later the denial lapses; the account has been verified meanwhile.
    await stores.kv.delete(first._denied_key)
    fake_mpapi.kind = "service"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wxreply.notifier"):
        results = await asyncio.gather(
            first.deliver(OWNER, EVENT, "提醒 A", time.time(), 1.0, "9-0"),
            second.deliver(OWNER, EVENT, "提醒 B", time.time(), 1.0, "9-1"))
    assert results == [True, True]
    # One probe, not one per process.  The other notice waits in the mailbox if it came
    # while the probe was out, or is sent if the probe's answer was already in (both
    # orders happen under gather, depending on the machine): never a second probe.
    assert caplog.text.count("checking again whether the official account") == 1
    sent = [m.content for m in fake_mpapi.sent]  # the refused first call is not here
    assert fake_mpapi.calls_to(SEND) == 1 + len(sent)
    assert 1 <= len(sent) <= 2, sent
    assert set(sent) <= {"提醒 A", "提醒 B"}
    assert len(set(sent)) == len(sent)  # neither notice went out twice
    assert "may send customer-service messages again" in caplog.text
    await first.deliver(OWNER, EVENT, "提醒 C", time.time(), 1.0, "10-0")
    assert [m.content for m in fake_mpapi.sent][-1] == "提醒 C"


async def test_45047_exhausts_the_window_and_the_rest_waits(
        stores: Stores, fake_mpapi: FakeMpApi, mpapi: MpApi) -> None:
    await stores.kv.put(seen_key(OWNER, "m"), str(int(time.time())), 60_000)
    fake_mpapi.fail_next(45047, path=SEND, openid=OWNER)
    notifier = _notifier(stores, mpapi)
    await notifier.deliver(OWNER, EVENT, "提醒", time.time(), 1.0, "1-0")
    loop = {"uid": 1000, "type": "loop_guard", "contact": "阿明"}
    await notifier.deliver(OWNER, loop, "循环", time.time(), 1.0, "2-0")
    assert fake_mpapi.calls_to(SEND) == 1  # the second never asked WeChat
    assert sorted(await _slots(stores)) == ["loop_guard:阿明", "send_failures"]
    # The owner writes again: a new window, and notices go out again.
    await stores.kv.put(seen_key(OWNER, "m"), str(int(time.time()) + 1), 60_000)
    await notifier.deliver(OWNER, loop, "循环 2", time.time(), 1.0, "3-0")
    assert [m.content for m in fake_mpapi.sent] == ["循环 2"]


async def test_45015_closes_the_window_until_the_next_push(
        stores: Stores, fake_mpapi: FakeMpApi, mpapi: MpApi) -> None:
    fake_mpapi.fail_next(45015, path=SEND, openid=OWNER)
    notifier = _notifier(stores, mpapi)
    await notifier.deliver(OWNER, EVENT, "提醒", time.time(), 1.0, "1-0")
    await notifier.deliver(OWNER, EVENT, "提醒", time.time(), 1.0, "2-0")
    assert fake_mpapi.calls_to(SEND) == 1
    window = await stores.mailbox.window(OWNER)
    assert (window.known, window.open) == (True, False)


async def test_old_events_and_subscription_accounts_skip_the_api(
        stores: Stores, fake_mpapi: FakeMpApi, mpapi: MpApi) -> None:
    await _notifier(stores, mpapi).deliver(OWNER, EVENT, "提醒", time.time() - MAX_AGE_S - 5,
                                           MAX_AGE_S + 5, "1-0")
    state = {"uid": 1000, "type": "state", "state": "online"}
    await _notifier(stores, mpapi, kind="subscription").deliver(
        OWNER, state, "已登录", time.time(), 1.0, "2-0")
    assert fake_mpapi.calls == []
    assert sorted(await _slots(stores)) == ["send_failures", "state"]
