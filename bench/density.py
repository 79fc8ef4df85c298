"""Benchmark: bot density — many itchat sessions in one worker, against one process each.

The fake web WeChat (:mod:`sandbox.webwx`) runs as a process of its own, holding every
long-poll about 25 s as the real service does, with accounts of 500 friends and 20 groups
of 200 members.
A real ``wxreply worker`` process (private Redis and MongoDB-wire server) takes K sessions
the way it takes over orphaned ones in production: each user's bot record says "online"
with saved login data, the worker resumes it, and the resume ends in a push login that the
fake confirms at once.  Figures per K:

* RSS and USS the worker added per session (against the same worker with none) after
  every group of every session spoke once (a member's message, no @-mention, so
  unanswered): itchat fetches a group's member list the first time it speaks, so the
  figure includes what the sessions keep of 20 × 200 members; its threads, and its CPU
  while nothing happens (long-polls renewing, heartbeats);
* reply latency, pacing off: 100 incoming friend messages and 10 group @-mentions of the
  owner per second spread over the sessions, from the moment the fake queues a message
  to the moment it receives the ``webwxsendmsg`` with the reply.  Each session first
  answers one message unmeasured (the steady state: rules compiled, settings read).
* whether every message was answered exactly once: replies are counted per message at
  the fake (each message comes from its own friend, each mention goes to its own group),
  and a duplicate, a reply to an unmentioned group message or a missing one fails the
  run; the sessions count as held only then.

The baseline is one Python process per account running itchat's own ``login()`` and
``run()`` loop (:mod:`bench.baseline_bot`), measured the same way for a smaller K.

Targets (docs/PERFORMANCE.md, 'Targets'): 5,000 sessions per 2-core host, ≤ 1 MB each,
reply p99 < 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import http.client
import json
import random
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    Child,
    PrivateStores,
    bench_env,
    cpu_seconds,
    free_port,
    percentile,
    python_child,
    workdir,
)
from config.settings import BOT_DRIVERS, Settings
from store import MatchMode, Stores, StoreUnavailable

KEYWORD = "你好"
REPLY = "在忙，稍后回复你"
FRIENDS = 500
GROUPS = 20
MEMBERS = 200
HOLD_S = 25.0
MESSAGE_RATE = 100.0
MENTION_RATE = 10.0  # group @-mentions of the owner per second, beside MESSAGE_RATE
SPEAK_RATE = 400.0  # group messages per second while every group speaks once
TARGET_SESSIONS = 5000
TARGET_MB = 1.0
TARGET_P99_MS = 200.0
FULL_KS = (500, 1000, 2000, 5000)
FULL_BASELINE = 20
# The resume phase: K sessions resumed after a restart by each N of workers.
RESUME_K = 500
RESUME_WORKERS = (1, 3)
RESUME_QUICK_K = 10
RESUME_QUICK_WORKERS = (2,)
RESUME_CURVE_S = (10, 30, 60)
RESUME_DB = "bench-resume"
PACING_OFF = {"WXR_PACE_DELAY_MIN_MS": "0", "WXR_PACE_DELAY_MAX_MS": "0",
              "WXR_PACE_COOLDOWN_S": "0", "WXR_PACE_PER_MINUTE": "1000",
              "WXR_LOOP_GUARD_REPLIES": "1000"}
MB = 1024 * 1024
# Each user's rules: the one the messages hit, and two that contain-match other text.
RULES = [(KEYWORD, REPLY, MatchMode.EXACT), ("价格", "价格见菜单", MatchMode.CONTAINS),
         ("地址", "地址见菜单", MatchMode.CONTAINS)]


class Fake:
    """The fake web WeChat as a process, and a keep-alive client for its hooks."""

    def __init__(self, tmp: Path, accounts: int) -> None:
        port = free_port()
        self.child = python_child("sandbox.webwx", [
            "--port", str(port), "--hold-login", str(HOLD_S), "--hold-sync", str(HOLD_S),
            "--accounts", str(accounts), "--friends", str(FRIENDS), "--groups", str(GROUPS),
            "--members", str(MEMBERS), "--auto-confirm-push"], tmp / "fake.log",
            stdout=subprocess.PIPE)
        assert self.child.proc.stdout is not None
        line = self.child.proc.stdout.readline().decode().strip()
        if not line.startswith("FAKE_WEBWX_BASE="):
            raise RuntimeError(f"fake web WeChat did not start: {self.child.log_tail()}")
        self.base = line.split("=", 1)[1]
        self.port = port
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        for attempt in range(2):
            try:
                self._conn.request(method, path, body=data, headers=headers)
                response = self._conn.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                # The keep-alive connection was dropped: reconnect once.
                self._conn.close()
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        return json.loads(payload)

    def accounts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/accounts")["accounts"])

    def sessions(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/sessions")["sessions"])

    def sent(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/sent")["sent"])

    def push(self, uin: int, friend: int, text: str) -> None:
        answer = self._call("POST", "/_fake/push_friend",
                            {"uin": uin, "from_user": friend, "text": text})
        if not answer.get("ok"):
            raise RuntimeError(f"push refused: {answer}")

    def push_group(self, uin: int, group: int, member: int, text: str,
                   mention: bool) -> None:
        answer = self._call("POST", "/_fake/push_group",
                            {"uin": uin, "group": group, "member": member, "text": text,
                             "mention_self": mention})
        if not answer.get("ok"):
            raise RuntimeError(f"push refused: {answer}")

    def polling(self, uins: set[int]) -> int:
        """How many of ``uins`` hold a synccheck long-poll right now (online, idle)."""
        return sum(1 for s in self.sessions() if s["uin"] in uins and s["polling"] > 0)

    def stop(self) -> None:
        self._conn.close()
        self.child.stop()


async def _retrying(make: Any, attempts: int = 5) -> Any:
    """The embedded MongoDB-wire server is slow under load: a seed step that timed out
    is tried again (every step is idempotent)."""
    for attempt in range(attempts):
        try:
            return await make()
        except StoreUnavailable:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1.0 + attempt)
    return None


async def _seed_users(mongo_url: str, redis_url: str, nicknames: list[str],
                      db_name: str = "bench") -> dict[str, int]:
    """One user per account, each with the rule the messages hit; nickname → uid."""
    stores = Stores.connect(mongo_url, redis_url, db_name=db_name, prefix="bench:")
    gate = asyncio.Semaphore(16)
    uids: dict[str, int] = {}

    async def one(nickname: str) -> None:
        async with gate:
            user, _ = await _retrying(lambda: stores.users.get_or_create(f"o-bench-{nickname}"))
            if user.rule_count == 0:
                await _retrying(lambda: stores.rules.add_many(user.uid, RULES))
            if not user.group_reply:  # @-mentions in groups are answered
                await _retrying(lambda: stores.users.set_group_reply(user.uid, True))
            uids[nickname] = user.uid

    try:
        await stores.ensure_indexes()
        await asyncio.gather(*(one(n) for n in nicknames))
    finally:
        await stores.close()
    return uids


async def _seed_bots(mongo_url: str, redis_url: str, uins: dict[int, int],
                     db_name: str = "bench") -> None:
    """Mark uid's bot online with login data that only a push login can use (a wxuin
    cookie): the worker resumes it as it would after a restart."""
    stores = Stores.connect(mongo_url, redis_url, db_name=db_name, prefix="bench:")
    gate = asyncio.Semaphore(16)

    async def one(uid: int, uin: int) -> None:
        async with gate:
            await _retrying(lambda: stores.bots.set_state(
                uid, "online", pid=secrets.token_urlsafe(18), nickname=f"uin{uin}"))
            await _retrying(lambda: stores.bots.save_login_data(uid, {
                "v": 1, "driver": "itchat",
                "cookies": [{"name": "wxuin", "value": str(uin), "domain": "", "path": "/"}]}))

    try:
        await asyncio.gather(*(one(uid, uin) for uid, uin in uins.items()))
    finally:
        await stores.close()


def _rss(pids: list[int]) -> tuple[float, float, int]:
    """(RSS, USS, threads) summed over ``pids``."""
    rss = uss = 0.0
    threads = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            info = proc.memory_full_info()
            rss += info.rss
            uss += info.uss
            threads += proc.num_threads()
    return rss, uss, threads


def _settle_rss(pids: list[int], quiet_s: float) -> tuple[float, float, int]:
    """RSS once it stopped moving (within 1 %) for ``quiet_s``, at most 4 × that."""
    deadline = time.monotonic() + 4 * quiet_s
    last = _rss(pids)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(min(1.0, quiet_s / 3))
        now = _rss(pids)
        if abs(now[0] - last[0]) > 0.01 * max(last[0], 1):
            stable_since = time.monotonic()
        last = now
        if time.monotonic() - stable_since >= quiet_s:
            break
    return last


def _wait(check: Any, timeout: float, what: str, every: float = 1.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start


Key = tuple[int, str]  # (uin, the chat answered: a friend's or a group's UserName)


def _drive(fake: Fake, uins: list[int], rate: float, count: int, rng: random.Random,
           next_friend: dict[int, int], mention_rate: float = 0.0,
           next_group: dict[int, int] | None = None) -> dict[Key, float]:
    """Push ``count`` friend messages at ``rate``/s, each to a session picked at random,
    from a friend that has not written before, and beside them group @-mentions of the
    owner at ``mention_rate``/s, each in a group not mentioned before; key → time pushed
    (a friend's or a group's UserName: one reply is due to each)."""
    events = [(i / rate, "friend") for i in range(count)]
    if mention_rate > 0 and next_group is not None:
        events += [(j / mention_rate, "group")
                   for j in range(int(count / rate * mention_rate))]
    events.sort()
    pushed: dict[Key, float] = {}
    start = time.time()
    for offset, kind in events:
        delay = start + offset - time.time()
        if delay > 0:
            time.sleep(delay)
        uin = uins[rng.randrange(len(uins))]
        if kind == "friend":
            friend = next_friend[uin]
            next_friend[uin] = friend + 1
            if friend >= FRIENDS:
                continue
            at = time.time()
            fake.push(uin, friend, KEYWORD)
            pushed[(uin, _account(uin).friend_name(friend))] = at
        else:
            assert next_group is not None
            group = next_group[uin]
            next_group[uin] = group + 1
            if group >= GROUPS:
                continue
            at = time.time()
            fake.push_group(uin, group, _speaker(group) + 1, KEYWORD, mention=True)
            pushed[(uin, _account(uin).group_name(group))] = at
    return pushed


def _account(uin: int) -> Any:
    """The fake's account ``uin`` as far as UserNames go (see sandbox.webwx.FakeAccount)."""
    from sandbox.webwx import FakeAccount

    return FakeAccount(uin, "", friends=FRIENDS, groups=GROUPS, members=MEMBERS)


def _speaker(group: int) -> int:
    """The member who speaks in ``group`` (any member but the first few, spread)."""
    return (group * 37 + 5) % MEMBERS


def _speak_in_groups(fake: Fake, uins: list[int], timeout: float) -> dict[str, Any]:
    """Every group of every session speaks once: a member's message (the rule's keyword,
    no @-mention, so it must go unanswered).  Waits until the sessions took them all in
    (nothing left queued at the fake) and fetched the member lists itchat asks for."""
    started = time.monotonic()
    t0 = time.time()
    count = 0
    for group in range(GROUPS):
        for uin in uins:
            due = t0 + count / SPEAK_RATE
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            fake.push_group(uin, group, _speaker(group), KEYWORD, mention=False)
            count += 1
    wanted = set(uins)

    def rows() -> list[dict[str, Any]]:
        return [s for s in fake.sessions() if s["uin"] in wanted]

    _wait(lambda: all(s["undelivered"] == 0 for s in rows()), timeout,
          "every group message delivered", every=0.5)
    # Then until each session fetched the member list of each group (itchat does when a
    # group first speaks): a delivered message may still wait for its fetch, and memory
    # or latency read meanwhile would be of a backlog.  A session that does not fetch
    # within the timeout is only reported (member_lists_fetched), not waited for.
    with contextlib.suppress(RuntimeError):
        _wait(lambda: all(s["member_lists"] >= GROUPS for s in rows()),
              max(30.0, timeout - (time.monotonic() - started)), "member lists", every=0.5)
    fetched = sum(s["member_lists"] for s in fake.sessions() if s["uin"] in wanted)
    return {"group_messages": count, "speak_s": time.monotonic() - started,
            "member_lists_fetched": fetched}


def _replies(fake: Fake, uins: set[int], since: float) -> dict[Key, list[float]]:
    """Every reply the fake received from ``uins`` since ``since``: key → times."""
    out: dict[Key, list[float]] = {}
    for item in fake.sent():
        if item["uin"] in uins and item["at"] >= since and item["text"] == REPLY:
            out.setdefault((item["uin"], item["to_user"]), []).append(item["at"])
    return out


def _latency(fake: Fake, pushed: dict[Key, float], wait_s: float,
             since: float) -> dict[str, Any]:
    """Reply latency of the pushed messages, waiting up to ``wait_s`` for stragglers."""
    deadline = time.monotonic() + wait_s
    uins = {uin for uin, _ in pushed}
    while True:
        replies = _replies(fake, uins, since)
        if sum(1 for key in pushed if key in replies) >= len(pushed) or \
                time.monotonic() > deadline:
            break
        time.sleep(0.5)
    lat = sorted(replies[key][0] - at for key, at in pushed.items() if key in replies)
    groups = [key for key in pushed if key[1].startswith("@@")]
    return {"messages": len(pushed), "answered": len(lat),
            "mentions": len(groups), "mentions_answered": sum(1 for k in groups
                                                             if k in replies),
            "p50_ms": percentile(lat, 0.5) * 1000, "p90_ms": percentile(lat, 0.9) * 1000,
            "p99_ms": percentile(lat, 0.99) * 1000,
            "max_ms": lat[-1] * 1000 if lat else float("nan")}


def _exactly_once(fake: Fake, uins: set[int], since: float,
                  expected: dict[Key, float]) -> dict[str, int]:
    """Replies since ``since`` against the messages due one: how many got none, how many
    more than one, and how many replies went to a chat owed none (an unmentioned group
    message answered)."""
    replies = _replies(fake, uins, since)
    return {"missing": sum(1 for key in expected if key not in replies),
            "duplicates": sum(len(t) - 1 for key, t in replies.items()
                              if key in expected and len(t) > 1),
            "unexpected": sum(len(t) for key, t in replies.items() if key not in expected)}


def _phases(quick: bool) -> dict[str, float]:
    return {"idle_s": 2.0 if quick else 30.0, "settle_s": 1.0 if quick else 10.0,
            "measure_s": 1.0 if quick else 30.0, "warm_rate": MESSAGE_RATE}


def _quiet(pids: list[int], below: float, window_s: float, timeout: float) -> None:
    """Until the processes together use less than ``below`` of a core over ``window_s``
    (a worker that just resumed thousands of sessions has their states to store)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        time.sleep(window_s)
        if (cpu_seconds(pids) - before) / window_s < below:
            return


def _idle_then_messages(fake: Fake, pids: list[int], wanted: set[int], phases: dict[str, float],
                        rng: random.Random, warm_wait_s: float,
                        since: float) -> tuple[float, dict[str, Any]]:
    """CPU of ``pids`` while idle (cores), then reply latency at ``MESSAGE_RATE`` friend
    messages and ``MENTION_RATE`` group @-mentions after one unmeasured warm-up message
    per session (it compiles the rules); then the exactly-once count of every reply since
    ``since`` (the group messages before were owed none)."""
    cpu0 = cpu_seconds(pids)
    time.sleep(phases["idle_s"])
    idle_cpu = (cpu_seconds(pids) - cpu0) / phases["idle_s"]
    order = sorted(wanted)
    next_friend = dict.fromkeys(order, 0)
    next_group = dict.fromkeys(order, 0)
    warm = _drive(fake, order, phases["warm_rate"], len(order), rng, next_friend)
    _latency(fake, warm, warm_wait_s, since)
    pushed = _drive(fake, order, MESSAGE_RATE, int(MESSAGE_RATE * phases["measure_s"]),
                    rng, next_friend, MENTION_RATE, next_group)
    latency = _latency(fake, pushed, 30.0, since)
    time.sleep(1.0)  # a duplicate would come right behind its first reply
    counts = _exactly_once(fake, wanted, since, {**warm, **pushed})
    return idle_cpu, {**latency, **counts,
                      "exactly_once": latency["answered"] == latency["messages"]
                      and not any(counts.values())}


def measure_worker(tmp: Path, stores: PrivateStores, fake: Fake, accounts: list[dict[str, Any]],
                   uid_by_nick: dict[str, int], k: int, quick: bool, rng: random.Random,
                   rss_empty: list[float], driver: str = "thread") -> dict[str, Any]:
    """K sessions in one ``wxreply worker`` on the given bot driver (``WXR_BOT_DRIVER``)."""
    phases = _phases(quick)
    chosen = accounts[:k]
    env = bench_env(
        WXR_MONGO_URL=stores.mongo.url, WXR_REDIS_URL=stores.redis.url,
        WXR_MONGO_DB="bench", WXR_REDIS_PREFIX="bench:", WXR_DATA_DIR=str(tmp / "var"),
        WXR_WECHAT_LOGIN_BASE=fake.base, WXR_WORKER_ID=f"bench-{driver}-{k}",
        WXR_WORKER_CAPACITY=str(k), WXR_LOG_LEVEL="WARNING", WXR_BOT_DRIVER=driver,
        **PACING_OFF)  # resumes at the documented pace (WXR_RESUME_RATE's default)
    if not rss_empty:
        # The same worker without sessions: imported, connected, heartbeats running.
        idle = python_child("wxreply", ["worker"], tmp / "worker-empty.log", env=env)
        try:
            time.sleep(3.0)
            empty = _settle_rss([idle.pid], phases["settle_s"] / 2)
            rss_empty += [empty[0], empty[1]]  # RSS, then USS
        finally:
            idle.kill()
    rss0 = rss_empty[0]
    uins = {uid_by_nick[a["nickname"]]: int(a["uin"]) for a in chosen}
    asyncio.run(_seed_bots(stores.mongo.url, stores.redis.url, uins))
    wanted = set(uins.values())
    started = time.monotonic()
    since = time.time()
    worker = python_child("wxreply", ["worker"], tmp / f"worker-{driver}-{k}.log", env=env)
    try:
        _wait(lambda: fake.polling(wanted) >= k, 120 + k * 0.2, f"{k} sessions online")
        ramp_s = time.monotonic() - started
        # Then until the states of the ramp are stored and memory stopped growing.
        _quiet([worker.pid, *stores.pids], 0.5, 2.0, 60 + k * 0.1)
        silent_rss, silent_uss, _ = _settle_rss([worker.pid], phases["settle_s"])
        spoke = _speak_in_groups(fake, sorted(wanted), 120 + k * 0.4)
        _quiet([worker.pid, *stores.pids], 0.5, 2.0, 60 + k * 0.1)
        rss, uss, threads = _settle_rss([worker.pid], phases["settle_s"])
        online = fake.polling(wanted)
        idle_cpu, latency = _idle_then_messages(fake, [worker.pid], wanted, phases, rng, 60.0,
                                                since)
        rss_after = _rss([worker.pid])[0]
        online_after = fake.polling(wanted)
    finally:
        worker.kill()
    return {
        "driver": driver, "sessions": k, "online": online, "ramp_s": ramp_s,
        # Held: online through the run, and every message answered exactly once.
        "held": k if min(online, online_after) >= k and latency["exactly_once"] else 0,
        "rss_before_mb": rss0 / MB, "rss_mb": rss / MB, "uss_mb": uss / MB,
        "rss_after_messages_mb": rss_after / MB,
        "added_mb_per_session": (rss - rss0) / MB / k,
        # USS (memory only this process holds): the fair measure beside a process per
        # account, whose RSS counts the shared libraries once per process.
        "added_uss_mb_per_session": (uss - rss_empty[-1]) / MB / k,
        # The same before any group spoke: what the member lists add is the difference.
        "silent_added_mb_per_session": (silent_rss - rss0) / MB / k,
        "silent_added_uss_mb_per_session": (silent_uss - rss_empty[-1]) / MB / k,
        **spoke,
        "threads": threads,
        "idle_cpu_pct": idle_cpu * 100, "idle_cpu_us_per_session_s": idle_cpu / k * 1e6,
        **{f"reply_{k2}": v for k2, v in latency.items()},
    }


def measure_baseline(tmp: Path, fake: Fake, accounts: list[dict[str, Any]], count: int,
                     quick: bool, rng: random.Random) -> dict[str, Any]:
    """``count`` processes, one itchat bot each."""
    phases = _phases(quick)
    chosen = accounts[:count]
    children: list[Child] = []
    since = time.time()
    try:
        started = time.monotonic()
        for account in chosen:
            children.append(python_child("bench.baseline_bot", [
                "--base", fake.base, "--uin", str(account["uin"]), "--keyword", KEYWORD,
                "--reply", REPLY], tmp / f"baseline-{account['uin']}.log"))
        wanted = {int(a["uin"]) for a in chosen}
        _wait(lambda: fake.polling(wanted) >= count, 120, f"{count} baseline bots online")
        ramp_s = time.monotonic() - started
        pids = [c.pid for c in children]
        spoke = _speak_in_groups(fake, sorted(wanted), 120)
        rss, uss, threads = _settle_rss(pids, phases["settle_s"])
        idle_cpu, latency = _idle_then_messages(fake, pids, wanted, phases, rng, 30.0,
                                                since)
    finally:
        for child in children:
            child.kill()
    return {
        "sessions": count, "processes": count, "ramp_s": ramp_s,
        "rss_mb": rss / MB, "uss_mb": uss / MB,
        "added_mb_per_session": rss / MB / count, "uss_mb_per_session": uss / MB / count,
        **spoke, "threads": threads, "idle_cpu_pct": idle_cpu * 100,
        "idle_cpu_us_per_session_s": idle_cpu / count * 1e6,
        **{f"reply_{k2}": v for k2, v in latency.items()},
    }


async def _resume_census(mongo_url: str, redis_url: str, prefix: str,
                         uids: list[int]) -> tuple[dict[str, dict[str, Any]],
                                                  dict[int, str | None]]:
    """What the workers announced (sessions, online, resumed, races lost) and who holds
    each of ``uids``'s lease."""
    stores = Stores.connect(mongo_url, redis_url, db_name=RESUME_DB, prefix=prefix)
    try:
        return await stores.bus.workers(), await stores.bus.owners(uids)
    finally:
        await stores.close()


def _online_at(curve: list[tuple[float, int]], at: float) -> int:
    """Sessions online ``at`` seconds into the restart, from the samples taken."""
    return max((n for t, n in curve if t <= at), default=0)


def measure_resume(tmp: Path, stores: PrivateStores, fake: Fake, accounts: list[dict[str, Any]],
                   uid_by_nick: dict[str, int], k: int, workers: int, quick: bool,
                   driver: str, rate: int | None = None) -> dict[str, Any]:
    """A restart of ``workers`` ``wxreply worker`` processes over K sessions recorded
    online with saved login data (a push login each), resumed at the documented pace
    (``WXR_RESUME_RATE``'s default, or ``rate``): how long until all K are online at the fake, how
    they spread over the workers, and whether any was resumed twice.

    Each run has a Redis prefix of its own (no lease or stream of a run before it) and
    the sessions' records are seeded anew (the push-only login data)."""
    chosen = accounts[:k]
    prefix = f"bench-resume-{workers}:"
    uins = {uid_by_nick[a["nickname"]]: int(a["uin"]) for a in chosen}
    wanted = set(uins.values())
    asyncio.run(_seed_bots(stores.mongo.url, stores.redis.url, uins, RESUME_DB))
    # The sessions of a run before this one were killed with their worker: until the
    # fake saw their long-polls go, they would count as online.
    _wait(lambda: fake.polling(wanted) == 0, 60, "the previous sessions' polls to end")
    rate = rate or Settings().resume_rate
    children: list[Child] = []
    pids: list[int] = []
    started = time.monotonic()
    cpu0 = {"workers": 0.0, "stores": cpu_seconds(stores.pids),
            "fake": cpu_seconds([fake.child.pid])}
    try:
        for i in range(workers):
            env = bench_env(
                WXR_MONGO_URL=stores.mongo.url, WXR_REDIS_URL=stores.redis.url,
                WXR_MONGO_DB=RESUME_DB, WXR_REDIS_PREFIX=prefix,
                WXR_DATA_DIR=str(tmp / f"var-resume-{workers}-{i}"),
                WXR_WECHAT_LOGIN_BASE=fake.base, WXR_WORKER_ID=f"resume-{workers}-{i}",
                WXR_WORKER_CAPACITY=str(k), WXR_LOG_LEVEL="WARNING", WXR_BOT_DRIVER=driver,
                WXR_RESUME_RATE=str(rate), **PACING_OFF)
            children.append(python_child("wxreply", ["worker"],
                                         tmp / f"worker-resume-{workers}-{i}.log", env=env))
        pids = [c.pid for c in children]
        curve: list[tuple[float, int]] = []
        # Sessions the workers had started resuming, from their announcements (each
        # heartbeat): set beside the sessions online, it tells a slow walk from slow logins.
        launched: list[tuple[float, int]] = []
        timeout = 60 + 3 * k / rate
        while True:
            online = fake.polling(wanted)
            at = time.monotonic() - started
            curve.append((at, online))
            if not launched or at - launched[-1][0] >= 1.0:
                infos = asyncio.run(_resume_census(stores.mongo.url, stores.redis.url,
                                                   prefix, []))[0]
                launched.append((at, sum(int(w.get("resumed", 0)) for w in infos.values())))
            if online >= k:
                break
            if at > timeout:
                raise RuntimeError(f"{online} of {k} sessions online after {at:.0f} s "
                                   f"on {workers} worker(s)")
            time.sleep(0.25 if quick else 0.5)
        all_online_s = curve[-1][0]
        cpu = {"workers": cpu_seconds(pids) - cpu0["workers"],
               "stores": cpu_seconds(stores.pids) - cpu0["stores"],
               "fake": cpu_seconds([fake.child.pid]) - cpu0["fake"]}
        # Then until every worker announced its sessions (each heartbeat, 3 s).
        census: tuple[dict[str, dict[str, Any]], dict[int, str | None]] = ({}, {})

        def announced() -> bool:
            nonlocal census
            census = asyncio.run(_resume_census(stores.mongo.url, stores.redis.url,
                                                prefix, sorted(uins)))
            return sum(int(w.get("online", 0)) for w in census[0].values()) >= k

        with contextlib.suppress(RuntimeError):
            _wait(announced, 20.0, "the workers' announcements", every=1.0)
        # All online, nothing to resume: what the workers and the stores cost at rest.
        idle_s = 2.0 if quick else 10.0
        before = cpu_seconds(pids), cpu_seconds(stores.pids)
        time.sleep(idle_s)
        idle = {"workers": round((cpu_seconds(pids) - before[0]) / idle_s, 3),
                "stores": round((cpu_seconds(stores.pids) - before[1]) / idle_s, 3)}
        online_end = fake.polling(wanted)
    finally:
        for child in children:
            child.kill()
    infos, owners = census
    by_worker = {name: int(owners_n) for name, owners_n in sorted(
        collections.Counter(o for o in owners.values() if o is not None).items())}
    resumed = sum(int(w.get("resumed", 0)) for w in infos.values())
    return {
        "driver": driver, "sessions": k, "workers": workers, "rate": rate,
        "all_online_s": all_online_s,
        # The pace alone: K at ``rate`` a second on each worker, the first at once.
        "paced_s": (k / workers - 1) / rate,
        **{f"online_at_{t}s": _online_at(curve, t) for t in RESUME_CURVE_S},
        "online_end": online_end,
        "curve": [(round(t, 2), n) for t, n in curve],
        "launched": [(round(t, 2), n) for t, n in launched],
        "cpu_cores": {name: round(v / all_online_s, 2) for name, v in cpu.items()},
        "idle_cpu_cores": idle,
        "leases_by_worker": by_worker,
        "sessions_by_worker": {name: int(w.get("sessions", 0)) for name, w in
                               sorted(infos.items())},
        "unowned": sum(1 for o in owners.values() if o is None),
        "resumed": resumed, "resumed_twice": max(0, resumed - k),
        "races_lost": sum(int(w.get("resume_races_lost", 0)) for w in infos.values()),
        "leases_lost": sum(int(w.get("leases_lost", 0)) for w in infos.values()),
    }


def run_resume(quick: bool = False, k: int | None = None,
               workers: tuple[int, ...] | None = None, driver: str | None = None,
               rate: int | None = None) -> list[dict[str, Any]]:
    """The resume phase on its own: a fake and stores of its own, one run per N."""
    k = k or (RESUME_QUICK_K if quick else RESUME_K)
    workers = workers or (RESUME_QUICK_WORKERS if quick else RESUME_WORKERS)
    driver = driver or Settings().bot_driver
    with workdir("wxr-bench-resume-") as tmp, PrivateStores(tmp) as stores:
        fake = Fake(tmp, k)
        try:
            return _resume_rows(tmp, stores, fake, fake.accounts(), k, workers, quick, driver,
                                rate)
        finally:
            fake.stop()


def _resume_rows(tmp: Path, stores: PrivateStores, fake: Fake, accounts: list[dict[str, Any]],
                 k: int, workers: tuple[int, ...], quick: bool, driver: str,
                 rate: int | None = None) -> list[dict[str, Any]]:
    chosen = accounts[:k]
    uid_by_nick = asyncio.run(_seed_users(stores.mongo.url, stores.redis.url,
                                          [a["nickname"] for a in chosen], RESUME_DB))
    return [measure_resume(tmp, stores, fake, chosen, uid_by_nick, k, n, quick, driver, rate)
            for n in workers]


def run(quick: bool = False, ks: tuple[int, ...] | None = None,
        baseline: int | None = None,
        drivers: tuple[str, ...] | None = None, resume_workers: tuple[int, ...] | None = None,
        resume_k: int | None = None) -> dict[str, Any]:
    """Measure and return the figures (what ``main`` prints).  Each driver in ``drivers``
    (both by default) runs every K; the targets are judged on the shipped default's rows
    (``Settings.bot_driver``), the other driver's rows stand beside them.  Then the
    resume phase, on the shipped driver: ``resume_k`` sessions resumed by each number of
    workers in ``resume_workers``."""
    ks = ks or ((20,) if quick else FULL_KS)
    resume_k = resume_k or (RESUME_QUICK_K if quick else RESUME_K)
    resume_workers = resume_workers or (RESUME_QUICK_WORKERS if quick else RESUME_WORKERS)
    drivers = drivers or BOT_DRIVERS
    shipped = Settings().bot_driver
    baseline = baseline or (2 if quick else FULL_BASELINE)
    rng = random.Random(20240611)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with workdir("wxr-bench-density-") as tmp, PrivateStores(tmp) as stores:
        fake = Fake(tmp, max(max(ks), baseline, resume_k))
        try:
            accounts = fake.accounts()
            uid_by_nick = asyncio.run(_seed_users(stores.mongo.url, stores.redis.url,
                                                  [a["nickname"] for a in accounts]))
            rss_empty: list[float] = []
            for driver in drivers:
                for k in ks:
                    rows.append(measure_worker(tmp, stores, fake, accounts, uid_by_nick, k,
                                               quick, rng, rss_empty, driver))
            base = measure_baseline(tmp, fake, accounts, baseline, quick, rng)
            resume = _resume_rows(tmp, stores, fake, accounts, resume_k, resume_workers,
                                  quick, shipped)
        finally:
            fake.stop()
    judged = [r for r in rows if r["driver"] == shipped] or rows
    biggest = judged[-1]
    targets = {
        # Held: online, and every message answered exactly once (see measure_worker).
        "sessions": biggest["held"] >= TARGET_SESSIONS,
        "memory": all(r["added_mb_per_session"] <= TARGET_MB for r in judged),
        "p99": all(r["reply_p99_ms"] < TARGET_P99_MS for r in judged),
    }
    answered = all(r["reply_exactly_once"] for r in [*rows, base])
    return {
        "quick": quick, "elapsed_s": time.monotonic() - started,
        "friends": FRIENDS, "groups": GROUPS, "members": MEMBERS, "hold_s": HOLD_S,
        "rate": MESSAGE_RATE, "mention_rate": MENTION_RATE,
        "shipped_driver": shipped, "biggest": biggest, "worker": rows, "baseline": base,
        "resume": resume,
        # Sum of USS, not RSS, on both sides.
        "memory_ratio": base["uss_mb_per_session"] / biggest["added_uss_mb_per_session"]
        if biggest["added_uss_mb_per_session"] > 0 else float("inf"),
        "answered_all": answered, "targets": targets,
        "target_met": all(targets.values()) and answered,
    }


def _answered(row: dict[str, Any]) -> str:
    extra = [f"{row[f'reply_{k}']} {k}" for k in ("duplicates", "unexpected")
             if row.get(f"reply_{k}")]
    return (f"{row['reply_answered']}/{row['reply_messages']} "
            f"(mentions {row['reply_mentions_answered']}/{row['reply_mentions']})"
            + (f", {', '.join(extra)}" if extra else "")
            + ("" if row["reply_exactly_once"] else " **not exactly once**"))


def format_table(result: dict[str, Any]) -> list[str]:
    lines = ["| setup | sessions | added RSS / session (USS) | threads | CPU at idle | "
             "reply p50 / p99 (100 msg/s + 10 @/s) | answered once |",
             "|---|---|---|---|---|---|---|"]
    for row in result["worker"]:
        lines.append(
            f"| one `wxreply worker`, {row['driver']} driver | {row['sessions']:,} | "
            f"{row['added_mb_per_session'] * 1024:,.0f} KB "
            f"({row['added_uss_mb_per_session'] * 1024:,.0f} KB) | {row['threads']:,} | "
            f"{row['idle_cpu_pct']:.1f} % of a core | "
            f"{row['reply_p50_ms']:.0f} / {row['reply_p99_ms']:.0f} ms | {_answered(row)} |")
    base = result["baseline"]
    lines.append(
        f"| baseline: a process per account | {base['sessions']:,} | "
        f"{base['added_mb_per_session']:,.1f} MB ({base['uss_mb_per_session']:,.1f} MB) | "
        f"{base['threads']:,} | {base['idle_cpu_pct']:.1f} % of a core | "
        f"{base['reply_p50_ms']:.0f} / {base['reply_p99_ms']:.0f} ms | {_answered(base)} |")
    return lines


def format_resume_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| workers | sessions | resume rate | all online | the pace alone | online at "
             + " / ".join(f"{t} s" for t in RESUME_CURVE_S)
             + " | leases per worker | resumed twice | races lost | CPU (workers, stores, "
             "fake) | CPU at rest after (workers, stores) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cpu = row["cpu_cores"]
        lines.append(
            f"| {row['workers']} | {row['sessions']:,} | {row['rate']}/s per worker | "
            f"{row['all_online_s']:.1f} s | "
            f"{row['paced_s']:.1f} s | "
            + " / ".join(f"{row[f'online_at_{t}s']:,}" for t in RESUME_CURVE_S)
            + f" | {', '.join(str(n) for n in row['leases_by_worker'].values())} | "
            f"{row['resumed_twice']} | {row['races_lost']} | "
            f"{cpu['workers']:.2f}, {cpu['stores']:.2f}, {cpu['fake']:.2f} cores | "
            f"{row['idle_cpu_cores']['workers']:.2f}, {row['idle_cpu_cores']['stores']:.2f} "
            "cores |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.density", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--k", type=int, action="append", help="session counts (repeatable)")
    parser.add_argument("--baseline", type=int, help="baseline processes")
    parser.add_argument("--driver", action="append", choices=BOT_DRIVERS,
                        help="bot driver (repeatable; default: both)")
    parser.add_argument("--resume-workers", type=int, action="append",
                        help="workers of the resume phase (repeatable; default: "
                        f"{', '.join(str(n) for n in RESUME_WORKERS)})")
    parser.add_argument("--resume-k", type=int,
                        help=f"sessions of the resume phase (default {RESUME_K})")
    parser.add_argument("--resume-rate", type=int,
                        help="WXR_RESUME_RATE of the resume phase's workers (default: its "
                        "default)")
    parser.add_argument("--resume-only", action="store_true",
                        help="only the resume phase (shipped driver, or the first --driver)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    resume_workers = tuple(args.resume_workers) if args.resume_workers else None
    if args.resume_only:
        resume = run_resume(args.quick, args.resume_k, resume_workers,
                            args.driver[0] if args.driver else None, args.resume_rate)
        if args.json:
            print(json.dumps(resume, indent=1))
        print("\n".join(format_resume_table(resume)))
        return 0 if all(r["resumed_twice"] == 0 and r["unowned"] == 0 for r in resume) else 1
    result = run(args.quick, tuple(args.k) if args.k else None, args.baseline,
                 tuple(args.driver) if args.driver else None, resume_workers, args.resume_k)
    if args.json:
        print(json.dumps(result, indent=1))
    print("\n".join(format_table(result)))
    print("\n".join(format_resume_table(result["resume"])))
    print(f"memory per session: baseline / worker = {result['memory_ratio']:.0f}×; "
          f"targets {result['targets']}")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
