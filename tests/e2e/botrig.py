"""The bot rig: web app, in-process worker and notifier over real stores and the two
WeChat fakes.  Registered as a pytest plugin in tests/conftest.py (fixture ``rig``)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil

from config import Settings
from mpbot.mpapi import MpApi
from mpbot.notifier import Notifier
from mpbot.simulator import Simulator
from replybot.driver import AnyDriver
from replybot.webwx.aio import AsyncItchatDriver
from replybot.webwx.driver import ItchatDriver
from replybot.worker import Worker
from sandbox.mpapi import FakeMpApi
from sandbox.webwx import FakeAccount, FakeWebWx
from store import Stores
from tests.util import until
from wxreply.app import build_app

OWNER = "o-owner-00000000000000000001"
# These tests are about the loop; pacing has tests of its own (tests/replybot/).
NO_PACING = {"pace_delay_min_ms": 0, "pace_delay_max_ms": 0, "pace_cooldown_s": 0,
             "pace_per_minute": 1000, "loop_guard_replies": 1000}


class Rig:
    def __init__(self, settings: Settings, stores: Stores, webwx: FakeWebWx, mp: FakeMpApi,
                 mpapi: MpApi, base_url: str) -> None:
        self.settings = settings
        self.stores = stores
        self.webwx = webwx
        self.mp = mp
        self.mpapi = mpapi
        self.base_url = base_url
        self.sim = Simulator(f"{base_url}/wechat", settings.mp_token)
        self.worker: Worker | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def chat(self, text: str, openid: str = OWNER) -> str:
        delivery = await self.sim.send(text, openid)
        assert delivery.status == 200
        return delivery.text

    def start_worker(self, worker_id: str = "w-test") -> Worker:
        self._stop = asyncio.Event()
        self.worker = Worker(self.stores, self.settings, self._driver, worker_id=worker_id,
                             heartbeat_s=0.3, lease_ms=3000)
        self._tasks.append(asyncio.ensure_future(self.worker.run(self._stop)))
        return self.worker

    async def restart_worker(self, **overrides: Any) -> Worker:
        """A new worker with some settings changed (pacing, watchdog)."""
        await self.stop_worker()
        self.settings = dataclasses.replace(self.settings, **overrides)
        return self.start_worker()

    async def stop_worker(self) -> None:
        assert self._stop is not None
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks.clear()

    def _driver(self) -> AnyDriver:
        """A driver of the kind WXR_BOT_DRIVER names (as build_worker picks it)."""
        if self.settings.bot_driver == "async":
            return AsyncItchatDriver(save_interval=0.2)
        return ItchatDriver(save_interval=0.2)

    def notices(self) -> list[str]:
        return [m.content for m in self.mp.sent if m.openid == OWNER]

    async def state(self, uid: int) -> str | None:
        record = await self.stores.bots.get(uid)
        return record.state if record else None

    async def uid(self) -> int:
        user = await self.stores.users.by_openid(OWNER)
        assert user is not None
        return user.uid

    async def login(self, account: FakeAccount) -> str:
        """登录, open the page, scan and confirm with ``account``; returns the pid."""
        reply = await self.chat("登录")
        match = re.search(rf"{re.escape(self.base_url)}/qr/([A-Za-z0-9_-]{{24}})", reply)
        assert match is not None, reply
        pid = match.group(1)
        pending = await until(lambda: self.webwx.pending_logins())
        self.webwx.scan(pending[-1]["uuid"], account)
        self.webwx.confirm(pending[-1]["uuid"])
        await until(lambda: self.state_is("online"))
        return pid

    async def state_is(self, state: str) -> bool:
        user = await self.stores.users.by_openid(OWNER)
        return user is not None and await self.state(user.uid) == state

    def replies_to(self, account: FakeAccount, to_user: str) -> list[str]:
        return [s.text for s in self.webwx.sent(account) if s.to_user == to_user]


@pytest.fixture
def bot_driver() -> str:
    """The rig's driver: ``WXR_BOT_DRIVER`` of the test run (the shipped default unset);
    a test module overrides this fixture to run over both."""
    return os.environ.get("WXR_BOT_DRIVER", Settings().bot_driver)


@pytest.fixture
async def rig(stores: Stores, settings: Settings, fake_webwx: FakeWebWx,
              fake_mpapi: FakeMpApi, mpapi: MpApi, bot_driver: str) -> AsyncIterator[Rig]:
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    base_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    settings = dataclasses.replace(settings, public_url=base_url, qr_ttl=60,
                                   mp_api_base=fake_mpapi.base_url, mp_appid=fake_mpapi.appid,
                                   mp_secret=fake_mpapi.secret, bot_driver=bot_driver,
                                   **NO_PACING)
    server = tornado.httpserver.HTTPServer(build_app(settings, stores, mpapi=mpapi))
    server.add_sockets(sockets)
    rig = Rig(settings, stores, fake_webwx, fake_mpapi, mpapi, base_url)
    notifier_stop = asyncio.Event()
    notifier = asyncio.ensure_future(
        Notifier(stores, mpapi, base_url, consumer="n-test",
                 account_kind=settings.mp_account_kind).run(notifier_stop))
    rig.start_worker()
    try:
        yield rig
    finally:
        # Bounded, and named: a hang here must say which part hung.
        if rig._tasks:
            await asyncio.wait_for(rig.stop_worker(), 30)
        notifier_stop.set()
        await asyncio.wait_for(notifier, 10)
        server.stop()
