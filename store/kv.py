"""Redis helpers: claim-once keys, one-time codes and rate counters.

Every key lives under one prefix (``WXR_REDIS_PREFIX``, ``wxr:`` by default) so that
several deployments, or several tests, can share one Redis without meeting.
"""

from __future__ import annotations

import asyncio
import secrets

from redis.asyncio import Redis

from store._guard import redis_call

# INCR and set the expiry in one step: with a separate EXPIRE, a crash between the two
# would leave a counter that never expires and so a limit that never resets.
_HIT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""

# Delete only if the value is still the one the caller saw: releasing a lock that has
# since passed to someone else, or dropping a cached value that another process has
# already replaced, would undo their work.  GET+DEL from Python would race.
_DELETE_IF_EQUALS_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

CODE_DIGITS = 6

# wait_for polls; it starts fast (a lock holder usually finishes within a few
# milliseconds on a LAN) and backs off so that many waiters do not flood Redis.
_WAIT_FIRST_POLL_S = 0.01
_WAIT_MAX_POLL_S = 0.1


class KV:
    def __init__(self, redis: Redis, prefix: str = "wxr:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._hit = redis.register_script(_HIT_SCRIPT)
        self._delete_if_equals = redis.register_script(_DELETE_IF_EQUALS_SCRIPT)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    @redis_call
    async def claim(self, key: str, ttl_ms: int, value: bytes | str = b"1") -> bool:
        """``SET NX PX``: True for the first caller only, until the key expires."""
        return bool(await self.redis.set(self.key(key), value, nx=True, px=ttl_ms))

    @redis_call
    async def get(self, key: str) -> bytes | None:
        return await self.redis.get(self.key(key))

    @redis_call
    async def put(self, key: str, value: bytes | str, ttl_ms: int) -> None:
        await self.redis.set(self.key(key), value, px=ttl_ms)

    @redis_call
    async def delete(self, key: str) -> None:
        await self.redis.delete(self.key(key))

    @redis_call
    async def delete_if_equals(self, key: str, value: bytes | str) -> bool:
        """Compare-and-delete in one step: True if ``key`` held exactly ``value`` and is
        now gone; False (and nothing changed) if it held anything else or nothing."""
        return bool(await self._delete_if_equals(keys=[self.key(key)], args=[value]))

    @redis_call
    async def wait_for(self, key: str, timeout_s: float, *,
                       while_key: str | None = None) -> bytes | None:
        """Wait (by polling, never blocking the event loop) until ``key`` has a value and
        return it; None after ``timeout_s``.

        With ``while_key`` (typically a lock whose holder is producing ``key``), also
        return None as soon as ``while_key`` is absent: the holder finished or gave up
        without producing the value, so waiting longer would be pointless.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        watched = [self.key(key)] + ([self.key(while_key)] if while_key is not None else [])
        poll = _WAIT_FIRST_POLL_S
        while True:
            # One round trip reads both, so the lock cannot vanish between two reads
            # after the value was written and make us miss the value.
            values = await self.redis.mget(watched)
            if values[0] is not None:
                return values[0]
            if while_key is not None and values[1] is None:
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(poll, remaining))
            poll = min(poll * 2, _WAIT_MAX_POLL_S)

    @redis_call
    async def bump(self, key: str) -> int:
        """INCR a version counter (no expiry): readers compare it with what they saw."""
        return int(await self.redis.incr(self.key(key)))

    @redis_call
    async def hit(self, key: str, window_ms: int) -> int:
        """Count one event in a fixed window; returns the count so far in this window."""
        return int(await self._hit(keys=[self.key(key)], args=[window_ms]))

    @redis_call
    async def issue_code(self, purpose: str, owner: str, ttl_ms: int = 300_000) -> str:
        """A fresh 6-digit one-time code for ``owner``; an owner's previous unused code of
        the same purpose stops working."""
        by_owner = self.key("code", purpose, "by", owner)
        for _ in range(20):
            code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
            if await self.redis.set(self.key("code", purpose, code), owner, nx=True, px=ttl_ms):
                old = await self.redis.set(by_owner, code, px=ttl_ms, get=True)
                if old is not None and old.decode() != code:
                    # Only delete the old code if it still belongs to this owner.
                    old_key = self.key("code", purpose, old.decode())
                    if await self.redis.get(old_key) == owner.encode():
                        await self.redis.delete(old_key)
                return code
        raise RuntimeError("could not draw a free one-time code")  # 20 collisions in 10^6

    @redis_call
    async def consume_code(self, purpose: str, code: str) -> str | None:
        """The owner of ``code`` if it is valid, and the code is used up; else None."""
        if len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
            return None
        owner = await self.redis.getdel(self.key("code", purpose, code))
        if owner is None:
            return None
        await self.redis.delete(self.key("code", purpose, "by", owner.decode()))
        return owner.decode()
