"""Redis or MongoDB gone mid-traffic: a clear busy reply in time, recovery without restart."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.parse
from collections.abc import AsyncIterator

import pytest
from tornado.httpclient import AsyncHTTPClient

from config import Settings
from mpbot.edge import BUSY
from mpbot.protocol import signed_query
from mpbot.simulator import Simulator
from store import Stores
from store.embedded import EmbeddedMongo, EmbeddedRedis
from tests.conftest import TEST_TOKEN, start_web
from wxreply.app import build_app

OPENID = "o-down-000000000000000000001"


class Rig:
    def __init__(self, sim: Simulator, stores: Stores, redis: EmbeddedRedis,
                 mongo: EmbeddedMongo, base_url: str) -> None:
        self.sim, self.stores, self.redis, self.mongo = sim, stores, redis, mongo
        self.base_url = base_url

    async def say(self, text: str) -> tuple[str, float]:
        delivery = await self.sim.send(text, OPENID)
        assert delivery.status == 200, delivery.raw
        return delivery.text, delivery.elapsed

    async def until_recovered(self, text: str, expected_prefix: str, limit: float) -> float:
        """Seconds until ``text`` is answered normally again."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            reply, _ = await self.say(text)
            if reply.startswith(expected_prefix):
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        raise AssertionError(f"no recovery within {limit} s")


@pytest.fixture
async def rig(private_servers: tuple[EmbeddedRedis, EmbeddedMongo],
              settings: Settings) -> AsyncIterator[Rig]:
    redis, mongo = private_servers
    stores = Stores.connect(mongo.url, redis.url, db_name="down")
    await stores.ensure_indexes()
    web, server = await start_web(build_app(settings, stores))
    try:
        yield Rig(Simulator(f"{web.base_url}/wechat", settings.mp_token), stores, redis, mongo,
                  web.base_url)
    finally:
        server.stop()
        await stores.close()


async def test_redis_down_then_back(rig: Rig) -> None:
    assert (await rig.say("添加 苹果 梨子"))[0] == "已添加 01：苹果 → 梨子"
    rig.redis.stop()
    for text in ("列表", "添加 香蕉 橘子", "帮助"):
        reply, elapsed = await rig.say(text)
        assert reply == BUSY
        assert elapsed < 4.0
    rig.redis.start()
    recovered = await rig.until_recovered("列表", "你的规则", limit=10)
    assert recovered < 10
    assert (await rig.say("列表"))[0] == "你的规则（共 1 条）：\n01 苹果 → 梨子"


async def test_mongodb_down_then_back(rig: Rig) -> None:
    assert (await rig.say("添加 苹果 梨子"))[0] == "已添加 01：苹果 → 梨子"
    rig.mongo.stop()
    for text in ("列表", "添加 香蕉 橘子"):
        reply, elapsed = await rig.say(text)
        assert reply == BUSY
        assert elapsed < 4.0
    rig.mongo.start()
    await rig.until_recovered("列表", "你的规则", limit=15)
    # The failed add did not half-happen: a retry now adds it once.
    assert (await rig.say("添加 香蕉 橘子"))[0] == "已添加 02：香蕉 → 橘子"


async def test_a_hung_store_does_not_block_the_ioloop(rig: Rig) -> None:
    await rig.say("添加 苹果 梨子")
    assert rig.mongo.process is not None
    pid = rig.mongo.process.pid
    os.kill(pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        slow = asyncio.ensure_future(rig.say("列表"))
        await asyncio.sleep(0.3)
        assert not slow.done()
        # Meanwhile a request that needs no Mongo is served at once.
        query = signed_query(TEST_TOKEN, str(int(time.time())), "7", echostr="still-here")
        started = time.monotonic()
        response = await AsyncHTTPClient().fetch(
            f"{rig.base_url}/wechat?{urllib.parse.urlencode(query)}")
        assert response.body == b"still-here"
        assert time.monotonic() - started < 0.5
        reply, elapsed = await slow
        assert reply == BUSY
        assert elapsed < 4.0
    finally:
        os.kill(pid, signal.SIGCONT)
    await rig.until_recovered("列表", "你的规则", limit=10)
