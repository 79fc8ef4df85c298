"""The rules cache of the official-account edge and its invalidation (store.cache,
RuleRepo.snapshot): every write path bumps the user's version stamp, and a copy cached by
any process is never served after a write it did not see."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store import DuplicateKeyword, MatchMode, RuleNotFound, Stores
from store.bots import settings_version_key
from store.cache import Lru, Stamp, VersionedCache
from tests.conftest import Servers


@pytest.fixture
async def other(servers: Servers, namespace: str) -> AsyncIterator[Stores]:
    """A second web process: the same databases, caches of its own."""
    st = Stores.connect(servers.mongo_url, servers.redis_url, db_name=namespace,
                        prefix=f"{namespace}:")
    try:
        yield st
    finally:
        await st.close()


@pytest.fixture
async def uid(stores: Stores) -> int:
    user, _ = await stores.users.get_or_create("o-cache-owner")
    return user.uid


def replies(rules: tuple[object, ...]) -> list[str]:
    return [r.reply for r in rules]  # type: ignore[attr-defined]


async def test_snapshot_is_served_from_the_cache_while_the_stamp_holds(stores: Stores,
                                                                       uid: int) -> None:
    await stores.rules.add(uid, "苹果", "梨子")
    first = await stores.rules.snapshot(uid)
    misses = stores.rules.snapshots.misses
    again = await stores.rules.snapshot(uid)
    assert again is first  # the same tuple: no MongoDB query
    assert stores.rules.snapshots.misses == misses
    assert [r.keyword for r in again] == ["苹果"]


@pytest.mark.parametrize("write", ["add", "add_many", "update", "delete"])
async def test_every_write_path_reaches_the_cache_of_another_process(
        stores: Stores, other: Stores, uid: int, write: str) -> None:
    await stores.rules.add(uid, "苹果", "梨子")
    assert replies(await other.rules.snapshot(uid)) == ["梨子"]  # cached over there
    before = await stores.kv.get(settings_version_key(uid))
    if write == "add":
        await stores.rules.add(uid, "香蕉", "橘子")
        expected = ["梨子", "橘子"]
    elif write == "add_many":
        await stores.rules.add_many(uid, [("香蕉", "橘子", MatchMode.EXACT),
                                          ("西瓜", "葡萄", MatchMode.CONTAINS)])
        expected = ["梨子", "橘子", "葡萄"]
    elif write == "update":
        await stores.rules.update(uid, 1, reply="樱桃")
        expected = ["樱桃"]
    else:
        await stores.rules.delete(uid, 1)
        expected = []
    assert await stores.kv.get(settings_version_key(uid)) != before
    assert replies(await other.rules.snapshot(uid)) == expected
    assert replies(await stores.rules.snapshot(uid)) == expected


async def test_a_write_between_stamp_and_load_is_not_hidden(stores: Stores, other: Stores,
                                                            uid: int) -> None:
    # Process B reads the stamp, then (slowly) MongoDB; process A writes in between.  B
    # caches what it loaded under the old stamp, which A's bump has already replaced: the
    # next read in B reloads instead of serving it.
    await stores.rules.add(uid, "苹果", "梨子")
    stale_stamp = await other.kv.get(settings_version_key(uid))
    await stores.rules.update(uid, 1, reply="樱桃")
    loaded = tuple(await other.rules.list(uid))
    other.rules.snapshots.put(uid, stale_stamp, loaded)
    assert replies(await other.rules.snapshot(uid)) == ["樱桃"]


async def test_a_rolled_back_batch_bumps_the_stamp_too(stores: Stores, uid: int) -> None:
    # Part of the batch is inserted, then undone (another rule has a keyword): a reader may
    # have cached it in between, so the undo must move the stamp as well.
    await stores.rules.add(uid, "苹果", "梨子")
    before = await stores.kv.get(settings_version_key(uid))
    # 香蕉 goes in, the unique index refuses 苹果, and the batch is undone.
    with pytest.raises(DuplicateKeyword):
        await stores.rules.add_many(uid, [("香蕉", "橘子", MatchMode.EXACT),
                                          ("苹果", "桃子", MatchMode.EXACT)])
    assert await stores.kv.get(settings_version_key(uid)) != before
    assert [r.keyword for r in await stores.rules.snapshot(uid)] == ["苹果"]


async def test_update_and_delete_of_a_missing_rule_change_nothing(stores: Stores,
                                                                  uid: int) -> None:
    before = await stores.kv.get(settings_version_key(uid))
    with pytest.raises(RuleNotFound):
        await stores.rules.update(uid, 7, reply="x")
    with pytest.raises(RuleNotFound):
        await stores.rules.delete(uid, 7)
    assert await stores.kv.get(settings_version_key(uid)) == before


async def test_update_returns_the_stored_rule(stores: Stores, uid: int) -> None:
    await stores.rules.add(uid, "苹果", "梨子", MatchMode.CONTAINS)
    updated = await stores.rules.update(uid, 1, reply="樱桃", keyword="Apple")
    assert (updated.number, updated.keyword, updated.reply, updated.mode) == (
        1, "Apple", "樱桃", MatchMode.CONTAINS)
    assert await stores.rules.get(uid, 1) == updated


async def test_a_given_stamp_spares_the_round_trip(stores: Stores, uid: int) -> None:
    await stores.rules.add(uid, "苹果", "梨子")
    version = await stores.kv.get(settings_version_key(uid))
    first = await stores.rules.snapshot(uid, Stamp(uid, version))
    assert await stores.rules.snapshot(uid, Stamp(uid, version)) is first
    # A stamp of another user is not used for this one.
    assert await stores.rules.snapshot(uid, Stamp(uid + 1, b"999")) is first


def test_versioned_cache_expires_entries_after_their_age() -> None:
    # The age limit bounds how long a copy can outlive a lost bump (Redis restored from
    # an append-only file that missed its last second).
    now = [1000.0]
    cache: VersionedCache[int, str] = VersionedCache(4, 60.0, clock=lambda: now[0])
    cache.put(1, b"5", "rules")
    assert cache.get(1, b"5") == "rules"
    assert cache.get(1, b"6") is None  # another stamp
    now[0] += 61
    assert cache.get(1, b"5") is None
    assert cache.peek(1) is None


def test_lru_forgets_the_least_recently_used() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # now b is the oldest
    lru.put("c", 3)
    assert "b" not in lru
    assert (lru.get("a"), lru.get("c"), len(lru)) == (1, 3, 2)
    with pytest.raises(ValueError, match="at least 1"):
        Lru(0)
