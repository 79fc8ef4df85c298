"""Redis state for reply pacing: cooldowns, loop guards, rate windows, takeover pauses.

Kept in Redis, not in the worker's memory, so that a session resumed on another worker
after a failover keeps its limits.  Every time comparison uses the caller's clock (``now``
arguments), not Redis's: the policy is testable with a frozen clock, and Redis TTLs only
clean up.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from store._guard import redis_call

# Allow if the last reply for this key is older than the cooldown (or there is none),
# and record this one; atomically, so two messages at once cannot both pass.
_COOLDOWN = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) > tonumber(ARGV[1]) - tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""
# Add one event at ARGV[1], forget those older than the window, return how many remain.
_WINDOW_ADD = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('ZCARD', KEYS[1])
"""


class PaceStore:
    def __init__(self, redis: Redis, prefix: str = "wxr:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._cooldown = redis.register_script(_COOLDOWN)
        self._window_add = redis.register_script(_WINDOW_ADD)

    def key(self, *parts: object) -> str:
        return self.prefix + "pace:" + ":".join(str(p) for p in parts)

    @redis_call
    async def cooldown(self, uid: int, chat: str, rule: int | str, now: float,
                       seconds: float) -> bool:
        """True (and the reply is recorded) if ``rule`` may answer ``chat`` again."""
        ttl_ms = int(seconds * 1000) + 60_000
        return bool(await self._cooldown(keys=[self.key("cool", uid, chat, rule)],
                                         args=[f"{now:.3f}", seconds, ttl_ms]))

    @redis_call
    async def add_to_window(self, name: str, uid: int, chat: str, now: float,
                            window_s: float) -> int:
        """Record an event and return the number of events in the last ``window_s``."""
        ttl_ms = int(window_s * 1000) + 60_000
        member = f"{now:.6f}:{secrets.token_hex(4)}"
        return int(await self._window_add(keys=[self.key(name, uid, chat)],
                                          args=[f"{now:.6f}", window_s, member, ttl_ms]))

    @redis_call
    async def once(self, name: str, uid: int, chat: str, ttl_s: float) -> bool:
        """True the first time in ``ttl_s`` (to tell the owner something only once)."""
        return bool(await self.redis.set(self.key(name, uid, chat), b"1", nx=True,
                                         px=int(ttl_s * 1000)))

    @redis_call
    async def mark(self, name: str, uid: int, chat: str, now: float, ttl_s: float) -> None:
        await self.redis.set(self.key(name, uid, chat), f"{now:.3f}", px=int(ttl_s * 1000))

    @redis_call
    async def marked_at(self, name: str, uid: int, chat: str) -> float | None:
        value = await self.redis.get(self.key(name, uid, chat))
        return float(value) if value is not None else None
