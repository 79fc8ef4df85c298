"""``wxreply serve`` as a real process on a personal subscription account (the fake API
answers 48001): notices pending in the mailbox and on the bus survive a restart of serve,
and the owner's next reply after it carries them."""

from __future__ import annotations

from pathlib import Path

from mpbot.mailbox import HEADER
from mpbot.simulator import Simulator
from sandbox.mpapi import FakeMpApi
from sandbox.webwx import FakeWebWx
from store import Stores
from store.embedded import free_port
from tests.conftest import TEST_TOKEN, Servers
from tests.e2e.test_serve_bot import _healthy, _start, _stop, serve_env
from tests.util import until

OWNER = "o-serve-notices-0000000000001"


async def test_notices_pending_across_a_restart_of_serve(tmp_path: Path, servers: Servers,
                                                         namespace: str, stores: Stores,
                                                         fake_webwx: FakeWebWx,
                                                         fake_mpapi: FakeMpApi) -> None:
    fake_mpapi.kind = "subscription"
    port = free_port()
    env = serve_env(port, tmp_path, servers, namespace, fake_mpapi, fake_webwx, "serve-notices")
    log = tmp_path / "serve.out"
    sim = Simulator(f"http://127.0.0.1:{port}/wechat", TEST_TOKEN)
    account = fake_webwx.add_account("老周", friends=1)

    async def pending() -> int:
        return len(await stores.mailbox.peek(OWNER))

    proc = _start(env, log)
    try:
        await _healthy(port, proc)
        await sim.send("登录", OWNER)
        uuid = (await until(lambda: fake_webwx.pending_logins()))[0]["uuid"]
        fake_webwx.scan(uuid, account)
        fake_webwx.confirm(uuid)
        await until(pending, timeout=15)  # the online notice, refused with 48001
    finally:
        assert await _stop(proc) == 0
    user = await stores.users.by_openid(OWNER)
    assert user is not None
    # While serve is down, a worker elsewhere reports something: it waits on the bus.
    await stores.bus.publish({"uid": user.uid, "pid": "", "origin": "request",
                              "type": "loop_guard", "contact": "老王"})

    proc = _start(env, log)
    try:
        await _healthy(port, proc)
        # The session resumes silently; its pending "online" notice still matters.
        await until(lambda: _count_is(pending, 2), timeout=20)
        reply = (await sim.send("列表", OWNER)).text
        assert reply.startswith(HEADER)
        assert "你的微信「老周」已登录" in reply
        assert "提醒：和「老王」的对话里" in reply
        assert reply.endswith("你还没有规则。添加一条试试：添加 苹果 梨子")
        assert HEADER not in (await sim.send("列表", OWNER)).text
    finally:
        assert await _stop(proc) == 0
    assert fake_mpapi.sent == []
    assert [c.errcode for c in fake_mpapi.calls if c.path == "message/custom/send"] == [48001]
    output = log.read_text()
    assert "may not send customer-service messages" in output
    assert OWNER not in output


async def _count_is(count, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await count() == expected
