"""A bot worker: many sessions in one process, driven only through the Redis bus.

It takes start commands while under capacity, owns each session through a Redis lease
renewed by its heartbeat, answers friends with their owner's rules (paced, loop-guarded,
paused while the owner types), records every state change in MongoDB and publishes it as
an event.  It never calls the official-account API: the web tier's notifier turns events
into messages.

Sessions that were online with saved login data and that no live worker owns are
resumed by whichever worker scans first (each heartbeat): after a restart of
``wxreply serve`` that is its own sessions; after another worker died, that worker's.
On SIGTERM a worker stops its sessions without logging them out and hands them over.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import os
import random
import socket
import time
import unicodedata
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from config import Settings
from config.clock import wall_clock
from config.metrics import PROCESS, Metrics
from replybot.driver import AnyDriver, AsyncDriver, IncomingMessage, LoginState
from replybot.matching import Matcher, MatcherCache, compile_rules
from replybot.pacing import Pacer, PacingRules
from replybot.replying import Profile, skip_reason
from replybot.session import Origin, Session
from store import Rule, Stores, StoreUnavailable
from store.bots import (
    FINAL_STATES,
    GUARD_AFTER_FAILURES,
    QrStore,
    replies_key,
    settings_version_key,
)
from store.bus import Bus, Message
from store.pacing import PaceStore

log = logging.getLogger("wxreply.replybot")

HEARTBEAT_S = 3.0
STALE_START_MS = 30_000   # a start left unacknowledged this long was lost by its worker
# Orphans are checked for an owner in batches this large, just before they are resumed.
ORPHAN_BATCH = 20
MSG_DEDUP_MS = 3 * 24 * 3600 * 1000
REPLIES_WINDOW_MS = 2 * 24 * 3600 * 1000
READ_BLOCK_MS = 1000      # below the Redis client's socket timeout
ECHO_WINDOW_S = 60.0      # our own sends come back from WeChat as the owner's messages
ERROR_RESTARTS = 3        # resumes after a driver error before giving up
ERROR_RESTART_WINDOW_S = 600.0
# WeChat restricts sending: auto-replies pause this long, doubling at each new sign of it
# (a restriction notice, a send refused with 1204/1205), up to the maximum.
RESTRICTED_PAUSE_S = 600.0
RESTRICTED_PAUSE_MAX_S = 6 * 3600.0
# Session events, and messages, that use the stores at once (see Worker.event_gate).
# Together below the client pools (100 Redis connections, 100 MongoDB connections),
# which fail rather than queue.
STORE_CONCURRENCY = 32
# Garbage collection (see Worker.collect_garbage): the cyclic garbage that ended sessions
# leave is reclaimed once this many have ended, at most every GC_RECLAIM_MIN_S.
GC_RECLAIM_AFTER = 100
GC_RECLAIM_MIN_S = 600.0
# Below this many sessions a full collection costs under 0.1 s: nothing is frozen.
GC_FREEZE_MIN_SESSIONS = 200


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(self, stores: Stores, settings: Settings, driver_factory: Callable[[], AnyDriver],
                 *, worker_id: str | None = None, capacity: int | None = None,
                 lease_ms: int | None = None, heartbeat_s: float = HEARTBEAT_S,
                 pacer: Pacer | None = None, now: Callable[[], float] = wall_clock,
                 metrics: Metrics = PROCESS) -> None:
        self.stores = stores
        self.metrics = metrics
        self.settings = settings
        self.driver_factory = driver_factory
        self.id = worker_id or settings.worker_id or default_worker_id()
        self.capacity = capacity or settings.worker_capacity
        self.lease_ms = lease_ms or settings.lease_ms
        self.heartbeat_s = heartbeat_s
        self.now = now
        self.bus: Bus = stores.bus
        self.pacer = pacer or Pacer(PaceStore(stores.redis, stores.kv.prefix),
                                    PacingRules.from_settings(settings), now=now)
        self.sessions: dict[int, Session] = {}
        self.matchers = MatcherCache(max_entries=max(self.capacity * 2, 64))
        self.qr = QrStore(stores.kv)
        # Sends block (requests); a bounded pool keeps a burst of replies from spawning
        # threads without limit.
        self.send_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="send")
        # Thousands of sessions can have something to store at the same moment (a restart
        # resumes them all; a burst of messages).  Unbounded, they exhaust the store
        # clients' pools, whose callers then fail (Redis at once, MongoDB after its 3 s
        # timeout) and messages go unanswered; through these gates they wait their turn.
        # Two gates: a message (a few Redis round trips) must not queue behind the state
        # changes of a mass resume, which wait on MongoDB.
        self.event_gate = asyncio.Semaphore(STORE_CONCURRENCY)
        self.message_gate = asyncio.Semaphore(STORE_CONCURRENCY)
        self.started_at = now()
        self.draining = False
        self.running = False
        self._own_after = "0"  # last entry read from this worker's own stream
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error_restarts: dict[int, list[float]] = {}
        self._resuming: set[int] = set()
        # Resumes are paced (WXR_RESUME_RATE a second): the next free slot, monotonic.
        self.resume_rate = settings.resume_rate
        self._resume_slot = 0.0
        self._online_since_freeze = 0
        self._ended_since_reclaim = 0
        self._last_reclaim = time.monotonic()
        # Counters for /healthz, `wxreply status` and the tests.
        self.stats: collections.Counter[str] = collections.Counter()

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        await self.bus.ensure_groups()
        await self.bus.drop_own_stream(self.id)  # commands for an earlier incarnation
        log.info("worker %s up (capacity %d)", self.id, self.capacity)
        self.running = True
        self.metrics.sessions.add(self.session_counts)
        loops = [asyncio.ensure_future(self._forever("taking start commands", self._take_starts)),
                 asyncio.ensure_future(self._forever("reading owner commands",
                                                     self._take_own_commands)),
                 asyncio.ensure_future(self._forever("heartbeat", self.heartbeat,
                                                     self.heartbeat_s)),
                 # Apart from the heartbeat: after a restart there may be thousands of
                 # sessions to resume, and the leases must be renewed meanwhile
                 # (measured: they lapsed while 2,000 sessions were resumed in one go).
                 asyncio.ensure_future(self._forever("resuming orphaned sessions",
                                                     self.resume_orphans, self.heartbeat_s))]
        try:
            await stop.wait()
        finally:
            # Take no new work first, then hand the sessions over.
            self.running = False
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            try:
                await self.shutdown()
            finally:
                self.metrics.sessions.remove(self.session_counts)

    async def shutdown(self, grace_s: float = 15.0) -> None:
        """Stop every session without logging out, then ask other workers to resume the
        online ones: a drain hands sessions over instead of dropping them."""
        self.draining = True
        sessions = list(self.sessions.values())
        online = [s.uid for s in sessions if s.state == LoginState.ONLINE]
        for session in sessions:
            session.stop()
        if sessions:
            await asyncio.wait([asyncio.ensure_future(s.ended.wait()) for s in sessions],
                               timeout=grace_s)
        try:
            for uid in online:
                await self.bus.send_resume(uid)
            await self.bus.retire(self.id)
        except StoreUnavailable as err:
            log.warning("worker %s: hand-over incomplete (%s); leases will lapse", self.id, err)
        self.send_pool.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s down (%d sessions, %d handed over)", self.id, len(sessions),
                 len(online))

    # -- start and resume commands (any worker with room) ------------------------------

    async def _forever(self, what: str, step: Callable[[], Awaitable[object]],
                       pause_s: float = 0.0) -> None:
        """Run ``step`` again and again until the worker stops.  A store outage or a bug
        costs one pause, not the loop.  The loop also ends on the ``running`` flag, not
        only on cancellation: on Python 3.11 a cancel that races an ``asyncio.timeout``
        inside the Redis client can come out as a TimeoutError, i.e. as StoreUnavailable,
        and a loop that relied on the cancel alone would then run forever."""
        while self.running:
            try:
                await step()
            except StoreUnavailable as err:
                log.warning("worker %s: %s: %s", self.id, what, err)
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker %s: error %s", self.id, what)
                await asyncio.sleep(1)
            if pause_s:
                await asyncio.sleep(pause_s)

    async def _take_starts(self) -> None:
        room = self.capacity - len(self.sessions)
        if room <= 0:
            await asyncio.sleep(0.5)
            return
        for message in await self.bus.read_starts(self.id, room, READ_BLOCK_MS):
            await self._start(message)

    async def _start(self, message: Message) -> None:
        fields = message.fields
        try:
            uid = int(fields["uid"])
            if fields.get("op") == "resume":
                await self._resume(uid)
            else:
                await self._start_login(uid, str(fields["pid"]), float(fields["qr_deadline"]))
        except (KeyError, TypeError, ValueError):
            log.warning("worker %s: malformed start command %s", self.id, message.id)
        await self.bus.ack_start(message.id)

    async def _start_login(self, uid: int, pid: str, deadline: float) -> None:
        if deadline <= self.now():
            return  # the QR would already be expired
        current = self.sessions.get(uid)
        if current is not None:
            if current.pid == pid or current.state == LoginState.ONLINE:
                return
            current.stop()  # a newer QR replaces a pending one
        elif not await self._take_lease(uid):
            log.warning("worker %s: session %s is owned elsewhere; start dropped", self.id, uid)
            return
        self._launch(uid, pid, Origin.REQUEST, None, deadline)

    async def _take_lease(self, uid: int, wait_s: float = 3.0) -> bool:
        if await self.bus.acquire(uid, self.id, self.lease_ms):
            return True
        owner = await self.bus.owner(uid)
        if owner == self.id:
            return True  # left by an earlier incarnation with the same id
        # Another worker holds a pending session for this user: ask it to let go.
        await self.bus.send_to_owner(uid, {"op": "stop", "logout": False})
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if await self.bus.acquire(uid, self.id, self.lease_ms):
                return True
        return False

    async def _resume(self, uid: int, *, owned: bool = False) -> bool:
        """Resume ``uid``'s saved login here, if nobody else runs it."""
        if uid in self.sessions or uid in self._resuming or self.draining:
            return False
        # Several loops resume (orphans, resume commands, recycling): one at a time per
        # user, or two of them could both pass the check above and start two sessions.
        self._resuming.add(uid)
        try:
            return await self._resume_now(uid, owned)
        finally:
            self._resuming.discard(uid)

    async def _resume_now(self, uid: int, owned: bool) -> bool:
        if not owned:
            # Orphans and resume commands (a restart, a failover, a hand-over: thousands
            # at once) wait for their slot; a recycled session (owned) does not.  The
            # lease first: a race lost to another worker costs a round trip, not a slot
            # (measured: N workers lost 10-15 % of their slots that way, nearly all of
            # them at the end of a restart, where what is left is raced for by all N).
            if not await self.bus.acquire(uid, self.id, self.lease_ms):
                if await self.bus.owner(uid) != self.id:
                    self.stats["resume_races_lost"] += 1
                    return False
            try:
                await self._resume_turn()
            except asyncio.CancelledError:
                # The worker stops: the lease goes with it now, not when it lapses.
                with contextlib.suppress(StoreUnavailable):
                    await self.bus.release(uid, self.id)
                raise
            # Held while waiting (a slot or two), renewed after it; lapsed meanwhile (a
            # low rate, a short lease) and taken by nobody, taken again.
            held = (await self.bus.renew([uid], self.id, self.lease_ms)
                    or await self.bus.acquire(uid, self.id, self.lease_ms))
            if self.draining or not held:
                await self.bus.release(uid, self.id)
                return False
        record = await self.stores.bots.get(uid)
        if record is None or record.state != LoginState.ONLINE or not record.login_data:
            await self.bus.release(uid, self.id)
            return False
        deadline = self.now() + self.settings.qr_ttl
        await self.qr.create(record.pid, uid, deadline, self.settings.qr_ttl * 1000)
        session = self._launch(uid, record.pid, Origin.RESUME, record.login_data, deadline)
        session.nickname = record.nickname
        session.login_saved = True  # its record is marked as having login data
        self.stats["resumed"] += 1
        return True

    async def _resume_turn(self) -> None:
        """Wait for this worker's next resume slot: at most ``resume_rate`` a second, so
        that WeChat does not see a restart of thousands of sessions as one burst.  Slots
        are handed out in call order, each ``1 / resume_rate`` after the previous one."""
        now = time.monotonic()
        slot = max(now, self._resume_slot)
        self._resume_slot = slot + 1.0 / self.resume_rate
        if slot > now:
            await asyncio.sleep(slot - now)

    def _launch(self, uid: int, pid: str, origin: Origin, resume: dict[str, Any] | None,
                qr_deadline: float) -> Session:
        assert self._loop is not None
        session = Session(uid, pid, self.driver_factory(), self, self._loop, origin=origin,
                          resume=resume, qr_deadline=qr_deadline)
        self.sessions[uid] = session
        if origin == Origin.REQUEST:
            self.metrics.logins.labels("started").inc()
        session.start()
        return session

    # -- commands to this worker (stop) ----------------------------------------------

    async def _take_own_commands(self) -> None:
        for message in await self.bus.read_own(self.id, self._own_after, READ_BLOCK_MS):
            self._own_after = message.id
            await self._own_command(message.fields)

    async def _own_command(self, fields: dict[str, Any]) -> None:
        session = self.sessions.get(int(fields.get("uid", 0)))
        if fields.get("op") == "stop" and session is not None:
            if fields.get("logout"):
                await asyncio.get_running_loop().run_in_executor(self.send_pool, session.logout)
            else:
                session.stop()

    # -- heartbeat: leases, registry, orphans, stale starts, watchdog -----------------

    async def heartbeat(self) -> None:
        uids = list(self.sessions)
        kept = await self.bus.renew(uids, self.id, self.lease_ms)
        if kept < len(uids):
            await self._drop_lost_leases(uids)
        await self.bus.announce(self.id, self.info(), self.lease_ms)
        self._watchdog()
        self.collect_garbage()
        room = self.capacity - len(self.sessions)
        for message in await self.bus.claim_stale_starts(self.id, STALE_START_MS, room):
            await self._start(message)

    async def _drop_lost_leases(self, uids: list[int]) -> None:
        # Our lease lapsed (we were paused or cut off).  Nobody took it: take it again at
        # once, before another worker's orphan scan sees the session as nobody's and
        # starts a second one.  Another worker took the session over: two sessions must
        # never answer the same account.
        owners = await self.bus.owners(uids)
        for uid in uids:
            if owners[uid] is None and uid in self.sessions and \
                    await self.bus.acquire(uid, self.id, self.lease_ms):
                continue
            if owners[uid] != self.id and (session := self.sessions.get(uid)):
                log.warning("worker %s: lost session %s to another worker", self.id, uid)
                self.stats["leases_lost"] += 1
                session.stop()

    async def resume_orphans(self) -> int:
        """Resume online sessions with saved login data that no live worker owns.

        Every worker scans the same list.  Each walks it in an order of its own (shuffled)
        and checks the owners of a small batch just before resuming it: walked in the
        same order from one snapshot of the owners, N workers raced for the same session
        at every step and each lost N - 1 of every N, a Redis round trip or two per lost
        race, paced or not (docs/ARCHITECTURE.md, 'Scale-out and failover')."""
        if self.draining or self.capacity <= len(self.sessions):
            return 0
        candidates = [r.uid for r in await self.stores.bots.resumable()
                      if r.uid not in self.sessions]
        random.shuffle(candidates)
        resumed = 0
        for start in range(0, len(candidates), ORPHAN_BATCH):
            if self.capacity - len(self.sessions) <= 0 or not self.running:
                break
            batch = candidates[start:start + ORPHAN_BATCH]
            owners = await self.bus.owners(batch)
            for uid in batch:
                if self.capacity - len(self.sessions) <= 0 or not self.running:
                    break
                if owners[uid] is None and await self._resume(uid):
                    resumed += 1
        if resumed:
            log.info("worker %s resumed %d session(s)", self.id, resumed)
        return resumed

    def collect_garbage(self) -> None:
        """Keep the sessions' long-lived objects out of the cyclic garbage collector.

        Thousands of sessions hold millions of objects (contacts, mostly) that live as
        long as their session.  Python's full collection walks all of them and stops
        every thread meanwhile: 0.5 s per 1,000 sessions, measured as the reply latency's
        tail (docs/PERFORMANCE.md).  Once sessions have come online their objects are
        moved to the permanent generation (``gc.freeze``), which collections skip;
        reference counting still frees them.  Only cyclic garbage among them waits: after
        ``GC_RECLAIM_AFTER`` sessions ended, one full collection reclaims it (at most every
        ``GC_RECLAIM_MIN_S``) and the survivors are frozen again."""
        if len(self.sessions) < GC_FREEZE_MIN_SESSIONS and not gc.get_freeze_count():
            return
        now = time.monotonic()
        if (self._ended_since_reclaim >= GC_RECLAIM_AFTER
                and now - self._last_reclaim >= GC_RECLAIM_MIN_S):
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._ended_since_reclaim = 0
            self._online_since_freeze = 0
            self._last_reclaim = now
        elif self._online_since_freeze:
            gc.freeze()
            self._online_since_freeze = 0

    def _watchdog(self) -> None:
        """Recycle sessions that look online but have not synced for too long: the
        connection may be dead without either side noticing."""
        limit = self.settings.watchdog_s
        for session in list(self.sessions.values()):
            if (session.state == LoginState.ONLINE and not session.stop_requested
                    and time.monotonic() - session.last_sync > limit):
                log.warning("worker %s: session %s silent for %.0f s; recycling", self.id,
                            session.uid, time.monotonic() - session.last_sync)
                self.stats["recycled"] += 1
                session.recycle = True
                session.stop()

    def session_counts(self) -> dict[str, int]:
        """Sessions by state, for the ``wxreply_bot_sessions`` gauge."""
        return collections.Counter(s.state.value for s in list(self.sessions.values()))

    def info(self) -> dict[str, Any]:
        online = sum(1 for s in self.sessions.values() if s.state == LoginState.ONLINE)
        return {"host": socket.gethostname(), "pid": os.getpid(), "capacity": self.capacity,
                "sessions": len(self.sessions), "online": online,
                "started_at": round(self.started_at), **self.stats}

    # -- session events (SessionSink) --------------------------------------------------

    async def on_qr(self, session: Session, png: bytes) -> None:
        async with self.event_gate:
            await self.qr.put_png(session.pid, png)

    async def on_state(self, session: Session, state: LoginState, detail: dict[str, Any]) -> None:
        async with self.event_gate:
            await self._on_state(session, state, detail)

    async def _on_state(self, session: Session, state: LoginState,
                        detail: dict[str, Any]) -> None:
        if self.sessions.get(session.uid) is not session:
            return  # superseded by a newer login of the same user
        if (state == LoginState.LOGGED_OUT and detail.get("reason") == "error"
                and session.state == LoginState.ONLINE and self._may_restart(session.uid)):
            # A network failure ended the receive loop; the web login is probably still
            # valid.  Resume instead of telling the owner they were logged out.
            session.recycle = True
            return
        await self._record(session, state, detail)

    def _may_restart(self, uid: int) -> bool:
        now = self.now()
        recent = [t for t in self._error_restarts.get(uid, []) if now - t < ERROR_RESTART_WINDOW_S]
        if len(recent) >= ERROR_RESTARTS:
            return False
        self._error_restarts[uid] = [*recent, now]
        return True

    async def _record(self, session: Session, state: LoginState, detail: dict[str, Any]) -> None:
        """Store a state change, show it on the QR page, and tell the web tier."""
        session.state = state
        nickname = str(detail.get("nickname") or session.nickname or "")
        session.nickname = nickname
        reason = str(detail.get("reason") or detail.get("ret") or "")
        wechat_message = str(detail.get("wechat_message") or "")
        extra: dict[str, Any] = {}
        guard: dict[str, Any] = {}
        if state == LoginState.ONLINE:
            session.last_sync = time.monotonic()
            self._online_since_freeze += 1
            await self._refresh(session)
            extra = {"wechat_message": "", "retry_after": 0.0, "failed_logins": 0}
        elif state in (LoginState.REFUSED, LoginState.CLOSED):
            extra = await self._login_guard(session, state, wechat_message)
            if extra["retry_after"]:
                guard = {"retry_after": extra["retry_after"]}
        await self.stores.bots.set_state(session.uid, state.value, pid=session.pid,
                                         nickname=nickname, reason=reason, worker=self.id,
                                         clear_login=state.value in FINAL_STATES, **extra)
        await self.qr.update(session.pid, state.value, nickname, reason=reason,
                             wechat_message=wechat_message)
        await self._publish(session, {
            "type": "state", "state": state.value, "nickname": nickname, "reason": reason,
            "push": bool(detail.get("push")), "resumed": bool(detail.get("resumed")),
            **({"wechat_message": wechat_message} if wechat_message else {}), **guard,
        })
        self._count_login(session, state)  # at the end: a retried record counts once

    def _count_login(self, session: Session, state: LoginState) -> None:
        """``wxreply_bot_logins_total``: how logins end up, from the states recorded."""
        if state == LoginState.REFUSED:
            self.metrics.logins.labels("refused").inc()
        elif state == LoginState.CLOSED:
            self.metrics.logins.labels("closed").inc()
        elif session.origin == Origin.REQUEST and state == LoginState.ONLINE:
            self.metrics.logins.labels("succeeded").inc()
        elif session.origin == Origin.REQUEST and state == LoginState.EXPIRED:
            self.metrics.logins.labels("expired").inc()

    async def _login_guard(self, session: Session, state: LoginState,
                           wechat_message: str) -> dict[str, Any]:
        """The bot record's fields after a login WeChat ended (refused or closed): one
        more failure in a row, and the time until which 登录 is held back.  A closure
        by WeChat holds it at once (scanning again right away is what owners report as
        earning a restriction); refusals after the second in a row."""
        record = await self.stores.bots.get(session.uid, login_data=False)
        failures = (record.failed_logins if record is not None else 0) + 1
        guard_s = self.settings.login_guard_s
        held = guard_s > 0 and (state == LoginState.CLOSED
                                or failures >= GUARD_AFTER_FAILURES)
        return {"wechat_message": wechat_message, "failed_logins": failures,
                "retry_after": round(self.now() + guard_s, 3) if held else 0.0}

    async def _publish(self, session: Session, event: dict[str, Any]) -> None:
        await self.bus.publish({"uid": session.uid, "pid": session.pid,
                                "origin": session.origin.value, **event})

    async def on_notice(self, session: Session, kind: str, detail: dict[str, Any]) -> None:
        """WeChat said it restricts the account: pause auto-replies with back-off and
        tell the owner once per session (more messages would deepen the restriction)."""
        if kind != "restricted" or self.sessions.get(session.uid) is not session:
            return
        now = self.now()
        if session.restricted_until > now:
            return  # the same episode: already paused
        session.restricted_pause_s = min(RESTRICTED_PAUSE_MAX_S, session.restricted_pause_s * 2
                                         or RESTRICTED_PAUSE_S)
        session.restricted_until = now + session.restricted_pause_s
        self.stats["restricted"] += 1
        log.warning("bot %s: WeChat restricts sending (%s); auto-replies paused %.0f s",
                    session.uid, detail, session.restricted_pause_s)
        if not session.restricted_told:
            session.restricted_told = True
            await self._publish(session, {
                "type": "restricted", "wechat_message": str(detail.get("text") or ""),
                "ret": str(detail.get("ret") or ""),
                "retry_after": round(session.restricted_until, 3)})

    async def on_login_data(self, session: Session, data: dict[str, Any]) -> None:
        if self.sessions.get(session.uid) is session:
            async with self.event_gate:
                await self.stores.bots.save_login_data(session.uid, data,
                                                       flagged=session.login_saved)
            if not data.get("partial"):
                session.login_saved = True

    async def on_ended(self, session: Session, final: LoginState) -> None:
        async with self.event_gate:
            await self._on_ended(session, final)

    async def _on_ended(self, session: Session, final: LoginState) -> None:
        if self.sessions.get(session.uid) is not session:
            return
        del self.sessions[session.uid]
        self._ended_since_reclaim += 1
        self.matchers.invalidate(session.uid)
        if session.recycle and not self.draining:
            if await self._resume(session.uid, owned=True):
                return
        if not session.stop_requested and not session.recycle and not session.state.final:
            # The driver ended without reporting why (it crashed): record it.
            await self._record(session, final, {"reason": "error"})
        await self.bus.release(session.uid, self.id)

    # -- replying ----------------------------------------------------------------------

    async def _refresh(self, session: Session) -> None:
        """Reload the owner's switches and rules if they changed since we last looked."""
        version = await self.stores.kv.get(settings_version_key(session.uid))
        if session.settings_version is not None and version == session.settings_version:
            return
        user = await self.stores.users.get(session.uid)
        session.profile = Profile(autoreply=user.autoreply, group_reply=user.group_reply)
        self.matchers.invalidate(session.uid)
        session.settings_version = version or b"0"

    async def _matcher(self, uid: int) -> Matcher:
        matcher = self.matchers.get(uid)
        if matcher is None:
            stamp = self.matchers.stamp()
            matcher = compile_rules(await self.stores.rules.list(uid))
            self.matchers.put(uid, matcher, stamp=stamp)
        return matcher

    async def on_message(self, session: Session, msg: IncomingMessage) -> None:
        # Through the gate only while it uses the stores: not while it waits out its
        # pacing delay, nor while the send pool sends.
        async with self.message_gate:
            rule = await self._decide(session, msg)
        if rule is not None:
            await asyncio.sleep(self.pacer.delay())
            await self._send(session, msg.chat, rule.reply, counts=True)

    async def _decide(self, session: Session, msg: IncomingMessage) -> Rule | None:
        """The rule to answer ``msg`` with, its MsgId claimed; None to stay silent."""
        await self._refresh(session)
        if msg.from_self:
            await self._from_owner(session, msg)
            return None
        if skip_reason(msg, session.profile) is not None:
            return None
        if session.restricted_until > self.now():
            self.stats["held_restricted"] += 1
            self.metrics.suppressed.labels("restricted").inc()
            return None
        rule = (await self._matcher(session.uid)).match(msg.text)
        if rule is None:
            return None
        # Claimed before sending and kept for days: a resumed session that sees the same
        # message again (its saved sync key lags a little) must not answer it twice.
        if not await self.stores.kv.claim(f"bot:msg:{session.uid}:{msg.msg_id}", MSG_DEDUP_MS):
            self.stats["duplicates"] += 1
            self.metrics.suppressed.labels("duplicate").inc()
            return None
        verdict = await self.pacer.check(session.uid, msg.contact_key, rule.number, rule.reply)
        if not verdict.allowed:
            self.stats[f"held_{verdict.reason}"] += 1
            self.metrics.suppressed.labels(verdict.reason or "other").inc()
            if verdict.tell_owner:
                contact = session.driver.contact(msg.chat)
                name = (contact.remark_name or contact.nick_name) if contact else ""
                await self._publish(session, {"type": "loop_guard", "contact": name})
            return None
        return rule

    async def _send(self, session: Session, chat: str, text: str, *, counts: bool) -> bool:
        session.recent_sends.append((chat, text, time.monotonic()))
        loop = asyncio.get_running_loop()
        driver = session.driver
        if isinstance(driver, AsyncDriver):
            sent = await driver.asend_text(chat, text)
        else:
            sent = await loop.run_in_executor(self.send_pool, driver.send_text, chat, text)
        if sent:
            session.send_failures = 0
            if counts:
                self.stats["replied"] += 1
                self.metrics.replies.labels("sent").inc()
                async with self.message_gate:  # the Redis pool fails rather than queues
                    await self.stores.kv.hit(replies_key(session.uid, self.now()),
                                             REPLIES_WINDOW_MS)
            return True
        self.stats["send_failed"] += 1
        self.metrics.replies.labels("send_failed").inc()
        session.send_failures += 1
        log.warning("bot %s: WeChat did not accept a send (%d in a row)", session.uid,
                    session.send_failures)
        if session.send_failures == self.settings.send_failure_alert:
            await self._publish(session, {"type": "send_failures",
                                          "count": session.send_failures})
        return False

    def _is_echo(self, session: Session, msg: IncomingMessage) -> bool:
        """Our own send coming back from WeChat as a message of the owner's."""
        horizon = time.monotonic() - ECHO_WINDOW_S
        for i, (chat, text, at) in enumerate(session.recent_sends):
            if at >= horizon and chat == msg.chat and text.strip() == msg.text.strip():
                del session.recent_sends[i]
                return True
        return False

    async def _from_owner(self, session: Session, msg: IncomingMessage) -> None:
        if self._is_echo(session, msg):
            return
        if msg.chat_kind == "filehelper":
            await self._filehelper_command(session, msg.text)
        elif msg.chat_kind in ("friend", "group"):
            # The owner is answering by hand: stay out of this chat for a while.
            await self.pacer.owner_wrote(session.uid, msg.contact_key)
            self.stats["takeovers"] += 1

    async def _filehelper_command(self, session: Session, text: str) -> None:
        """``#on``, ``#off``, ``#status`` sent to 文件传输助手 from the owner's phone: the
        same effect as 开启 / 关闭 / 状态 on the official account."""
        command = unicodedata.normalize("NFKC", text).strip().casefold()
        uid = session.uid
        if command in ("#on", "#开启"):
            await self.stores.users.set_autoreply(uid, True)
            await self.stores.kv.bump(settings_version_key(uid))
            reply = "自动回复已开启。"
        elif command in ("#off", "#关闭"):
            await self.stores.users.set_autoreply(uid, False)
            await self.stores.kv.bump(settings_version_key(uid))
            reply = "自动回复已关闭。发送 #on 恢复。"
        elif command in ("#status", "#状态"):
            user = await self.stores.users.get(uid)
            today = await self.stores.kv.get(replies_key(uid, self.now()))
            reply = (f"自动回复：{'开启' if user.autoreply else '关闭'}\n"
                     f"规则：{user.rule_count} 条\n今日已回复：{int(today or 0)} 次")
        else:
            return  # the owner's own notes to filehelper
        self.stats["owner_commands"] += 1
        await self._send(session, "filehelper", reply, counts=False)
