import asyncio

from freezegun import freeze_time

from store import Stores


async def test_claim_is_first_come_only(stores: Stores) -> None:
    results = await asyncio.gather(*(stores.kv.claim("dedup:m1", 5000) for _ in range(8)))
    assert results.count(True) == 1


async def test_claim_expires(stores: Stores) -> None:
    assert await stores.kv.claim("dedup:short", 50)
    await asyncio.sleep(0.12)
    assert await stores.kv.claim("dedup:short", 50)


async def test_keys_are_prefixed(stores: Stores) -> None:
    await stores.kv.put("x", "1", 10_000)
    assert await stores.redis.get(stores.kv.prefix + "x") == b"1"
    assert await stores.redis.get("x") is None


async def test_one_time_code_round_trip(stores: Stores) -> None:
    code = await stores.kv.issue_code("register", "o-a")
    assert len(code) == 6
    assert code.isdigit()
    assert await stores.kv.consume_code("register", code) == "o-a"
    assert await stores.kv.consume_code("register", code) is None  # one time only


async def test_code_purposes_do_not_mix(stores: Stores) -> None:
    code = await stores.kv.issue_code("register", "o-a")
    assert await stores.kv.consume_code("reset", code) is None
    assert await stores.kv.consume_code("register", code) == "o-a"


async def test_new_code_replaces_the_old_one(stores: Stores) -> None:
    first = await stores.kv.issue_code("reset", "o-a")
    second = await stores.kv.issue_code("reset", "o-a")
    if first != second:
        assert await stores.kv.consume_code("reset", first) is None
    assert await stores.kv.consume_code("reset", second) == "o-a"


async def test_code_expires(stores: Stores) -> None:
    code = await stores.kv.issue_code("register", "o-a", ttl_ms=50)
    await asyncio.sleep(0.12)
    assert await stores.kv.consume_code("register", code) is None


async def test_malformed_codes_are_rejected_without_lookup(stores: Stores) -> None:
    for bad in ["", "12345", "1234567", "abcdef", "１２３４５６", "*", "12345\n"]:
        assert await stores.kv.consume_code("register", bad) is None


async def test_hit_counts_within_a_window(stores: Stores) -> None:
    counts = await asyncio.gather(*(stores.kv.hit("rate:a", 10_000) for _ in range(5)))
    assert sorted(counts) == [1, 2, 3, 4, 5]
    ttl = await stores.redis.pttl(stores.kv.key("rate:a"))
    assert 0 < ttl <= 10_000


async def test_hit_window_resets(stores: Stores) -> None:
    assert await stores.kv.hit("rate:b", 50) == 1
    assert await stores.kv.hit("rate:b", 50) == 2
    await asyncio.sleep(0.12)
    assert await stores.kv.hit("rate:b", 50) == 1


@freeze_time("2026-01-01 12:00:00", real_asyncio=True)
async def test_codes_do_not_depend_on_the_local_clock(stores: Stores) -> None:
    # Expiry is Redis's job (PX), so a frozen or skewed process clock changes nothing.
    code = await stores.kv.issue_code("register", "o-a")
    assert await stores.kv.consume_code("register", code) == "o-a"
