import asyncio

import pytest

from store import Stores, UsernameTaken, UserNotFound
from store.users import FIRST_UID


async def test_first_user_gets_a_four_digit_id(stores: Stores) -> None:
    user, created = await stores.users.get_or_create("o-alice")
    assert created
    assert user.uid == FIRST_UID
    assert user.autoreply is True
    assert user.subscribed is True
    assert user.username is None


async def test_get_or_create_returns_the_same_user(stores: Stores) -> None:
    first, _ = await stores.users.get_or_create("o-alice")
    again, created = await stores.users.get_or_create("o-alice")
    assert not created
    assert again.uid == first.uid


async def test_ids_unique_under_concurrency(stores: Stores) -> None:
    results = await asyncio.gather(*(stores.users.get_or_create(f"o-{i}") for i in range(30)))
    uids = [user.uid for user, _ in results]
    assert len(set(uids)) == 30
    assert all(uid >= FIRST_UID for uid in uids)


async def test_same_openid_concurrently_creates_one_user(stores: Stores) -> None:
    results = await asyncio.gather(*(stores.users.get_or_create("o-same") for _ in range(10)))
    assert len({user.uid for user, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_ids_are_never_reused(stores: Stores) -> None:
    a, _ = await stores.users.get_or_create("o-a")
    await stores.db["users"].delete_one({"_id": a.uid})
    b, _ = await stores.users.get_or_create("o-b")
    assert b.uid > a.uid


async def test_lookups(stores: Stores) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    assert (await stores.users.get(user.uid)).openid == "o-a"
    assert (await stores.users.by_openid("o-a")).uid == user.uid  # type: ignore[union-attr]
    assert await stores.users.by_openid("o-nobody") is None
    with pytest.raises(UserNotFound):
        await stores.users.get(99999)


async def test_autoreply_flag_round_trip(stores: Stores) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    assert (await stores.users.set_autoreply(user.uid, False)).autoreply is False
    assert (await stores.users.get(user.uid)).autoreply is False
    assert (await stores.users.set_autoreply(user.uid, True)).autoreply is True


async def test_credentials_and_unique_username(stores: Stores) -> None:
    a, _ = await stores.users.get_or_create("o-a")
    b, _ = await stores.users.get_or_create("o-b")
    await stores.users.set_credentials(a.uid, "alice", b"hash-a")
    found = await stores.users.by_username("alice")
    assert found is not None
    assert found.uid == a.uid
    assert found.password_hash == b"hash-a"
    with pytest.raises(UsernameTaken):
        await stores.users.set_credentials(b.uid, "alice", b"hash-b")
    # Users without a username don't collide with each other (sparse unique index).
    c, _ = await stores.users.get_or_create("o-c")
    assert c.username is None


async def test_subscribe_flag_keeps_data(stores: Stores) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    await stores.rules.add(user.uid, "苹果", "梨子")
    gone = await stores.users.set_subscribed("o-a", False)
    assert gone is not None
    assert gone.subscribed is False
    assert await stores.rules.count(user.uid) == 1
    assert await stores.users.set_subscribed("o-unknown", False) is None


async def test_profile_fields(stores: Stores) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    updated = await stores.users.set_profile(user.uid, nickname="阿狸", wechat_name="ali")
    assert (updated.nickname, updated.wechat_name, updated.email) == ("阿狸", "ali", "")
