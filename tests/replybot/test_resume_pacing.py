"""Resuming saved sessions: paced at WXR_RESUME_RATE per worker, and shared by several
workers without duplicates and without them slowing each other down."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time

from config import Settings
from replybot.webwx.driver import ItchatDriver
from replybot.worker import Worker
from sandbox.webwx import FakeWebWx
from store import Stores
from tests.util import until


async def _seed(stores: Stores, webwx: FakeWebWx, count: int) -> dict[int, int]:
    """``count`` users whose bots are recorded online with saved login data that only a
    push login can use (a wxuin cookie), as after a restart; uid → uin."""
    uins: dict[int, int] = {}
    for i in range(count):
        account = webwx.add_account(f"续{i}", friends=1, groups=0, mps=0)
        user, _ = await stores.users.get_or_create(f"o-resume-{i:04d}")
        uid = user.uid
        await stores.bots.set_state(uid, "online", pid=secrets.token_urlsafe(18),
                                    nickname=account.nickname)
        await stores.bots.save_login_data(uid, {
            "v": 1, "driver": "itchat",
            "cookies": [{"name": "wxuin", "value": str(account.uin), "domain": "",
                         "path": "/"}]})
        uins[uid] = account.uin
    return uins


class Workers:
    def __init__(self, stores: Stores, settings: Settings) -> None:
        self.stores = stores
        self.settings = settings
        self.stop = asyncio.Event()
        self.workers: list[Worker] = []
        self.tasks: list[asyncio.Future[None]] = []

    def start(self, worker_id: str) -> Worker:
        worker = Worker(self.stores, self.settings, lambda: ItchatDriver(save_interval=0.2),
                        worker_id=worker_id, heartbeat_s=0.3, lease_ms=3000)
        self.workers.append(worker)
        self.tasks.append(asyncio.ensure_future(worker.run(self.stop)))
        return worker

    def online(self) -> dict[int, list[str]]:
        """uid → the workers running it online."""
        out: dict[int, list[str]] = {}
        for worker in self.workers:
            for uid, session in worker.sessions.items():
                if session.state == "online":
                    out.setdefault(uid, []).append(worker.id)
        return out

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 60)


def _push_logins(webwx: FakeWebWx) -> None:
    # The owner's phone confirms every push login (the fake's auto_confirm_push).
    webwx.set_options(auto_confirm_push=True)


async def test_resumes_are_paced_at_the_configured_rate(
        stores: Stores, settings: Settings, fake_webwx: FakeWebWx) -> None:
    _push_logins(fake_webwx)
    uins = await _seed(stores, fake_webwx, 24)
    rate = 8
    rig = Workers(stores, dataclasses.replace(settings, resume_rate=rate))
    worker = rig.start("w-paced")
    launched: dict[int, float] = {}
    started = time.monotonic()
    try:
        async def watch() -> bool:
            for uid in worker.sessions:
                launched.setdefault(uid, time.monotonic() - started)
            return len(launched) >= len(uins)

        await until(watch, timeout=30, every=0.02)
        await until(lambda: len(rig.online()) == len(uins), timeout=60)
    finally:
        await rig.close()
    times = sorted(launched.values())
    # 24 resumes at 8/s: the first at once, the last 23/8 = 2.9 s later.  Unpaced, all
    # 24 start within a few tenths of a second.
    span = times[-1] - times[0]
    assert span >= (len(times) - 1) / rate * 0.9, times
    assert span <= (len(times) - 1) / rate * 1.5 + 1.0, times
    # No second of them holds more than the rate (plus the one at its edge).
    for t in times:
        assert sum(1 for u in times if t <= u < t + 1.0) <= rate + 1, times


async def test_several_workers_share_the_orphans_once_each_and_no_slower(
        stores: Stores, settings: Settings, fake_webwx: FakeWebWx) -> None:
    _push_logins(fake_webwx)
    uins = await _seed(stores, fake_webwx, 180)
    rate = 4  # low enough for the pacing, not this busy test process, to set the pace
    rig = Workers(stores, dataclasses.replace(settings, resume_rate=rate,
                                              worker_capacity=180))
    launched: dict[int, float] = {}
    started = time.monotonic()
    for name in ("w-a", "w-b", "w-c"):
        rig.start(name)
    try:
        async def watch() -> bool:
            for worker in rig.workers:
                for uid in worker.sessions:
                    launched.setdefault(uid, time.monotonic() - started)
            return len(launched) >= len(uins)

        await until(watch, timeout=90, every=0.02)
        await until(lambda: len(rig.online()) == len(uins), timeout=120)
        online = rig.online()
        # Each session runs on exactly one worker, and the fake saw one web session each.
        assert all(len(owners) == 1 for owners in online.values()), online
        assert set(online) == set(uins)
        assert sorted(s["uin"] for s in fake_webwx.sessions()) == sorted(uins.values())
        owners = await stores.bus.owners(list(uins))
        assert all(owners[uid] == online[uid][0] for uid in uins)
        # Three workers at 4/s each share 180 sessions: all resumed within 15 s when they
        # split them, 45 s if one did all the work (or the others kept losing races).
        span = max(launched.values())
        assert span < len(uins) / (3 * rate) * 1.5 + 2.0, span
        counts = sorted(len(w.sessions) for w in rig.workers)
        assert counts[0] >= 40, counts  # every worker took a share
        # Shuffled walks: races lost for a session another worker just took are rare.
        lost = sum(w.stats["resume_races_lost"] for w in rig.workers)
        assert lost < len(uins) // 4, lost
    finally:
        await rig.close()


async def test_a_race_lost_to_another_worker_costs_no_resume_slot(
        stores: Stores, settings: Settings, fake_webwx: FakeWebWx) -> None:
    # The end of a restart on N workers: each walks the orphans in its own order from a
    # snapshot of the owners a batch old, so most of what is left was just taken by
    # another worker.  Losing that race must not cost a slot: at 1 resume a second,
    # five lost races before the one free session held it back 5 s.
    _push_logins(fake_webwx)
    uins = await _seed(stores, fake_webwx, 6)
    *taken, free = sorted(uins)
    for uid in taken:
        assert await stores.bus.acquire(uid, "w-other", 60_000)
    rig = Workers(stores, dataclasses.replace(settings, resume_rate=1))
    worker = rig.start("w-late")
    worker.capacity = 0  # set before it runs: no orphan scan of its own, only the calls below
    try:
        await until(lambda: worker.running)
        started = time.monotonic()
        for uid in taken:
            assert await worker._resume(uid) is False
        assert await worker._resume(free) is True
        elapsed = time.monotonic() - started
        assert worker.stats["resume_races_lost"] == len(taken)
        assert elapsed < 0.9, elapsed  # its slot at once: no slot went to a lost race
        owners = await stores.bus.owners(sorted(uins))
        assert owners == {**dict.fromkeys(taken, "w-other"), free: "w-late"}
        await until(lambda: set(rig.online()) == {free}, timeout=30)
    finally:
        await rig.close()


async def test_a_lease_held_through_a_long_wait_for_a_slot_still_resumes(
        stores: Stores, settings: Settings, fake_webwx: FakeWebWx) -> None:
    # Four resumes at once at 1 a second with a 3 s lease: the last waits 3 s for its
    # slot, holding a lease that lapses meanwhile.  Nobody took it: taken again, resumed.
    _push_logins(fake_webwx)
    uins = await _seed(stores, fake_webwx, 4)
    rig = Workers(stores, dataclasses.replace(settings, resume_rate=1))
    worker = rig.start("w-slow")
    worker.capacity = 0  # no orphan scan of its own, only the calls below
    try:
        await until(lambda: worker.running)
        resumes = asyncio.gather(*(worker._resume(uid) for uid in sorted(uins)))
        await asyncio.sleep(0.3)
        # Waiting for their slots, they already hold their leases: no other worker
        # resumes them meanwhile.
        owners = await stores.bus.owners(sorted(uins))
        assert set(owners.values()) == {"w-slow"}, owners
        assert await resumes == [True] * 4
        await until(lambda: set(rig.online()) == set(uins), timeout=30)
    finally:
        await rig.close()


async def test_a_resume_cancelled_while_it_waits_for_its_slot_lets_the_lease_go(
        stores: Stores, settings: Settings, fake_webwx: FakeWebWx) -> None:
    # A worker that stops while a resume waits for its slot: the lease it already took
    # goes at once, not when it lapses (another worker resumes the session meanwhile).
    _push_logins(fake_webwx)
    first, second = sorted(await _seed(stores, fake_webwx, 2))
    rig = Workers(stores, dataclasses.replace(settings, resume_rate=1))
    worker = rig.start("w-stopping")
    worker.capacity = 0  # no orphan scan of its own, only the calls below
    try:
        await until(lambda: worker.running)
        assert await worker._resume(first) is True
        waiting = asyncio.ensure_future(worker._resume(second))  # its slot is 1 s away
        await until(lambda: stores.bus.owner(second), every=0.02)
        assert await stores.bus.owner(second) == "w-stopping"
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert await stores.bus.owner(second) is None
        assert second not in worker.sessions
    finally:
        await rig.close()
