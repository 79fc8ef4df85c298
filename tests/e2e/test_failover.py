"""Workers as real processes: one owner per session, kill -9 failover, SIGTERM hand-over.

The fake web WeChat runs in this process (a thread); each ``wxreply worker`` reaches it
over loopback, as workers on other hosts would reach WeChat.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.webwx import FakeAccount, FakeWebWx
from store import Stores
from store.bots import BotService
from tests.conftest import Servers
from tests.util import until

FAILOVER_LIMIT_S = 30.0


class Workers:
    """``wxreply worker`` processes sharing this test's stores and the fake."""

    def __init__(self, tmp_path: Path, servers: Servers, namespace: str, base_url: str) -> None:
        self.tmp_path = tmp_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WXR_")}
        self.env.update({
            "WXR_MONGO_URL": servers.mongo_url, "WXR_REDIS_URL": servers.redis_url,
            "WXR_MONGO_DB": namespace, "WXR_REDIS_PREFIX": f"{namespace}:",
            "WXR_WECHAT_LOGIN_BASE": base_url, "WXR_DATA_DIR": str(tmp_path / "var"),
            "WXR_PACE_DELAY_MIN_MS": "0", "WXR_PACE_DELAY_MAX_MS": "0",
            "WXR_PACE_COOLDOWN_S": "0", "WXR_PACE_PER_MINUTE": "1000",
        })
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, capacity: int) -> subprocess.Popen[bytes]:
        env = {**self.env, "WXR_WORKER_ID": name}
        with (self.tmp_path / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "wxreply", "worker", "--capacity",
                                     str(capacity)], env=env, stdout=out, stderr=out)
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(tmp_path: Path, servers: Servers, namespace: str,
            fake_webwx: FakeWebWx) -> Iterator[Workers]:
    group = Workers(tmp_path, servers, namespace, fake_webwx.base_url)
    try:
        yield group
    finally:
        group.stop_all()


class Fleet:
    """N users, each with a rule, logged in with N fake accounts."""

    def __init__(self, stores: Stores, webwx: FakeWebWx) -> None:
        self.stores = stores
        self.webwx = webwx
        self.accounts: dict[int, FakeAccount] = {}  # uid → the account logged in for it
        self.pushed: collections.Counter[int] = collections.Counter()

    async def log_in(self, n: int) -> None:
        service = BotService(self.stores.bots, self.stores.bus, self.stores.kv,
                             public_url="http://127.0.0.1", qr_ttl_s=120)
        uids = []
        for i in range(n):
            user, _ = await self.stores.users.get_or_create(f"o-fleet-{i:04d}")
            await self.stores.rules.add(user.uid, "你好", f"回复{user.uid}")
            await service.login(user)
            uids.append(user.uid)
        pending = await until(lambda: (p := self.webwx.pending_logins()) and len(p) == n and p,
                              timeout=60)
        accounts = [self.webwx.add_account(f"账号{i:02d}", friends=2, groups=0, mps=0)
                    for i in range(n)]
        for login, account in zip(pending, accounts, strict=True):
            self.webwx.scan(login["uuid"], account)
            self.webwx.confirm(login["uuid"])
        await until(lambda: self._online(uids), timeout=60)
        by_nick = {a.nickname: a for a in accounts}
        for uid in uids:
            record = await self.stores.bots.get(uid)
            assert record is not None
            self.accounts[uid] = by_nick[record.nickname]

    async def _online(self, uids: list[int]) -> bool:
        states = [await self.stores.bots.get(uid) for uid in uids]
        return all(r is not None and r.state == "online" for r in states)

    def push(self, uid: int, text: str = "你好") -> None:
        self.webwx.push_friend_text(self.accounts[uid], 0, text)
        self.pushed[uid] += 1

    def replies(self, uid: int) -> list[str]:
        account = self.accounts[uid]
        return [s.text for s in self.webwx.sent(account) if s.to_user == account.friend_name(0)]

    def all_answered(self) -> bool:
        return not self.unanswered()

    def unanswered(self) -> dict[int, tuple[int, int]]:
        """uid → (pushed, answered) for sessions still owed a reply."""
        out = {}
        for uid in self.accounts:
            got = len(self.replies(uid))
            if got < self.pushed[uid]:
                out[uid] = (self.pushed[uid], got)
        return out

    async def owners(self) -> dict[int, str | None]:
        return await self.stores.bus.owners(list(self.accounts))


async def test_kill_9_of_a_worker_moves_its_sessions(stores: Stores, fake_webwx: FakeWebWx,
                                                     workers: Workers,
                                                     figures: dict[str, Any]) -> None:
    for name in ("w1", "w2", "w3"):
        workers.start(name, capacity=15)
    fleet = Fleet(stores, fake_webwx)
    await fleet.log_in(30)

    owners = await fleet.owners()
    assert None not in owners.values()
    assert set(owners.values()) <= {"w1", "w2", "w3"}
    for uid, owner in owners.items():  # one owner, and the one the bot record names
        record = await stores.bots.get(uid)
        assert record is not None
        assert record.worker == owner
    # The registry is refreshed by each worker's heartbeat.
    await until(lambda: _registry_sessions(stores, 30), timeout=10)

    for uid in fleet.accounts:
        fleet.push(uid)
    await until(fleet.all_answered, timeout=30)

    victim = collections.Counter(owners.values()).most_common(1)[0][0]
    moved = [uid for uid, owner in owners.items() if owner == victim]
    workers.procs[victim].kill()  # kill -9: no hand-over, no lease release
    workers.procs[victim].wait()
    killed_at = time.monotonic()
    for uid in moved:
        fleet.push(uid)  # arrives while nobody owns the session

    async def resumed() -> bool:
        current = await fleet.owners()
        if any(current[uid] in (None, victim) for uid in moved):
            return False
        return await fleet._online(moved)

    figures.update({"workers": 3, "sessions": len(fleet.accounts), "sessions_moved": len(moved),
                    "limit_s": FAILOVER_LIMIT_S})
    await until(resumed, timeout=FAILOVER_LIMIT_S + 5, every=0.2)
    elapsed = time.monotonic() - killed_at
    figures.update({"failover_s": round(elapsed, 1),
                    "new_scans": len(fake_webwx.pending_logins())})
    assert elapsed < FAILOVER_LIMIT_S, f"failover took {elapsed:.1f} s"
    assert fake_webwx.pending_logins() == []  # no new scan for anyone

    for uid in fleet.accounts:
        fleet.push(uid)  # after the resume
    try:
        await until(fleet.all_answered, timeout=30)
    except AssertionError:
        pass  # counted below as lost, and failed on with the details
    await asyncio.sleep(1.5)  # time for any duplicate to show up
    figures.update({
        "messages": sum(fleet.pushed.values()),
        "replies": sum(len(fleet.replies(uid)) for uid in fleet.accounts),
        "answered_twice": sum(max(0, len(fleet.replies(uid)) - fleet.pushed[uid])
                              for uid in fleet.accounts),
        "lost": sum(max(0, fleet.pushed[uid] - len(fleet.replies(uid)))
                    for uid in fleet.accounts),
        "new_scans": len(fake_webwx.pending_logins()),
    })
    assert fleet.unanswered() == {}, (f"unanswered (pushed, answered) after failover; "
                                      f"moved: {moved}")
    for uid in fleet.accounts:
        assert fleet.replies(uid) == [f"回复{uid}"] * fleet.pushed[uid], uid


async def test_sigterm_hands_sessions_over_before_the_lease_lapses(
        stores: Stores, fake_webwx: FakeWebWx, workers: Workers) -> None:
    first = workers.start("d1", capacity=10)
    fleet = Fleet(stores, fake_webwx)
    await fleet.log_in(4)
    assert set((await fleet.owners()).values()) == {"d1"}
    workers.start("d2", capacity=10)
    await until(lambda: _registered(stores, "d2"), timeout=30)

    first.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert await asyncio.to_thread(first.wait, 30) == 0

    async def handed_over() -> bool:
        return set((await fleet.owners()).values()) == {"d2"} and await fleet._online(
            list(fleet.accounts))

    await until(handed_over, timeout=20, every=0.1)
    elapsed = time.monotonic() - stopped_at
    # A hand-over, not a lapse: well before the 10 s lease would have expired.
    assert elapsed < 8.0, f"hand-over took {elapsed:.1f} s"
    for uid in fleet.accounts:
        assert fake_webwx.session_valid(fleet.accounts[uid])  # never logged out
        fleet.push(uid)
    await until(fleet.all_answered, timeout=15)
    await asyncio.sleep(1.0)
    for uid in fleet.accounts:
        assert fleet.replies(uid) == [f"回复{uid}"]


async def _registered(stores: Stores, name: str) -> bool:
    return name in await stores.bus.workers()


async def _registry_sessions(stores: Stores, expected: int) -> bool:
    registry = await stores.bus.workers()
    return sum(info["sessions"] for info in registry.values()) == expected
