"""Redis, then MongoDB, stopped under steady traffic: every push is answered within 5 s
with the busy message, never a 5xx, and the service recovers by itself within 10 s of
the store returning."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from config import Settings
from mpbot.edge import BUSY
from mpbot.simulator import Simulator
from store import Stores
from store.embedded import EmbeddedMongo, EmbeddedRedis, EmbeddedServer
from tests.conftest import start_web
from tests.reliability.conftest import scale
from wxreply.app import build_app


@dataclasses.dataclass
class Answer:
    sent_at: float
    elapsed: float
    status: int
    text: str


class Traffic:
    """One push every ``every`` seconds, not waiting for earlier answers."""

    def __init__(self, sim: Simulator, every: float = 0.05) -> None:
        self.sim = sim
        self.every = every
        self.answers: list[Answer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._i = 0

    async def _one(self, i: int) -> None:
        sent_at = time.monotonic()
        delivery = await self.sim.send(f"添加 键{i} 值{i}", f"o-down-{i % 7:06d}")
        self.answers.append(Answer(sent_at, delivery.elapsed, delivery.status, delivery.text))

    async def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            task = asyncio.ensure_future(self._one(self._i))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._i += 1
            await asyncio.sleep(self.every)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks)

    def recovered_after(self, spawned_at: float, back_at: float) -> float | None:
        """Seconds from the store answering again (``back_at``) to the first good answer
        (one that ended after the restart began: 0 when the app was quicker to notice
        than our readiness poll)."""
        ok = [a.sent_at + a.elapsed for a in self.answers
              if a.sent_at + a.elapsed >= spawned_at and a.text.startswith("已添加")]
        return max(0.0, min(ok) - back_at) if ok else None


@pytest.fixture
async def traffic(private_servers: tuple[EmbeddedRedis, EmbeddedMongo],
                  settings: Settings) -> AsyncIterator[Traffic]:
    redis, mongo = private_servers
    stores = Stores.connect(mongo.url, redis.url, db_name="downtraffic")
    await stores.ensure_indexes()
    web, server = await start_web(build_app(settings, stores))
    http = AsyncHTTPClient(force_instance=True, max_clients=300)
    try:
        yield Traffic(Simulator(f"{web.base_url}/wechat", settings.mp_token, http=http,
                                timeout=30))
    finally:
        http.close()
        server.stop()
        await stores.close()


async def _outage(traffic: Traffic, server: EmbeddedServer, down_s: float) -> tuple[float, float]:
    """Stop ``server`` for ``down_s`` under traffic; (seconds from its return to the first
    good answer, seconds it took to start)."""
    server.stop()
    await traffic.run_for(down_s)
    spawned_at = time.monotonic()
    server.spawn()

    async def answering() -> float:
        await asyncio.to_thread(server.wait_ready)
        return time.monotonic()

    # Traffic goes on while the server starts; it is back when it first answers.
    back = asyncio.ensure_future(answering())
    await traffic.run_for(10.0)
    back_at = await back
    await traffic.drain()
    recovered = traffic.recovered_after(spawned_at, back_at)
    assert recovered is not None, f"{server.name}: no success within 10 s of its return"
    return recovered, back_at - spawned_at


async def test_stores_down_mid_traffic(traffic: Traffic,
                                       private_servers: tuple[EmbeddedRedis, EmbeddedMongo],
                                       figures: dict[str, Any]) -> None:
    redis, mongo = private_servers
    down_s = float(scale(3, 20))
    await traffic.run_for(1.5)
    before = len(traffic.answers)
    redis_recovery, redis_start = await _outage(traffic, redis, down_s)
    during_redis = traffic.answers[before:]
    before = len(traffic.answers)
    mongo_recovery, mongo_start = await _outage(traffic, mongo, down_s)
    during_mongo = traffic.answers[before:]

    answers = traffic.answers
    slowest = max(a.elapsed for a in answers)
    busy_redis = sum(a.text == BUSY for a in during_redis)
    busy_mongo = sum(a.text == BUSY for a in during_mongo)
    figures.update({
        "pushes": len(answers), "http_5xx": sum(a.status >= 500 for a in answers),
        "outage_s_each": down_s,
        "busy_replies_redis_down": busy_redis, "busy_replies_mongodb_down": busy_mongo,
        "max_answer_s": round(slowest, 2),
        "recovery_s_redis": round(redis_recovery, 2),
        "recovery_s_mongodb": round(mongo_recovery, 2),
        "store_start_s_redis": round(redis_start, 2),
        "store_start_s_mongodb": round(mongo_start, 2),
    })
    assert {a.status for a in answers} == {200}  # never a 5xx, never a refusal
    assert slowest < 5.0
    assert all(a.text == BUSY or a.text.startswith("已添加") for a in answers)
    assert busy_redis > 0
    assert busy_mongo > 0
    assert redis_recovery < 10.0
    assert mongo_recovery < 10.0
