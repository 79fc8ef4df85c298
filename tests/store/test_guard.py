"""A caller's cancellation never reaches the MongoDB driver (store/_guard.py says why)."""

from __future__ import annotations

import asyncio

import pytest

from store import Stores, _guard
from store.embedded import EmbeddedMongo, EmbeddedRedis


async def test_cancelled_call_runs_on_and_the_client_stays_usable(
        private_servers: tuple[EmbeddedRedis, EmbeddedMongo]) -> None:
    redis, mongo = private_servers
    stores = Stores.connect(mongo.url, redis.url, db_name="guard")
    await stores.ensure_indexes()
    mongo.stop()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await stores.users.get_or_create("o-guard-1")
    loop = asyncio.get_running_loop()
    detached = [t for t in _guard._detached if t.get_loop() is loop]
    assert len(detached) == 1  # still running, not cancelled
    await asyncio.wait(detached, timeout=10)
    assert detached[0].done()
    assert not detached[0].cancelled()
    assert not _guard._detached  # forgotten once it ended
    mongo.start()
    user, created = await asyncio.wait_for(stores.users.get_or_create("o-guard-2"), 15)
    assert created
    assert user.openid == "o-guard-2"
    await asyncio.wait_for(stores.close(), 10)


async def test_close_waits_for_calls_left_running(
        private_servers: tuple[EmbeddedRedis, EmbeddedMongo]) -> None:
    redis, mongo = private_servers
    stores = Stores.connect(mongo.url, redis.url, db_name="guard")
    await stores.ensure_indexes()
    mongo.stop()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await stores.users.get_or_create("o-guard-3")
    loop = asyncio.get_running_loop()
    assert [t for t in _guard._detached if t.get_loop() is loop]
    await asyncio.wait_for(stores.close(), 10)
    assert not [t for t in _guard._detached if t.get_loop() is loop]
