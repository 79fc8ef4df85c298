"""A bot worker: many sessions in one process, driven only through the Redis bus.

It takes start commands while under capacity, owns each session through a Redis lease
renewed by its heartbeat, answers friends with their owner's rules, records every state
change in MongoDB and publishes it as an event.  It never calls the official-account
API: the web tier's notifier turns events into messages.

On start, and then every few heartbeats, it resumes sessions that were online with saved
login data and that no live worker owns: after a restart of ``wxreply serve`` that is
its own sessions; after another worker died, that worker's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from config import Settings
from config.clock import wall_clock
from replybot.driver import Driver, IncomingMessage, LoginState
from replybot.matching import Matcher, MatcherCache, compile_rules
from replybot.replying import Profile, skip_reason
from replybot.session import Origin, Session
from store import Stores, StoreUnavailable
from store.bots import FINAL_STATES, QrStore, replies_key, settings_version_key
from store.bus import Message

log = logging.getLogger("wxreply.replybot")

LEASE_MS = 15_000
HEARTBEAT_S = 5.0
RESUME_EVERY = 2          # heartbeats between scans for orphaned sessions
STALE_START_MS = 30_000   # a start left unacknowledged this long was lost by its worker
MSG_DEDUP_MS = 3 * 24 * 3600 * 1000
REPLIES_WINDOW_MS = 2 * 24 * 3600 * 1000
READ_BLOCK_MS = 1000      # below the Redis client's socket timeout


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(self, stores: Stores, settings: Settings, driver_factory: Callable[[], Driver],
                 *, worker_id: str | None = None, capacity: int | None = None,
                 lease_ms: int = LEASE_MS, heartbeat_s: float = HEARTBEAT_S,
                 now: Callable[[], float] = wall_clock) -> None:
        self.stores = stores
        self.settings = settings
        self.driver_factory = driver_factory
        self.id = worker_id or settings.worker_id or default_worker_id()
        self.capacity = capacity or settings.worker_capacity
        self.lease_ms = lease_ms
        self.heartbeat_s = heartbeat_s
        self.now = now
        self.sessions: dict[int, Session] = {}
        self.matchers = MatcherCache(max_entries=max(self.capacity * 2, 64))
        self.qr = QrStore(stores.kv)
        # Sends block (requests); a bounded pool keeps a burst of replies from spawning
        # threads without limit.
        self.send_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="send")
        self.started_at = now()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Counters for /healthz and the tests: replies sent, duplicates skipped, sends
        # WeChat refused.
        self.stats = {"replied": 0, "duplicates": 0, "send_failed": 0}

    @property
    def bus(self):  # type: ignore[no-untyped-def]
        return self.stores.bus

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        await self.bus.ensure_groups()
        await self.bus.drop_own_stream(self.id)  # commands for an earlier incarnation
        log.info("worker %s up (capacity %d)", self.id, self.capacity)
        loops = [asyncio.ensure_future(f()) for f in
                 (self._starts_loop, self._own_loop, self._heartbeat_loop)]
        try:
            await stop.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.shutdown()

    async def shutdown(self, grace_s: float = 15.0) -> None:
        """Stop every session without logging out, so another worker (or this one after a
        restart) resumes it without a scan; then give up the leases."""
        sessions = list(self.sessions.values())
        for session in sessions:
            session.stop()
        if sessions:
            await asyncio.wait([asyncio.ensure_future(s.ended.wait()) for s in sessions],
                               timeout=grace_s)
        try:
            await self.bus.retire(self.id)
        except StoreUnavailable:
            pass
        self.send_pool.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s down (%d sessions handed back)", self.id, len(sessions))

    # -- start commands ----------------------------------------------------------------

    async def _starts_loop(self) -> None:
        while True:
            try:
                room = self.capacity - len(self.sessions)
                if room <= 0:
                    await asyncio.sleep(0.5)
                    continue
                for message in await self.bus.read_starts(self.id, room, READ_BLOCK_MS):
                    await self._start(message)
            except StoreUnavailable as err:
                log.warning("worker %s: bus unavailable: %s", self.id, err)
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker %s: error taking a start command", self.id)
                await asyncio.sleep(1)

    async def _start(self, message: Message) -> None:
        fields = message.fields
        try:
            uid, pid = int(fields["uid"]), str(fields["pid"])
            deadline = float(fields["qr_deadline"])
        except (KeyError, TypeError, ValueError):
            log.warning("worker %s: malformed start command %s", self.id, message.id)
            await self.bus.ack_start(message.id)
            return
        if deadline <= self.now():
            await self.bus.ack_start(message.id)  # the QR would already be expired
            return
        current = self.sessions.get(uid)
        if current is not None:
            if current.pid == pid or current.state == LoginState.ONLINE:
                await self.bus.ack_start(message.id)
                return
            current.stop()  # a newer QR replaces a pending one
        elif not await self._take_lease(uid):
            log.warning("worker %s: session %s is owned elsewhere; start dropped", self.id, uid)
            await self.bus.ack_start(message.id)
            return
        self._launch(uid, pid, Origin.REQUEST, None, deadline)
        await self.bus.ack_start(message.id)

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

    def _launch(self, uid: int, pid: str, origin: Origin, resume: dict[str, Any] | None,
                qr_deadline: float) -> Session:
        assert self._loop is not None
        session = Session(uid, pid, self.driver_factory(), self, self._loop, origin=origin,
                          resume=resume, qr_deadline=qr_deadline)
        self.sessions[uid] = session
        session.start()
        return session

    # -- commands to this worker (stop) ----------------------------------------------

    async def _own_loop(self) -> None:
        after = "0"
        while True:
            try:
                for message in await self.bus.read_own(self.id, after, READ_BLOCK_MS):
                    after = message.id
                    await self._own_command(message.fields)
            except StoreUnavailable as err:
                log.warning("worker %s: bus unavailable: %s", self.id, err)
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker %s: error handling an owner command", self.id)
                await asyncio.sleep(1)

    async def _own_command(self, fields: dict[str, Any]) -> None:
        uid = int(fields.get("uid", 0))
        session = self.sessions.get(uid)
        if fields.get("op") == "stop" and session is not None:
            if fields.get("logout"):
                await asyncio.get_running_loop().run_in_executor(self.send_pool, session.logout)
            else:
                session.stop()

    # -- heartbeat: leases, registry, orphans, stale starts ----------------------------

    async def _heartbeat_loop(self) -> None:
        beat = 0
        while True:
            try:
                await self._heartbeat(resume=beat % RESUME_EVERY == 0)
            except StoreUnavailable as err:
                log.warning("worker %s: heartbeat failed: %s", self.id, err)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker %s: heartbeat error", self.id)
            beat += 1
            await asyncio.sleep(self.heartbeat_s)

    async def _heartbeat(self, resume: bool) -> None:
        uids = list(self.sessions)
        kept = await self.bus.renew(uids, self.id, self.lease_ms)
        if kept < len(uids):
            await self._drop_lost_leases(uids)
        await self.bus.announce(self.id, self.info(), self.lease_ms)
        if resume:
            await self.resume_orphans()
        room = self.capacity - len(self.sessions)
        for message in await self.bus.claim_stale_starts(self.id, STALE_START_MS, room):
            await self._start(message)

    async def _drop_lost_leases(self, uids: list[int]) -> None:
        # Our lease lapsed (we were paused or cut off) and another worker took the session
        # over: two sessions must never answer the same account.
        for uid in uids:
            if await self.bus.owner(uid) not in (self.id, None):
                session = self.sessions.get(uid)
                if session is not None:
                    log.warning("worker %s: lost session %s to another worker", self.id, uid)
                    session.stop()

    async def resume_orphans(self) -> int:
        """Resume online sessions with saved login data that no live worker owns."""
        resumed = 0
        for record in await self.stores.bots.resumable():
            if self.capacity - len(self.sessions) <= 0:
                break
            if record.uid in self.sessions or record.login_data is None:
                continue
            owner = await self.bus.owner(record.uid)
            if owner is not None and owner != self.id:
                continue
            if owner is None and not await self.bus.acquire(record.uid, self.id, self.lease_ms):
                continue
            deadline = self.now() + self.settings.qr_ttl
            pid = record.pid
            await self.qr.create(pid, record.uid, deadline, self.settings.qr_ttl * 1000)
            self._launch(record.uid, pid, Origin.RESUME, record.login_data, deadline)
            resumed += 1
        if resumed:
            log.info("worker %s resumed %d session(s)", self.id, resumed)
        return resumed

    def info(self) -> dict[str, Any]:
        online = sum(1 for s in self.sessions.values() if s.state == LoginState.ONLINE)
        return {"host": socket.gethostname(), "pid": os.getpid(), "capacity": self.capacity,
                "sessions": len(self.sessions), "online": online,
                "started_at": round(self.started_at), **self.stats}

    # -- session events (SessionSink) --------------------------------------------------

    async def on_qr(self, session: Session, png: bytes) -> None:
        await self.qr.put_png(session.pid, png)

    async def on_state(self, session: Session, state: LoginState, detail: dict[str, Any]) -> None:
        if self.sessions.get(session.uid) is session:  # else superseded by a newer login
            await self._record(session, state, detail)

    async def _record(self, session: Session, state: LoginState, detail: dict[str, Any]) -> None:
        """Store a state change, show it on the QR page, and tell the web tier."""
        session.state = state
        nickname = str(detail.get("nickname") or session.nickname or "")
        session.nickname = nickname
        reason = str(detail.get("reason") or detail.get("ret") or "")
        if state == LoginState.ONLINE:
            await self._refresh(session)
        await self.stores.bots.set_state(session.uid, state.value, pid=session.pid,
                                         nickname=nickname, reason=reason, worker=self.id,
                                         clear_login=state.value in FINAL_STATES)
        await self.qr.update(session.pid, state.value, nickname)
        await self.bus.publish({
            "type": "state", "uid": session.uid, "state": state.value, "nickname": nickname,
            "reason": reason, "pid": session.pid, "origin": session.origin.value,
            "push": bool(detail.get("push")), "resumed": bool(detail.get("resumed")),
        })

    async def on_login_data(self, session: Session, data: dict[str, Any]) -> None:
        if self.sessions.get(session.uid) is session:
            await self.stores.bots.save_login_data(session.uid, data)

    async def on_ended(self, session: Session, final: LoginState) -> None:
        if self.sessions.get(session.uid) is not session:
            return
        if not session.stop_requested and not session.state.final:
            # The driver ended without reporting why (it crashed): record it.
            await self._record(session, final, {"reason": "error"})
        del self.sessions[session.uid]
        await self.bus.release(session.uid, self.id)
        self.matchers.invalidate(session.uid)

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
        await self._refresh(session)
        if skip_reason(msg, session.profile) is not None:
            return
        rule = (await self._matcher(session.uid)).match(msg.text)
        if rule is None:
            return
        # Claimed before sending and kept for days: a resumed session that sees the same
        # message again (its saved sync key lags a little) must not answer it twice.
        if not await self.stores.kv.claim(f"bot:msg:{session.uid}:{msg.msg_id}", MSG_DEDUP_MS):
            self.stats["duplicates"] += 1
            return
        loop = asyncio.get_running_loop()
        sent = await loop.run_in_executor(self.send_pool, session.driver.send_text, msg.chat,
                                          rule.reply)
        if sent:
            self.stats["replied"] += 1
            session.send_failures = 0
            await self.stores.kv.hit(replies_key(session.uid, self.now()), REPLIES_WINDOW_MS)
        else:
            self.stats["send_failed"] += 1
            session.send_failures += 1
            log.warning("bot %s: reply to a message was not accepted by WeChat", session.uid)
