"""KV.delete_if_equals and KV.wait_for, on the real Redis."""

import asyncio
import time

from store import Stores


async def test_delete_if_equals_deletes_the_value_it_was_given(stores: Stores) -> None:
    await stores.kv.put("lock:a", "owner-1", 10_000)
    assert await stores.kv.delete_if_equals("lock:a", "owner-1")
    assert await stores.kv.get("lock:a") is None


async def test_delete_if_equals_keeps_a_different_value(stores: Stores) -> None:
    await stores.kv.put("lock:a", "owner-2", 10_000)
    assert not await stores.kv.delete_if_equals("lock:a", "owner-1")
    assert await stores.kv.get("lock:a") == b"owner-2"


async def test_delete_if_equals_on_a_missing_key(stores: Stores) -> None:
    assert not await stores.kv.delete_if_equals("lock:none", "owner-1")


async def test_delete_if_equals_compares_bytes_exactly(stores: Stores) -> None:
    await stores.kv.put("v", "令牌✓".encode(), 10_000)
    assert not await stores.kv.delete_if_equals("v", "令牌")
    assert await stores.kv.delete_if_equals("v", "令牌✓")


async def test_delete_if_equals_uses_the_prefix(stores: Stores) -> None:
    await stores.redis.set("unprefixed", "x")
    try:
        assert not await stores.kv.delete_if_equals("unprefixed", "x")
        assert await stores.redis.get("unprefixed") == b"x"
    finally:
        await stores.redis.delete("unprefixed")


async def test_wait_for_returns_a_present_value_at_once(stores: Stores) -> None:
    await stores.kv.put("k", "v", 10_000)
    started = time.monotonic()
    assert await stores.kv.wait_for("k", 5.0) == b"v"
    assert time.monotonic() - started < 0.5


async def test_wait_for_sees_a_value_written_later(stores: Stores) -> None:
    async def write_soon() -> None:
        await asyncio.sleep(0.1)
        await stores.kv.put("k", "late", 10_000)

    writer = asyncio.create_task(write_soon())
    assert await stores.kv.wait_for("k", 5.0) == b"late"
    await writer


async def test_wait_for_gives_up_after_the_timeout(stores: Stores) -> None:
    started = time.monotonic()
    assert await stores.kv.wait_for("never", 0.2) is None
    assert 0.18 <= time.monotonic() - started < 0.6


async def test_wait_for_stops_when_the_lock_is_released_without_a_value(stores: Stores) -> None:
    await stores.kv.put("lock", "holder", 10_000)

    async def give_up_soon() -> None:
        await asyncio.sleep(0.1)
        await stores.kv.delete("lock")

    releaser = asyncio.create_task(give_up_soon())
    started = time.monotonic()
    assert await stores.kv.wait_for("value", 5.0, while_key="lock") is None
    assert time.monotonic() - started < 1.0
    await releaser


async def test_wait_for_prefers_the_value_to_a_released_lock(stores: Stores) -> None:
    await stores.kv.put("value", "done", 10_000)
    assert await stores.kv.wait_for("value", 1.0, while_key="lock-gone") == b"done"
