import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from store import (
    DuplicateKeyword,
    InvalidRule,
    MatchMode,
    RuleLimitReached,
    RuleLimits,
    RuleNotFound,
    Stores,
    StoreUnavailable,
)
from store.embedded import EmbeddedMongo
from store.group import GroupInsert, GroupMove


@pytest.fixture
async def uid(stores: Stores) -> int:
    user, _ = await stores.users.get_or_create("o-owner")
    return user.uid


async def test_numbers_are_stable_and_never_reused(stores: Stores, uid: int) -> None:
    a = await stores.rules.add(uid, "苹果", "梨子")
    b = await stores.rules.add(uid, "香蕉", "橘子")
    assert (a.number, a.label, b.label) == (1, "01", "02")
    await stores.rules.delete(uid, 1)
    c = await stores.rules.add(uid, "西瓜", "葡萄")
    assert c.label == "03"
    assert [r.label for r in await stores.rules.list(uid)] == ["02", "03"]


async def test_label_grows_past_two_digits(stores: Stores, uid: int) -> None:
    await stores.db["users"].update_one({"_id": uid}, {"$set": {"next_rule_no": 99}})
    rule = await stores.rules.add(uid, "k", "v")
    assert rule.label == "100"


async def test_twenty_concurrent_adds_get_distinct_numbers(stores: Stores, uid: int) -> None:
    rules = await asyncio.gather(*(stores.rules.add(uid, f"kw{i}", "r") for i in range(20)))
    assert sorted(r.number for r in rules) == list(range(1, 21))
    assert await stores.rules.count(uid) == 20


async def test_two_concurrent_adds_of_one_keyword_one_wins(stores: Stores, uid: int) -> None:
    results = await asyncio.gather(
        stores.rules.add(uid, "你好", "a"), stores.rules.add(uid, "你好", "b"),
        return_exceptions=True,
    )
    assert sum(isinstance(r, DuplicateKeyword) for r in results) == 1
    assert await stores.rules.count(uid) == 1
    assert (await stores.users.get(uid)).rule_count == 1


async def test_keyword_unique_per_mode_and_normalized(stores: Stores, uid: int) -> None:
    await stores.rules.add(uid, "Hello", "x")
    with pytest.raises(DuplicateKeyword) as err:
        await stores.rules.add(uid, "ｈｅｌｌｏ", "y")  # full-width, other case: the same keyword
    assert err.value.number == 1
    contains = await stores.rules.add(uid, "hello", "z", MatchMode.CONTAINS)
    assert contains.mode is MatchMode.CONTAINS


async def test_keywords_are_per_user(stores: Stores, uid: int) -> None:
    other, _ = await stores.users.get_or_create("o-other")
    await stores.rules.add(uid, "苹果", "1")
    rule = await stores.rules.add(other.uid, "苹果", "2")
    assert rule.label == "01"


async def test_limits_are_enforced(stores: Stores, uid: int) -> None:
    await stores.rules.add(uid, "字" * 30, "回" * 600)
    with pytest.raises(InvalidRule, match="最多 30"):
        await stores.rules.add(uid, "字" * 31, "r")
    with pytest.raises(InvalidRule, match="最多 600"):
        await stores.rules.add(uid, "k", "回" * 601)
    with pytest.raises(InvalidRule, match="不能为空"):
        await stores.rules.add(uid, "   ", "r")
    with pytest.raises(InvalidRule, match="不能为空"):
        await stores.rules.add(uid, "k", "")
    with pytest.raises(InvalidRule, match="控制字符"):
        await stores.rules.add(uid, "a\x00b", "r")
    with pytest.raises(InvalidRule, match="控制字符"):
        await stores.rules.add(uid, "k", "bell\x07")
    multi = await stores.rules.add(uid, "地址", "第一行\n第二行")
    assert multi.reply == "第一行\n第二行"


@pytest.mark.parametrize("limits", [RuleLimits(rules_max=5)])
async def test_rule_count_limit(stores: Stores, uid: int) -> None:
    for i in range(5):
        await stores.rules.add(uid, f"k{i}", "r")
    with pytest.raises(RuleLimitReached) as err:
        await stores.rules.add(uid, "k5", "r")
    assert err.value.limit == 5
    await stores.rules.delete(uid, 3)
    assert (await stores.rules.add(uid, "k5", "r")).label == "06"


@pytest.mark.parametrize("limits", [RuleLimits(rules_max=10)])
async def test_limit_holds_under_concurrency(stores: Stores, uid: int) -> None:
    results = await asyncio.gather(
        *(stores.rules.add(uid, f"k{i}", "r") for i in range(25)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 10
    assert all(isinstance(r, RuleLimitReached) for r in results if isinstance(r, Exception))
    assert await stores.rules.count(uid) == 10


@pytest.mark.parametrize("limits", [RuleLimits(rules_max=3)])
async def test_drifted_count_heals(stores: Stores, uid: int) -> None:
    # A process that died between reserving a slot and inserting leaves the count high.
    await stores.db["users"].update_one({"_id": uid}, {"$set": {"rule_count": 3}})
    rule = await stores.rules.add(uid, "k", "r")
    assert rule.label == "01"
    assert (await stores.users.get(uid)).rule_count == 1


async def test_add_many_is_all_or_nothing(stores: Stores, uid: int) -> None:
    await stores.rules.add(uid, "已有", "x")
    with pytest.raises(DuplicateKeyword):
        await stores.rules.add_many(uid, [("新1", "a", MatchMode.EXACT),
                                          ("已有", "b", MatchMode.EXACT)])
    with pytest.raises(DuplicateKeyword):
        await stores.rules.add_many(uid, [("新1", "a", MatchMode.EXACT),
                                          ("新1", "b", MatchMode.EXACT)])
    with pytest.raises(InvalidRule):
        await stores.rules.add_many(uid, [("新1", "a", MatchMode.EXACT),
                                          ("新2", "", MatchMode.EXACT)])
    assert [r.keyword for r in await stores.rules.list(uid)] == ["已有"]
    assert (await stores.users.get(uid)).rule_count == 1
    added = await stores.rules.add_many(uid, [("新1", "a", MatchMode.EXACT),
                                              ("新2", "b", MatchMode.CONTAINS)])
    assert [r.label for r in added] == ["02", "03"]


async def test_update_and_delete(stores: Stores, uid: int) -> None:
    await stores.rules.add(uid, "苹果", "梨子")
    await stores.rules.add(uid, "香蕉", "橘子")
    updated = await stores.rules.update(uid, 1, reply="樱桃")
    assert (updated.keyword, updated.reply, updated.label) == ("苹果", "樱桃", "01")
    renamed = await stores.rules.update(uid, 1, reply="桃", keyword="桃子", mode=MatchMode.CONTAINS)
    assert (renamed.keyword, renamed.mode) == ("桃子", MatchMode.CONTAINS)
    with pytest.raises(DuplicateKeyword):
        await stores.rules.update(uid, 2, reply="x", keyword="桃子", mode=MatchMode.CONTAINS)
    with pytest.raises(RuleNotFound):
        await stores.rules.update(uid, 9, reply="x")
    deleted = await stores.rules.delete(uid, 1)
    assert deleted.keyword == "桃子"
    with pytest.raises(RuleNotFound):
        await stores.rules.delete(uid, 1)
    assert (await stores.users.get(uid)).rule_count == 1


async def test_one_user_cannot_touch_anothers_rule(stores: Stores, uid: int) -> None:
    other, _ = await stores.users.get_or_create("o-other")
    await stores.rules.add(uid, "苹果", "梨子")
    with pytest.raises(RuleNotFound):
        await stores.rules.delete(other.uid, 1)
    with pytest.raises(RuleNotFound):
        await stores.rules.update(other.uid, 1, reply="hacked")
    assert (await stores.rules.get(uid, 1)).reply == "梨子"


async def test_list_paging(stores: Stores, uid: int) -> None:
    for i in range(7):
        await stores.rules.add(uid, f"k{i}", "r")
    page = await stores.rules.list(uid, skip=5, limit=5)
    assert [r.label for r in page] == ["06", "07"]


@pytest.mark.parametrize("limits", [RuleLimits(rules_max=3)])
async def test_recent_reservation_is_not_healed_away(stores: Stores, uid: int) -> None:
    # A reservation made a moment ago may still be inserting: the count must stand.
    from datetime import UTC, datetime

    await stores.db["users"].update_one(
        {"_id": uid}, {"$set": {"rule_count": 3, "rule_reserved_at": datetime.now(UTC)}}
    )
    with pytest.raises(RuleLimitReached):
        await stores.rules.add(uid, "k", "r")


async def test_a_retried_insert_that_meets_its_own_id_counts_as_stored(stores: Stores,
                                                                       uid: int) -> None:
    # An insert a store crash cut off is tried once more; the restarted server has
    # forgotten the first try and answers the retry with a duplicate key on ``_id``.
    rules = stores.db["rules"]
    doc = {"_id": ObjectId(), "uid": uid, "no": 1, "keyword": "苹果", "reply": "梨子",
           "mode": "exact", "norm": "苹果"}
    await rules.insert_one(dict(doc))
    group = GroupInsert(rules)
    assert await group.insert([dict(doc)]) is None  # its own _id: stored, not refused
    rival = {**doc, "_id": ObjectId(), "no": 2}  # the same keyword: refused
    assert await group.insert([dict(rival)]) == 0
    assert await rules.count_documents({"uid": uid}) == 1


async def test_a_counter_behind_the_rules_heals_on_the_collision(stores: Stores,
                                                                  uid: int) -> None:
    # A store crash lost the reservation's move of the counter (it is written without a
    # journal of its own), not the rule: the next add's number is taken already.
    for keyword in ("一", "二", "三"):
        await stores.rules.add(uid, keyword, "r")
    await stores.db["users"].update_one({"_id": uid}, {"$set": {"next_rule_no": 2}})
    rule = await stores.rules.add(uid, "四", "r")
    assert rule.number == 4
    assert sorted(r.keyword for r in await stores.rules.list(uid)) == sorted("一二三四")


@pytest.fixture
def failpoint_mongo(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """A MongoDB-wire server of this test's own that accepts ``configureFailPoint``."""
    mongo = EmbeddedMongo(tmp_path / "fp-mongo", test_commands=True)
    mongo.start()
    try:
        yield mongo
    finally:
        mongo.stop()


async def test_a_rule_write_whose_connection_breaks_is_tried_once_more(
        failpoint_mongo: EmbeddedMongo, servers: Any) -> None:
    # Retryable writes are off (store/stores.py); the grouped insert and counter move
    # retry by themselves (store/group.py).
    stores = Stores.connect(failpoint_mongo.url, servers.redis_url, db_name="fp",
                            prefix="fp:")
    try:
        await stores.ensure_indexes()
        user, _ = await stores.users.get_or_create("o-failpoint")
        admin = stores.db.client.admin

        async def drop(command: str, times: int) -> None:
            await admin.command("configureFailPoint", "failCommand",
                                mode={"times": times},
                                data={"failCommands": [command], "closeConnection": True})

        async def keywords() -> list[str]:
            return [r.keyword for r in await stores.rules.list(user.uid)]

        await drop("insert", 1)
        assert (await stores.rules.add(user.uid, "苹果", "梨子")).number == 1
        assert await keywords() == ["苹果"]
        await drop("update", 1)  # the reservation's counter move
        assert (await stores.rules.add(user.uid, "桃子", "李子")).number == 2
        assert await keywords() == ["苹果", "桃子"]
        await drop("insert", 2)  # twice in a row: the add fails, and says so
        with pytest.raises(StoreUnavailable):
            await stores.rules.add(user.uid, "香蕉", "橘子")
        assert await keywords() == ["苹果", "桃子"]
        # The slot the failed add reserved is counted until the count heals; the next
        # add works.
        assert (await stores.rules.add(user.uid, "香蕉", "橘子")).keyword == "香蕉"
    finally:
        await stores.close()


async def test_grouped_counter_moves_tell_each_caller_whether_it_matched(
        stores: Stores) -> None:
    # Moves of several users go out as one command; one of them meets a counter another
    # process moved: only that one is told "not matched", and only the others moved.
    users = stores.db["users"].with_options(write_concern=stores.db.write_concern)
    uids = [(await stores.users.get_or_create(f"o-move-{i}"))[0].uid for i in range(5)]
    await users.update_many({"_id": {"$in": uids}}, {"$set": {"next_rule_no": 0}})
    await users.update_one({"_id": uids[2]}, {"$set": {"next_rule_no": 7}})  # moved away
    group = GroupMove(users)
    results = await asyncio.gather(*(
        group.move({"_id": uid, "next_rule_no": 0}, {"$inc": {"next_rule_no": 1}})
        for uid in uids))
    assert results == [True, True, False, True, True]
    counters = {d["_id"]: d["next_rule_no"] async for d in users.find({"_id": {"$in": uids}})}
    assert counters == {**{uid: 1 for uid in uids}, uids[2]: 7}
    # All matched: no read needed, every caller told so.
    assert await asyncio.gather(*(
        group.move({"_id": uid, "next_rule_no": 1}, {"$inc": {"next_rule_no": 1}})
        for uid in uids if uid != uids[2])) == [True] * 4
