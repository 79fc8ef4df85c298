import asyncio

import pytest
from freezegun import freeze_time

from store import Stores
from store.bots import (
    ONLINE,
    REQUESTED,
    BotService,
    LoginInProgress,
    QrStore,
    replies_key,
    valid_pid,
)


@pytest.fixture
def service(stores: Stores) -> BotService:
    return BotService(stores.bots, stores.bus, stores.kv, public_url="https://bot.example/",
                      qr_ttl_s=240)


async def test_login_creates_an_unguessable_expiring_pid(stores: Stores,
                                                         service: BotService) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    ticket = await service.login(user)
    assert ticket.state == REQUESTED
    assert valid_pid(ticket.pid)
    assert ticket.url == f"https://bot.example/qr/{ticket.pid}"
    ttl = await stores.redis.pttl(stores.kv.key("qr", ticket.pid))
    assert 240_000 < ttl <= 240_000 + QrStore.GRACE_MS
    starts = await stores.bus.read_starts("w", 10, 100)
    assert [m.fields["pid"] for m in starts] == [ticket.pid]
    record = await stores.bots.get(user.uid)
    assert record is not None
    assert record.state == REQUESTED
    assert record.pid == ticket.pid


async def test_pids_differ_and_are_well_formed(stores: Stores, service: BotService) -> None:
    pids = set()
    for i in range(20):
        user, _ = await stores.users.get_or_create(f"o-{i}")
        pids.add((await service.login(user)).pid)
    assert len(pids) == 20
    assert all(valid_pid(p) for p in pids)
    for bad in ["", "../../etc/passwd", "a" * 23, "a" * 25, "<script>alert(1)</script>xx",
                "a" * 23 + "/", "é" * 24]:
        assert not valid_pid(bad)


async def test_second_login_reuses_a_pending_qr(stores: Stores, service: BotService) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    first = await service.login(user)
    second = await service.login(user)
    assert second.pid == first.pid
    assert not second.fresh
    assert len(await stores.bus.read_starts("w", 10, 100)) == 1


async def test_concurrent_logins_start_one_session(stores: Stores, service: BotService) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    results = await asyncio.gather(*(service.login(user) for _ in range(5)),
                                   return_exceptions=True)
    tickets = [r for r in results if not isinstance(r, Exception)]
    assert all(isinstance(r, LoginInProgress) for r in results if isinstance(r, Exception))
    assert len({t.pid for t in tickets}) == 1
    assert len(await stores.bus.read_starts("w", 10, 100)) == 1


async def test_online_bot_is_not_restarted(stores: Stores, service: BotService) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    await stores.bots.set_state(user.uid, ONLINE, pid="x" * 24, nickname="阿明")
    await stores.bus.acquire(user.uid, "w1", 10_000)
    ticket = await service.login(user)
    assert (ticket.state, ticket.nickname) == (ONLINE, "阿明")
    assert await stores.bus.read_starts("w", 10, 100) == []


async def test_logout_without_a_worker_settles_the_state(stores: Stores,
                                                        service: BotService) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    assert await service.logout(user) is False
    await stores.bots.set_state(user.uid, ONLINE, pid="x" * 24)
    await stores.bots.save_login_data(user.uid, {"k": "v"})
    assert await service.logout(user) is True
    record = await stores.bots.get(user.uid)
    assert record is not None
    assert record.state == "logged_out"
    assert record.login_data is None


async def test_logout_goes_to_the_owner(stores: Stores, service: BotService) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    await stores.bots.set_state(user.uid, "online", worker="w9")
    await stores.bus.acquire(user.uid, "w9", 10_000)
    assert await service.logout(user) is True
    (command,) = await stores.bus.read_own("w9", "0", 100)
    assert command.fields == {"uid": user.uid, "op": "stop", "logout": True}


async def test_logout_of_an_ended_session_sends_nothing(stores: Stores,
                                                        service: BotService) -> None:
    # Logged out a moment ago: its worker still holds the lease while it winds down.
    user, _ = await stores.users.get_or_create("o-a")
    await stores.bots.set_state(user.uid, "logged_out", reason="logout", worker="w9")
    await stores.bus.acquire(user.uid, "w9", 10_000)
    assert await service.logout(user) is False
    assert await stores.bus.read_own("w9", "0", 100) == []


async def test_status_counts_replies_by_beijing_day(stores: Stores, service: BotService) -> None:
    user, _ = await stores.users.get_or_create("o-a")
    assert (await service.status(user)).state == "none"
    with freeze_time("2026-03-01 15:59:00"):  # 23:59 in Beijing
        key = replies_key(user.uid, __import__("time").time())
    assert key.endswith(":20260301")
    with freeze_time("2026-03-01 16:01:00"):  # 00:01 the next day in Beijing
        assert replies_key(user.uid, __import__("time").time()).endswith(":20260302")
    await stores.kv.hit(replies_key(user.uid, __import__("time").time()), 60_000)
    assert (await service.status(user)).replies_today == 1


async def test_resumable_and_counts(stores: Stores) -> None:
    await stores.bots.set_state(1, ONLINE, pid="a" * 24)
    await stores.bots.save_login_data(1, {"cookies": {}})
    await stores.bots.set_state(2, ONLINE, pid="b" * 24)  # online but nothing to resume from
    await stores.bots.set_state(3, "expired", pid="c" * 24)
    assert [r.uid for r in await stores.bots.resumable()] == [1]
    assert await stores.bots.count_by_state() == {ONLINE: 2, "expired": 1}


async def test_qr_store(stores: Stores) -> None:
    qr = QrStore(stores.kv)
    assert await qr.view("p" * 24) is None
    await qr.update("p" * 24, "online")  # an unknown pid stays unknown
    assert await qr.view("p" * 24) is None
    await qr.create("p" * 24, 1000, 2_000_000_000.0, 60_000)
    await qr.put_png("p" * 24, b"\x89PNG")
    await qr.update("p" * 24, "online", "阿明")
    view = await qr.view("p" * 24)
    assert view is not None
    assert (view.uid, view.state, view.nickname, view.has_png) == (1000, "online", "阿明", True)
    assert await qr.png("p" * 24) == b"\x89PNG"
