"""Mailboxes: notices for the owner that could not go out as customer-service messages,
kept until the passive reply to their next push carries them (docs/OFFICIAL_ACCOUNT.md).

Why Redis (with its append-only file) and not MongoDB: a notice must leave the mailbox
in the same step that stores the reply of the push carrying it, or a crash in between
loses it or WeChat's retry of that push shows it twice.  The stored reply lives in
Redis (``push:<id>``), so one Lua script does both.  The notices arrive over a Redis
stream (``bus:events``) anyway, so the mailbox is exactly as durable as the events it
is made of: with ``appendonly yes`` (the embedded Redis runs ``appendfsync everysec``)
it survives restarts of Redis and of wxreply.

One hash per user, ``mail:<openid>``: a field per notice *slot*, so that notices that no
longer matter collapse without any read-modify-write in Python.  ``state`` holds only
the newest state notice (a later "logged out" replaces an "online"); ``send_failures``
the newest of those; ``loop_guard:<contact>`` one per contact; anything else a slot of
its own.  Each value is ``<ms>|<json>``: the event's time first, so that a late, older
event never overwrites a newer one (the notifiers read the stream concurrently).  At most
``MAX_NOTICES`` slots (the oldest go first) and ``MAILBOX_TTL_MS`` after the last notice.

Also here: the user's last contact with the official account (``mp:seen:<openid>:m|e``,
written by the edge's claim script) and the count of customer-service messages sent in
that contact's window, which the notifier uses to stay inside WeChat's quota.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio import Redis

from config.clock import wall_clock
from store._guard import redis_call

MAX_NOTICES = 20
MAILBOX_TTL_MS = 30 * 24 * 3600 * 1000

# WeChat's customer-service quota since June 2023 (docs.chatalog.ai "客服消息", citing the
# announcement of 2023-06-12; developers.weixin.qq.com customer-message/send): a message
# from the user allows 5 messages within 48 hours; a menu click, a follow or a QR scan
# allows 3 within 1 minute.  A new action resets the count to the larger allowance.
MESSAGE_WINDOW_S = 48 * 3600
MESSAGE_ALLOWANCE = 5
EVENT_WINDOW_S = 60
EVENT_ALLOWANCE = 3

# Write a slot unless it already holds a newer notice; ARGV[3] '' deletes it instead
# (a later state that needs no notice makes the pending one obsolete).  Then keep at
# most ARGV[4] slots, dropping the oldest, and push the expiry out.
_PUT_SCRIPT = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local cur_at = tonumber(string.match(cur, '^(%d+)|'))
  if cur_at and cur_at > tonumber(ARGV[2]) then return 0 end
end
if ARGV[3] == '' then
  if cur then redis.call('HDEL', KEYS[1], ARGV[1]) end
  return 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local limit = tonumber(ARGV[4])
if redis.call('HLEN', KEYS[1]) > limit then
  local all = redis.call('HGETALL', KEYS[1])
  local slots = {}
  for i = 1, #all, 2 do
    if all[i] ~= ARGV[1] then
      table.insert(slots, {all[i], tonumber(string.match(all[i + 1], '^(%d+)|')) or 0})
    end
  end
  table.sort(slots, function(a, b) return a[2] < b[2] end)
  for i = 1, #slots - limit + 1 do redis.call('HDEL', KEYS[1], slots[i][1]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# Store a push's reply and remove the notices it carries, in one step, but only if each
# of them is still exactly what the caller read (else 0: read again and recompose).
_TAKE_SCRIPT = """
for i = 3, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 1] then return 0 end
end
for i = 3, #ARGV, 2 do redis.call('HDEL', KEYS[2], ARGV[i]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


def mail_key(openid: str) -> str:
    return f"mail:{openid}"


def seen_key(openid: str, kind: str) -> str:
    """The time of the user's last message (``kind`` "m") or menu/follow/scan event ("e")."""
    return f"mp:seen:{openid}:{kind}"


def slot_for(event: dict[str, Any], entry_id: str) -> str:
    """The mailbox slot of an event: notices in one slot collapse to the newest."""
    kind = str(event.get("type") or "notice")
    if kind in ("state", "send_failures"):
        return kind
    if kind == "loop_guard":
        return f"loop_guard:{str(event.get('contact') or '')[:64]}"
    return f"{kind[:32]}:{entry_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    slot: str
    at: float                 # when it happened (the event's time), epoch seconds
    event: dict[str, Any]     # the bus event it was made from
    raw: bytes = dataclasses.field(repr=False, default=b"")  # as stored, for the take

    @property
    def kind(self) -> str:
        return str(self.event.get("type") or "notice")


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """The user's current customer-service window, as far as we saw their pushes."""

    known: bool          # we saw a push of theirs at all (else: let WeChat decide)
    open: bool
    allowance: int = 0
    start: int = 0       # the push that opened it (its time), names the count key

    @property
    def usable(self) -> int:
        # One message of the allowance stays unused: the quota is shared with anything
        # else that sends customer-service messages on the account (the console's 客服
        # staff, another tool), and our count cannot see those.
        return max(self.allowance - 1, 0)


class Mailbox:
    def __init__(self, redis: Redis, prefix: str = "wxr:",
                 now: Callable[[], float] = wall_clock) -> None:
        self.redis = redis
        self.prefix = prefix
        self.now = now
        self._put = redis.register_script(_PUT_SCRIPT)
        self._take = redis.register_script(_TAKE_SCRIPT)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    # -- notices -----------------------------------------------------------------------

    @redis_call
    async def add(self, openid: str, slot: str, at: float, event: dict[str, Any]) -> bool:
        """Keep a notice (False if the slot already holds a newer one)."""
        at_ms = int(at * 1000)
        body = json.dumps({"at": at, "event": event}, ensure_ascii=False)
        return bool(await self._put(keys=[self.key(mail_key(openid))],
                                    args=[slot, at_ms, f"{at_ms}|{body}", MAX_NOTICES,
                                          MAILBOX_TTL_MS]))

    @redis_call
    async def supersede(self, openid: str, slot: str, at: float) -> bool:
        """Drop the slot's notice if it is older than ``at`` (it no longer matters)."""
        return bool(await self._put(keys=[self.key(mail_key(openid))],
                                    args=[slot, int(at * 1000), "", MAX_NOTICES,
                                          MAILBOX_TTL_MS]))

    @redis_call
    async def peek(self, openid: str) -> list[Notice]:
        """The pending notices, newest first (unreadable entries are skipped)."""
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(self.key(mail_key(openid))))
        notices = []
        for field, value in raw.items():
            try:
                body = json.loads(value.split(b"|", 1)[1])
                notice = Notice(field.decode(), float(body["at"]), dict(body["event"]), value)
            except (IndexError, ValueError, KeyError, TypeError):
                continue
            notices.append(notice)
        notices.sort(key=lambda n: n.at, reverse=True)
        return notices

    @redis_call
    async def take_into(self, openid: str, push_key: str, reply: bytes, ttl_ms: int,
                        taken: list[Notice]) -> bool:
        """Store ``reply`` under ``push_key`` and remove ``taken`` from the mailbox, in
        one step; False (nothing changed) if any of them changed in the meantime."""
        args: list[bytes | str | int] = [reply, ttl_ms]
        for notice in taken:
            args += [notice.slot, notice.raw]
        return bool(await self._take(keys=[self.key(push_key), self.key(mail_key(openid))],
                                     args=args))

    # -- the customer-service window ---------------------------------------------------

    @redis_call
    async def window(self, openid: str) -> Window:
        message, event = cast(list[bytes | None], await self.redis.mget(
            [self.key(seen_key(openid, "m")), self.key(seen_key(openid, "e"))]))
        now = self.now()
        m = _epoch(message)
        e = _epoch(event)
        m_open = m is not None and now - m < MESSAGE_WINDOW_S
        e_open = e is not None and now - e < EVENT_WINDOW_S
        if not (m_open or e_open):
            return Window(known=m is not None or e is not None, open=False)
        start = max(t for t, is_open in ((m, m_open), (e, e_open)) if is_open and t is not None)
        return Window(True, True, MESSAGE_ALLOWANCE if m_open else EVENT_ALLOWANCE, int(start))

    def _count_key(self, openid: str, window: Window) -> str:
        return self.key("mp", "cs", openid, window.start)

    @redis_call
    async def count_send(self, openid: str, window: Window) -> int:
        """Count one customer-service message in ``window``; the count so far."""
        key = self._count_key(openid, window)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, MESSAGE_WINDOW_S * 1000)
            n, _ = await pipe.execute()
        return int(n)

    @redis_call
    async def close_window(self, openid: str) -> None:
        """WeChat said the window is over (45015): known closed until the user's next
        push records a new contact (so no more calls that would get the same answer)."""
        closed = str(int(self.now() - MESSAGE_WINDOW_S - 1))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key(seen_key(openid, "m")), closed, px=MESSAGE_WINDOW_S * 1000)
            pipe.delete(self.key(seen_key(openid, "e")))
            await pipe.execute()

    @redis_call
    async def exhaust(self, openid: str, window: Window) -> None:
        """WeChat said no (45015, 45047): nothing more in this window."""
        await self.redis.set(self._count_key(openid, window), 1_000_000,
                             px=MESSAGE_WINDOW_S * 1000)


def _epoch(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None
