"""Every push delivered 4× at once (WeChat's retries, racing): one effect, four identical
replies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from config import Settings
from mpbot.simulator import Simulator
from store import Stores
from tests.conftest import start_web
from tests.reliability.conftest import scale
from wxreply.app import build_app


@pytest.fixture
async def safe_sim(stores: Stores, safe_settings: Settings) -> AsyncIterator[Simulator]:
    web, server = await start_web(build_app(safe_settings, stores))
    http = AsyncHTTPClient(force_instance=True, max_clients=200)
    try:
        yield Simulator(f"{web.base_url}/wechat", safe_settings.mp_token,
                        safe_settings.mp_aes_key, safe_settings.mp_appid, http=http,
                        timeout=30)
    finally:
        http.close()
        server.stop()


async def test_retry_storm(safe_sim: Simulator, stores: Stores,
                           figures: dict[str, Any]) -> None:
    pushes = scale(200, 2000)
    users = 20
    at_once = asyncio.Semaphore(25)
    prepared = [safe_sim.prepare(f"o-storm-{i % users:06d}", f"添加 键{i} 值{i}")
                for i in range(pushes)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def deliver(i: int) -> list[str]:
        async with at_once:
            deliveries = await safe_sim.send_times(prepared[i], 4)
        for d in deliveries:
            statuses[d.status] = statuses.get(d.status, 0) + 1
        latencies.extend(d.elapsed for d in deliveries)
        return [d.text for d in deliveries]

    started = time.monotonic()
    replies = await asyncio.gather(*(deliver(i) for i in range(pushes)))
    duration = time.monotonic() - started

    identical = sum(len(set(r)) == 1 for r in replies)
    added = sum(r[0].startswith("已添加") for r in replies)
    effects = await stores.db["rules"].count_documents({})
    distinct = len(await stores.db["rules"].distinct("keyword"))
    latencies.sort()
    figures.update({
        "pushes": pushes, "deliveries": len(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())}, "effects": effects,
        "distinct_keywords": distinct, "pushes_with_identical_replies": identical,
        "replies_added": added, "encryption": "safe mode (AES)",
        "duration_s": round(duration, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "max_ms": round(1000 * latencies[-1], 1),
    })
    assert statuses == {200: 4 * pushes}
    assert identical == pushes
    assert added == pushes
    assert effects == pushes
    assert distinct == pushes
