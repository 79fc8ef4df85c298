import asyncio

from store import Stores
from store.bus import Bus


async def test_starts_are_shared_between_workers_and_acked(stores: Stores) -> None:
    bus = stores.bus
    for uid in range(4):
        await bus.send_start({"uid": uid, "pid": f"p{uid}", "qr_deadline": 1})
    a = await bus.read_starts("wa", 2, 100)
    b = await bus.read_starts("wb", 10, 100)
    assert [m.fields["uid"] for m in a] == [0, 1]
    assert [m.fields["uid"] for m in b] == [2, 3]
    assert all(m.fields["op"] == "start" for m in a + b)
    for message in a + b:
        await bus.ack_start(message.id)
    assert await bus.read_starts("wc", 10, 100) == []


async def test_a_dead_workers_start_is_claimed_by_another(stores: Stores) -> None:
    bus = stores.bus
    await bus.send_start({"uid": 7, "pid": "p7", "qr_deadline": 1})
    taken = await bus.read_starts("dead", 1, 100)
    assert len(taken) == 1
    assert await bus.claim_stale_starts("alive", 10_000, 10) == []  # not idle long enough
    await asyncio.sleep(0.15)
    claimed = await bus.claim_stale_starts("alive", 100, 10)
    assert [m.fields["uid"] for m in claimed] == [7]


async def test_no_room_reads_nothing(stores: Stores) -> None:
    await stores.bus.send_start({"uid": 1, "pid": "p", "qr_deadline": 1})
    assert await stores.bus.read_starts("w", 0, 100) == []
    assert await stores.bus.claim_stale_starts("w", 0, 0) == []


async def test_owner_commands_reach_only_the_owner(stores: Stores) -> None:
    bus = stores.bus
    assert await bus.send_to_owner(5, {"op": "reload"}) is None  # nobody owns it
    assert await bus.acquire(5, "w1", 10_000)
    assert await bus.send_to_owner(5, {"op": "stop", "logout": True}) == "w1"
    own = await bus.read_own("w1", "0", 100)
    assert [m.fields for m in own] == [{"uid": 5, "op": "stop", "logout": True}]
    assert await bus.read_own("w2", "0", 100) == []
    assert await bus.read_own("w1", own[-1].id, 100) == []


async def test_leases(stores: Stores) -> None:
    bus = stores.bus
    assert await bus.acquire(1, "w1", 10_000)
    assert not await bus.acquire(1, "w2", 10_000)
    assert await bus.owner(1) == "w1"
    assert await bus.renew([1, 2], "w1", 10_000) == 1  # 2 is not ours
    assert await bus.renew([1], "w2", 10_000) == 0
    assert not await bus.release(1, "w2")  # only the owner releases
    assert await bus.owner(1) == "w1"
    assert await bus.release(1, "w1")
    assert await bus.owner(1) is None


async def test_a_lapsed_lease_can_be_taken(stores: Stores) -> None:
    bus = stores.bus
    assert await bus.acquire(3, "w1", 100)
    await asyncio.sleep(0.2)
    assert await bus.acquire(3, "w2", 10_000)
    assert await bus.renew([3], "w1", 10_000) == 0  # w1 must notice it lost it


async def test_events_are_read_once_across_consumers(stores: Stores) -> None:
    bus = stores.bus
    for i in range(6):
        await bus.publish({"type": "state", "uid": i})
    first, second = await asyncio.gather(bus.read_events("web-1", 100, count=3),
                                         bus.read_events("web-2", 100, count=10))
    uids = sorted(m.fields["uid"] for m in first + second)
    assert uids == list(range(6))
    for message in first:
        await bus.ack_event(message.id)
    await asyncio.sleep(0.15)
    unacked = await bus.claim_stale_events("web-3", 100)
    assert sorted(m.fields["uid"] for m in unacked) == sorted(m.fields["uid"] for m in second)


async def test_worker_registry(stores: Stores) -> None:
    bus = stores.bus
    await bus.announce("w1", {"sessions": 3}, 10_000)
    await bus.announce("w2", {"sessions": 0}, 10_000)
    assert await bus.workers() == {"w1": {"sessions": 3}, "w2": {"sessions": 0}}
    await bus.retire("w1")
    assert list(await bus.workers()) == ["w2"]


async def test_groups_are_idempotent(stores: Stores) -> None:
    """Every process calls ensure_groups() at start: a second call must neither fail nor
    move a group back to the stream's start (that would deliver every old command again)
    nor drop what a consumer has read but not acknowledged."""
    bus = stores.bus
    await bus.ensure_groups()
    await bus.send_start({"uid": 1, "pid": "p1", "qr_deadline": 1})
    assert len(await bus.read_starts("wa", 10, 100)) == 1  # read, not acknowledged
    await Bus(stores.redis, stores.kv.prefix).ensure_groups()
    for stream, group in ((bus.key("bus:cmd"), b"workers"), (bus.key("bus:events"), b"notifier")):
        groups = await stores.redis.xinfo_groups(stream)
        assert [g["name"] for g in groups] == [group]
    assert await bus.read_starts("wb", 10, 100) == []  # nothing delivered twice
    [cmd_group] = await stores.redis.xinfo_groups(bus.key("bus:cmd"))
    assert cmd_group["pending"] == 1
