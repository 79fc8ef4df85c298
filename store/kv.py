"""Redis helpers: claim-once keys, one-time codes and rate counters.

Every key lives under one prefix (``WXR_REDIS_PREFIX``, ``wxr:`` by default) so that
several deployments, or several tests, can share one Redis without meeting.
"""

from __future__ import annotations

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

CODE_DIGITS = 6


class KV:
    def __init__(self, redis: Redis, prefix: str = "wxr:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._hit = redis.register_script(_HIT_SCRIPT)

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
