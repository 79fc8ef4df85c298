"""Bot sessions as the rest of the system sees them: state in MongoDB, QR pids in Redis,
and :class:`BotService`, the web tier's only way to start, stop and ask about a bot.

States (docs/ARCHITECTURE.md, 'Bot sessions'): requested → waiting_scan → scanned → online
→ logged_out | refused | expired | closed.  The worker records every transition here and
publishes it on the bus.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

from pymongo.asynchronous.database import AsyncDatabase

from config.clock import wall_clock
from store._guard import mongo_call, redis_call
from store.bus import Bus
from store.kv import KV
from store.models import User


class LoginState(enum.StrEnum):
    """A session's login state: requested → waiting_scan → scanned → online →
    logged_out | refused | expired | closed.  The values are what gets stored and shown; the
    drivers report these too (:mod:`replybot.driver` re-exports it)."""

    REQUESTED = "requested"
    WAITING_SCAN = "waiting_scan"
    SCANNED = "scanned"
    ONLINE = "online"
    LOGGED_OUT = "logged_out"
    REFUSED = "refused"
    EXPIRED = "expired"
    # WeChat itself closed the web session (synccheck 1102, typically seconds after a
    # login since 2025-01): not the owner's doing, and scanning again at once risks a
    # restriction of the account, so 登录 is held back for a while (see BotService.login).
    CLOSED = "closed"

    @property
    def final(self) -> bool:
        """True for the states a session ends in."""
        return self.value in FINAL_STATES


# The plain strings, as stored in the ``bots`` documents.
REQUESTED = LoginState.REQUESTED.value
WAITING_SCAN = LoginState.WAITING_SCAN.value
SCANNED = LoginState.SCANNED.value
ONLINE = LoginState.ONLINE.value
LOGGED_OUT = LoginState.LOGGED_OUT.value
REFUSED = LoginState.REFUSED.value
EXPIRED = LoginState.EXPIRED.value
CLOSED = LoginState.CLOSED.value
PENDING_STATES = frozenset({REQUESTED, WAITING_SCAN, SCANNED})
FINAL_STATES = frozenset({LOGGED_OUT, REFUSED, EXPIRED, CLOSED})
# Failed logins in a row (refused or closed by WeChat) after which 登录 is held back.
GUARD_AFTER_FAILURES = 2

# WeChat users live in China: "replies today" counts by Beijing time.
CHINA = timezone(timedelta(hours=8))
PID_BYTES = 18  # 144 bits, 24 URL-safe characters: unguessable


def valid_pid(pid: str) -> bool:
    return len(pid) == 24 and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in pid)


@dataclasses.dataclass(frozen=True, slots=True)
class BotRecord:
    uid: int
    state: str
    pid: str = ""
    nickname: str = ""
    reason: str = ""
    worker: str = ""
    login_data: dict[str, Any] | None = None
    updated_at: datetime | None = None
    # WeChat's own words for how the last login ended (the login page's <message>),
    # shown to the owner as they are.
    wechat_message: str = ""
    # Epoch seconds until which 登录 is held back (the login guard); 0: not held.
    retry_after: float = 0.0
    failed_logins: int = 0  # refused or closed by WeChat in a row, since the last online


def _record(doc: dict[str, Any], login_data: dict[str, Any] | None = None) -> BotRecord:
    return BotRecord(uid=doc["_id"], state=doc.get("state", LOGGED_OUT), pid=doc.get("pid", ""),
                     nickname=doc.get("nickname", ""), reason=doc.get("reason", ""),
                     worker=doc.get("worker", ""), login_data=login_data,
                     updated_at=doc.get("updated_at"),
                     wechat_message=str(doc.get("wechat_message") or ""),
                     retry_after=float(doc.get("retry_after") or 0.0),
                     failed_logins=int(doc.get("failed_logins") or 0))


# How long the sync position of a web session is kept in Redis: longer than WeChat keeps a
# web session alive without its client.
PROGRESS_TTL_MS = 7 * 24 * 3600 * 1000


class BotRepo:
    """Bot sessions: ``bots`` (one small document per user who ever started a bot) and
    ``bot_logins`` (the saved login data, tens of KB each, apart so that the scan for
    sessions to resume never reads it).

    Login data comes in two sizes (see :meth:`save_login_data`): the full state, saved
    to MongoDB when a session goes online, when its contacts change and when it stops;
    and its progress (the sync position, which moves with every message), saved to Redis
    on top of it.  Saving 35 KB to MongoDB per incoming message made MongoDB the limit of
    a worker with thousands of sessions (docs/PERFORMANCE.md); a lost progress record
    only means that a resumed session sees a few messages again, which the MsgId claims
    skip.
    """

    def __init__(self, db: AsyncDatabase, now: Callable[[], float] = wall_clock,
                 kv: KV | None = None) -> None:
        self._bots = db["bots"]
        self._logins = db["bot_logins"]
        self._now = now
        self._kv = kv

    async def ensure_indexes(self) -> None:
        await self._bots.create_index("state")

    @mongo_call
    async def get(self, uid: int, *, login_data: bool = True) -> BotRecord | None:
        """The record; with its login data (full state and progress merged) unless
        ``login_data=False`` (all the web tier needs)."""
        doc = await self._bots.find_one({"_id": uid})
        if doc is None:
            return None
        data = None
        if login_data and doc.get("has_login"):
            saved = await self._logins.find_one({"_id": uid})
            if saved is not None:
                data = await self._with_progress(uid, saved["data"])
        return _record(doc, data)

    async def _with_progress(self, uid: int, data: dict[str, Any]) -> dict[str, Any]:
        if self._kv is None:
            return data
        raw = await self._kv.get(progress_key(uid))
        if raw is None:
            return data
        try:
            progress = json.loads(raw)
        except ValueError:
            return data
        return merge_login_data(data, progress)

    @mongo_call
    async def set_state(self, uid: int, state: str, *, pid: str | None = None,
                        nickname: str | None = None, reason: str = "", worker: str | None = None,
                        clear_login: bool = False, wechat_message: str | None = None,
                        retry_after: float | None = None,
                        failed_logins: int | None = None) -> None:
        """``wechat_message``/``retry_after``/``failed_logins``: stored when given (see
        :class:`BotRecord`); the others are left as they are."""
        fields: dict[str, Any] = {"state": state, "reason": reason,
                                  "updated_at": datetime.fromtimestamp(self._now(), UTC)}
        for name, extra in (("wechat_message", wechat_message), ("retry_after", retry_after),
                            ("failed_logins", failed_logins)):
            if extra is not None:
                fields[name] = extra
        for name, value in (("pid", pid), ("nickname", nickname), ("worker", worker)):
            if value is not None:
                fields[name] = value
        if clear_login:
            fields["has_login"] = False
        # update_one, not findAndModify: the embedded MongoDB-wire server runs
        # findAndModify as a collection scan (33 ms with 5,000 bots, against 1 ms for an
        # update by _id; docs/PERFORMANCE.md), and a worker records a few states for each
        # of thousands of sessions.
        await self._bots.update_one({"_id": uid}, {"$set": fields}, upsert=True)
        if clear_login:
            await self._logins.delete_one({"_id": uid})
            if self._kv is not None:
                await self._kv.delete(progress_key(uid))

    @mongo_call
    async def save_login_data(self, uid: int, data: dict[str, Any], *,
                              flagged: bool = False) -> None:
        """Save what a driver reported (``on_login_data``).  Data marked ``partial``
        (progress: the keys it holds replace those of the full state, one level deep) goes
        to Redis; anything else is the full state and replaces the saved one in MongoDB.
        ``flagged``: the caller knows the record is already marked as having login data
        (it resumed from it, or saved before), which spares a write."""
        if data.get("partial"):
            if self._kv is None:
                raise RuntimeError("partial login data needs Redis (BotRepo(kv=…))")
            await self._kv.put(progress_key(uid), json.dumps(data, ensure_ascii=False),
                               PROGRESS_TTL_MS)
            return
        await self._logins.replace_one(
            {"_id": uid}, {"_id": uid, "data": data,
                           "saved_at": datetime.fromtimestamp(self._now(), UTC)}, upsert=True)
        if not flagged:
            await self._bots.update_one({"_id": uid, "has_login": {"$ne": True}},
                                        {"$set": {"has_login": True}})
        if self._kv is not None:
            await self._kv.delete(progress_key(uid))  # the full state includes it

    @mongo_call
    async def status_fields(self, uid: int) -> dict[str, Any] | None:
        """What 状态 shows of the bots document (never the login data)."""
        return await self._bots.find_one(
            {"_id": uid}, {"state": 1, "nickname": 1, "reason": 1, "updated_at": 1,
                           "wechat_message": 1, "retry_after": 1})

    @mongo_call
    async def resumable(self, limit: int = 100_000) -> list[BotRecord]:
        """Sessions that were online with saved login state: a worker may resume them.
        Reads only the small ``bots`` documents: fetch the login data with :meth:`get`
        for the few a worker actually takes."""
        cursor = self._bots.find({"state": ONLINE, "has_login": True}).limit(limit)
        return [_record(doc) async for doc in cursor]

    @mongo_call
    async def count_by_state(self) -> dict[str, int]:
        pipeline = [{"$group": {"_id": "$state", "n": {"$sum": 1}}}]
        return {row["_id"]: row["n"] async for row in await self._bots.aggregate(pipeline)}


@dataclasses.dataclass(frozen=True, slots=True)
class QrTicket:
    pid: str
    url: str
    state: str
    nickname: str = ""
    fresh: bool = True  # False when an earlier, still valid QR was handed out again


@dataclasses.dataclass(frozen=True, slots=True)
class QrView:
    """What the QR page shows for a pid."""

    uid: int
    state: str
    nickname: str
    expires_at: float
    has_png: bool
    reason: str = ""  # e.g. "unreachable": WeChat's login service cannot be reached
    wechat_message: str = ""  # WeChat's own words for a refusal or closure


class QrStore:
    """QR pids in Redis: ``qr:<pid>`` is a hash (uid, state, nickname, expires_at) and
    ``qr:<pid>:png`` the image; both expire shortly after the QR itself."""

    GRACE_MS = 120_000  # keep the page answering "expired"/"online" a little longer

    def __init__(self, kv: KV) -> None:
        self.redis = kv.redis
        self.kv = kv

    @redis_call
    async def create(self, pid: str, uid: int, expires_at: float, ttl_ms: int) -> None:
        key = self.kv.key("qr", pid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"uid": uid, "state": REQUESTED, "nickname": "",
                                    "expires_at": f"{expires_at:.3f}"})
            pipe.pexpire(key, ttl_ms + self.GRACE_MS)
            await pipe.execute()

    @redis_call
    async def update(self, pid: str, state: str, nickname: str = "", reason: str = "",
                     wechat_message: str = "") -> None:
        """``wechat_message``: WeChat's own words for a refusal, shown on the page."""
        key = self.kv.key("qr", pid)
        # Only touch a pid that still exists (HSET would recreate an expired one forever).
        if await self.redis.exists(key):
            await self.redis.hset(key, mapping={"state": state, "nickname": nickname,
                                                "reason": reason,
                                                "wechat_message": wechat_message})

    @redis_call
    async def put_png(self, pid: str, png: bytes) -> None:
        key = self.kv.key("qr", pid)
        ttl = await self.redis.pttl(key)
        if ttl > 0:
            await self.redis.set(self.kv.key("qr", pid, "png"), png, px=ttl)

    @redis_call
    async def png(self, pid: str) -> bytes | None:
        return cast(bytes | None, await self.redis.get(self.kv.key("qr", pid, "png")))

    @redis_call
    async def view(self, pid: str) -> QrView | None:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(self.kv.key("qr", pid)))
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        has_png = bool(await self.redis.exists(self.kv.key("qr", pid, "png")))
        return QrView(int(fields["uid"]), fields.get("state", REQUESTED),
                      fields.get("nickname", ""), float(fields.get("expires_at", 0)), has_png,
                      fields.get("reason", ""), fields.get("wechat_message", ""))


@dataclasses.dataclass(frozen=True, slots=True)
class BotStatus:
    state: str               # one of the states above, or "none"
    nickname: str = ""
    replies_today: int = 0
    # The latest event, for 状态: its reason code, when it happened, WeChat's own words
    # (``wechat_message``) and the end of a login guard (``retry_after``, epoch s), when
    # the worker recorded them.
    reason: str = ""
    since: datetime | None = None
    wechat_message: str = ""
    retry_after: float | None = None


def progress_key(uid: int) -> str:
    """A session's login progress (see :meth:`BotRepo.save_login_data`)."""
    return f"bot:progress:{uid}"


def merge_login_data(full: dict[str, Any], progress: dict[str, Any]) -> dict[str, Any]:
    """``full`` with ``progress`` laid over it: each dict value one level deep (so a
    progress ``{"login_info": {"SyncKey": …}}`` replaces that one key of the full
    ``login_info``), other values replaced.  ``partial`` itself is not carried over."""
    merged = dict(full)
    for key, value in progress.items():
        if key == "partial":
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def settings_version_key(uid: int) -> str:
    """Bumped whenever a user's rules or switches change (see BotService.rules_changed)."""
    return f"bot:ver:{uid}"


def replies_key(uid: int, now: float) -> str:
    return f"stats:replies:{uid}:{datetime.fromtimestamp(now, CHINA):%Y%m%d}"


class BotService:
    """Start, stop and query bot sessions from the web tier, through the bus only."""

    def __init__(self, repo: BotRepo, bus: Bus, kv: KV, *, public_url: str,
                 qr_ttl_s: float = 240.0, now: Callable[[], float] = wall_clock) -> None:
        self.repo = repo
        self.bus = bus
        self.kv = kv
        self.qr = QrStore(kv)
        self.public_url = public_url.rstrip("/")
        self.qr_ttl_s = qr_ttl_s
        self._now = now

    def qr_url(self, pid: str) -> str:
        return f"{self.public_url}/qr/{pid}"

    async def login(self, user: User) -> QrTicket:
        """A QR link for ``user``: the pending one if it is still valid, else a new one.
        Nothing new is started while the bot is online, nor while the login guard holds
        (:class:`LoginGuarded`: WeChat closed or refused the last logins)."""
        record = await self.repo.get(user.uid, login_data=False)
        if record is not None and record.state in FINAL_STATES and \
                record.retry_after > self._now():
            raise LoginGuarded(user.uid, record.retry_after, record.state,
                               record.wechat_message)
        if record is not None and record.state == ONLINE and await self.bus.owner(user.uid):
            return QrTicket(record.pid, self.qr_url(record.pid), ONLINE, record.nickname, False)
        if record is not None and record.state in PENDING_STATES and record.pid:
            view = await self.qr.view(record.pid)
            if view is not None and view.expires_at - self._now() > 30:
                return QrTicket(record.pid, self.qr_url(record.pid), view.state, "", False)
        # Two 登录 at the same moment must not start two sessions.
        if not await self.kv.claim(f"bot:starting:{user.uid}", 5000):
            raise LoginInProgress(user.uid)
        pid = secrets.token_urlsafe(PID_BYTES)
        expires_at = self._now() + self.qr_ttl_s
        ttl_ms = int(self.qr_ttl_s * 1000)
        await self.qr.create(pid, user.uid, expires_at, ttl_ms)
        await self.repo.set_state(user.uid, REQUESTED, pid=pid, nickname="")
        await self.bus.send_start({"uid": user.uid, "pid": pid, "qr_deadline": expires_at})
        return QrTicket(pid, self.qr_url(pid), REQUESTED)

    async def logout(self, user: User) -> bool:
        """Log the personal account out; False if no session was running."""
        record = await self.repo.get(user.uid, login_data=False)
        if record is None or record.state in FINAL_STATES:
            # Ended, or ending: its worker may not have given up the lease yet.
            return False
        if await self.bus.send_to_owner(user.uid, {"op": "stop", "logout": True}):
            return True
        # Nobody runs it (a start still queued, or a worker gone): settle it here.
        await self.repo.set_state(user.uid, LOGGED_OUT, reason="logout", clear_login=True)
        return record.state == ONLINE

    async def status(self, user: User) -> BotStatus:
        doc = await self.repo.status_fields(user.uid)
        raw = await self.kv.get(replies_key(user.uid, self._now()))
        replies = int(raw) if raw else 0
        if doc is None:
            return BotStatus("none", "", replies)
        retry_after = doc.get("retry_after")
        since = doc.get("updated_at")
        return BotStatus(str(doc.get("state") or LOGGED_OUT), str(doc.get("nickname") or ""),
                         replies, reason=str(doc.get("reason") or ""),
                         since=since if isinstance(since, datetime) else None,
                         wechat_message=str(doc.get("wechat_message") or ""),
                         retry_after=(float(retry_after) if isinstance(retry_after, int | float)
                                      and not isinstance(retry_after, bool) else None))

    async def rules_changed(self, user: User) -> None:
        # A version stamp the worker checks on every message, not a command it reads
        # some time later: once the owner sees "已关闭", the very next message obeys it.
        # For the switches on the user document; rule writes bump the same stamp
        # themselves (store.rules.RuleRepo), whoever makes them.
        await self.kv.bump(settings_version_key(user.uid))

    async def dump(self) -> dict[str, Any]:
        """Workers and session counts, for /healthz."""
        workers = await self.bus.workers()
        return {"workers": workers, "sessions": await self.repo.count_by_state()}


class LoginInProgress(Exception):
    pass


class LoginGuarded(Exception):
    """登录 is held back until ``retry_after`` (epoch seconds): WeChat closed the last
    web session (``state`` "closed") or refused the last logins (``state`` "refused")."""

    def __init__(self, uid: int, retry_after: float, state: str, wechat_message: str) -> None:
        super().__init__(uid, retry_after, state)
        self.uid = uid
        self.retry_after = retry_after
        self.state = state
        self.wechat_message = wechat_message


def encode_login_data(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False)
