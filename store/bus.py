"""The Redis bus between the web tier and the bot workers, and session leases.

Nothing else connects the two: the web tier never imports ``replybot`` and workers never
call the official-account API.  Three kinds of traffic:

* **start commands** — one stream, ``bus:cmd``, read through the consumer group
  ``workers``: whichever worker has room takes the next start.  A worker that dies
  holding one leaves it pending; ``XAUTOCLAIM`` hands it to another worker.
* **owner commands** (stop) — to the worker that owns the session, on that
  worker's own stream ``bus:w:<worker>``.  The owner is whoever holds the session's
  lease ``bot:owner:<uid>`` (``SET NX PX``, renewed by the owner's heartbeat).
* **events** (state changes, QR ready, send failures) — one stream, ``bus:events``,
  read by the web tier's notifier through the group ``notifier``, so that each event is
  told to the user once however many web processes run.

Streams are capped (``MAXLEN ~``) so an absent consumer cannot fill Redis.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from config.metrics import PROCESS
from store._guard import redis_call

CMD_STREAM = "bus:cmd"
EVENT_STREAM = "bus:events"
WORKERS_GROUP = "workers"
NOTIFIER_GROUP = "notifier"
STREAM_MAXLEN = 100_000
WORKER_STREAM_MAXLEN = 10_000

# Extend the lease only if we still own it; a lapsed lease someone else took stays theirs.
_RENEW = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    n = n + 1
  end
end
return n
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    id: str
    fields: dict[str, Any]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(entries: list[Any]) -> list[Message]:
    out = []
    for entry_id, raw in entries:
        if raw is None:  # an entry trimmed away while pending
            continue
        body = raw.get(b"m")
        fields = json.loads(body) if body else {}
        out.append(Message(entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields))
    return out


def _lagged(stream: str, messages: list[Message]) -> list[Message]:
    """Record how long each entry waited on the bus before its first reading: a stream
    id starts with the entry's creation time (ms, the Redis host's clock)."""
    histogram = PROCESS.bus_lag.labels(stream)
    now_ms = time.time() * 1000
    for message in messages:
        head = message.id.split("-", 1)[0]
        if head.isdigit():
            histogram.observe(max(0.0, now_ms - int(head)) / 1000)
    return messages


class Bus:
    def __init__(self, redis: Redis, prefix: str = "wxr:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    # -- groups ----------------------------------------------------------------------

    @redis_call
    async def ensure_groups(self) -> None:
        for stream, group in ((CMD_STREAM, WORKERS_GROUP), (EVENT_STREAM, NOTIFIER_GROUP)):
            try:
                await self.redis.xgroup_create(self.key(stream), group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _add(self, stream: str, fields: dict[str, Any], maxlen: int) -> str:
        body = json.dumps(fields, ensure_ascii=False)
        entry = await self.redis.xadd(self.key(stream), {"m": body}, maxlen=maxlen,
                                      approximate=True)
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    # -- start commands (any worker with room) -----------------------------------------

    @redis_call
    async def send_start(self, fields: dict[str, Any]) -> str:
        return await self._add(CMD_STREAM, {"op": "start", **fields}, STREAM_MAXLEN)

    @redis_call
    async def send_resume(self, uid: int) -> str:
        """Ask any worker with room to resume ``uid``'s saved login (a hand-over)."""
        return await self._add(CMD_STREAM, {"op": "resume", "uid": uid}, STREAM_MAXLEN)

    @redis_call
    async def read_starts(self, worker: str, count: int, block_ms: int) -> list[Message]:
        if count <= 0:
            return []
        reply: Any = await self.redis.xreadgroup(WORKERS_GROUP, worker, {self.key(CMD_STREAM): ">"},
                                            count=count, block=block_ms)
        return _lagged("starts", _decode(reply[0][1])) if reply else []

    @redis_call
    async def claim_stale_starts(self, worker: str, min_idle_ms: int, count: int) -> list[Message]:
        """Starts another worker took but never acknowledged (it died)."""
        if count <= 0:
            return []
        reply: Any = await self.redis.xautoclaim(self.key(CMD_STREAM), WORKERS_GROUP, worker,
                                            min_idle_time=min_idle_ms, start_id="0-0",
                                            count=count)
        return _decode(reply[1])

    @redis_call
    async def ack_start(self, message_id: str) -> None:
        await self.redis.xack(self.key(CMD_STREAM), WORKERS_GROUP, message_id)

    # -- owner commands (stop) -----------------------------------------------

    @redis_call
    async def send_to_owner(self, uid: int, fields: dict[str, Any]) -> str | None:
        """The worker that owns ``uid``'s session, after queueing ``fields`` for it; None
        if no worker owns the session."""
        owner = await self.redis.get(self.key("bot", "owner", uid))
        if owner is None:
            return None
        worker = _text(owner)
        await self._add(f"bus:w:{worker}", {"uid": uid, **fields}, WORKER_STREAM_MAXLEN)
        return worker

    @redis_call
    async def read_own(self, worker: str, after: str, block_ms: int,
                       count: int = 100) -> list[Message]:
        reply: Any = await self.redis.xread({self.key(f"bus:w:{worker}"): after}, count=count,
                                       block=block_ms)
        return _decode(reply[0][1]) if reply else []

    @redis_call
    async def drop_own_stream(self, worker: str) -> None:
        await self.redis.delete(self.key(f"bus:w:{worker}"))

    # -- events ------------------------------------------------------------------------

    @redis_call
    async def publish(self, fields: dict[str, Any]) -> str:
        return await self._add(EVENT_STREAM, fields, STREAM_MAXLEN)

    @redis_call
    async def read_events(self, consumer: str, block_ms: int, count: int = 50) -> list[Message]:
        reply: Any = await self.redis.xreadgroup(NOTIFIER_GROUP, consumer,
                                            {self.key(EVENT_STREAM): ">"},
                                            count=count, block=block_ms)
        return _lagged("events", _decode(reply[0][1])) if reply else []

    @redis_call
    async def claim_stale_events(self, consumer: str, min_idle_ms: int,
                                 count: int = 50) -> list[Message]:
        reply: Any = await self.redis.xautoclaim(self.key(EVENT_STREAM), NOTIFIER_GROUP, consumer,
                                            min_idle_time=min_idle_ms, start_id="0-0",
                                            count=count)
        return _decode(reply[1])

    @redis_call
    async def ack_event(self, message_id: str) -> None:
        await self.redis.xack(self.key(EVENT_STREAM), NOTIFIER_GROUP, message_id)

    # -- leases ------------------------------------------------------------------------

    @redis_call
    async def acquire(self, uid: int, worker: str, ttl_ms: int) -> bool:
        return bool(await self.redis.set(self.key("bot", "owner", uid), worker, nx=True,
                                         px=ttl_ms))

    @redis_call
    async def renew(self, uids: list[int], worker: str, ttl_ms: int) -> int:
        if not uids:
            return 0
        keys = [self.key("bot", "owner", uid) for uid in uids]
        return int(await self._renew(keys=keys, args=[worker, ttl_ms]))

    @redis_call
    async def release(self, uid: int, worker: str) -> bool:
        return bool(await self._release(keys=[self.key("bot", "owner", uid)], args=[worker]))

    @redis_call
    async def owners(self, uids: list[int]) -> dict[int, str | None]:
        """Owners of many sessions in one round trip (MGET)."""
        if not uids:
            return {}
        values = await self.redis.mget([self.key("bot", "owner", uid) for uid in uids])
        return {uid: (_text(v) if v is not None else None) for uid, v in zip(uids, values,
                                                                                strict=True)}

    @redis_call
    async def owner(self, uid: int) -> str | None:
        owner = await self.redis.get(self.key("bot", "owner", uid))
        return _text(owner) if owner is not None else None

    # -- worker registry (for /healthz and `wxreply status`) --------------------------

    @redis_call
    async def announce(self, worker: str, info: dict[str, Any], ttl_ms: int) -> None:
        await self.redis.set(self.key("worker", worker), json.dumps(info), px=ttl_ms)

    @redis_call
    async def retire(self, worker: str) -> None:
        await self.redis.delete(self.key("worker", worker))

    @redis_call
    async def workers(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        pattern = self.key("worker", "*")
        async for key in self.redis.scan_iter(match=pattern, count=200):
            raw = await self.redis.get(key)
            if raw is not None:
                name = key.decode()[len(self.key("worker", "")):]
                out[name] = json.loads(raw)
        return out
