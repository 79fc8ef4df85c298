"""Redis helpers: claim-once keys, one-time codes and rate counters.

Every key lives under one prefix (``WXR_REDIS_PREFIX``, ``wxr:`` by default) so that
several deployments, or several tests, can share one Redis without meeting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from typing import cast

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

# The claims of a push in one round trip (mpbot.edge): first the nonce, which may only
# come back with the same message (WeChat's retry), then the push itself; in the same
# trip, an optional key is read for the caller (the user's version stamp).  With a
# precomputed answer (flag 'd', ARGV[5..6]), the push is stored as done with that answer
# (ARGV[6]) instead of pending, provided the stamp still equals ARGV[5] ('' = no stamp
# yet, '*' = any): the answer was computed from data tagged with that stamp, so it is
# still right.  ARGV[7] names the optional keys present after KEYS[2], in this order:
# 'r' the key read, 'h' a key whose existence holds the precomputed answer back (the
# user's mailbox: the reply must carry its notices), 's' a key set to ARGV[8] for
# ARGV[9] ms when the push is claimed for the first time (the user's last contact).
# Answers {-1, extra}: the nonce was used for another message; {1, extra, nil, held}:
# the push is ours to run; {2, extra}: the push is done with the precomputed answer;
# {0, extra, state, held}: another attempt claimed it first.
_CLAIM_GUARDED_SCRIPT = """
local flags = ARGV[7] or ''
local i = 3
local read_key, hold_key, set_key
if string.find(flags, 'r', 1, true) then read_key = KEYS[i]; i = i + 1 end
if string.find(flags, 'h', 1, true) then hold_key = KEYS[i]; i = i + 1 end
if string.find(flags, 's', 1, true) then set_key = KEYS[i]; i = i + 1 end
local extra = false
if read_key then extra = redis.call('GET', read_key) end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local seen = redis.call('GET', KEYS[1])
  if seen and seen ~= ARGV[1] then return {-1, extra} end
end
local held = 0
if hold_key and redis.call('EXISTS', hold_key) == 1 then held = 1 end
local value, claimed = ARGV[3], 1
if held == 0 and string.find(flags, 'd', 1, true)
    and (ARGV[5] == '*' or ARGV[5] == (extra or '')) then
  value, claimed = ARGV[6], 2
end
if redis.call('SET', KEYS[2], value, 'NX', 'PX', ARGV[4]) then
  if set_key then redis.call('SET', set_key, ARGV[8], 'PX', ARGV[9]) end
  return {claimed, extra, false, held}
end
return {0, extra, redis.call('GET', KEYS[2]), held}
"""
# Matches any stamp (an answer that depends on no user data).
ANY_STAMP = b"*"


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`KV.claim_guarded` found."""

    refused: bool           # the guard holds another value: nothing was claimed
    claimed: bool           # the key is now ours (pending, or done if ``done``)
    done: bool              # ... and it was stored with the precomputed answer
    current: bytes | None   # the key's value when another caller holds it
    extra: bytes | None     # the value of ``read_also``
    held: bool = False      # ``hold_if`` exists (so no precomputed answer was stored)


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
        self._claim_guarded = redis.register_script(_CLAIM_GUARDED_SCRIPT)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    @redis_call
    async def claim(self, key: str, ttl_ms: int, value: bytes | str = b"1") -> bool:
        """``SET NX PX``: True for the first caller only, until the key expires."""
        return bool(await self.redis.set(self.key(key), value, nx=True, px=ttl_ms))

    @redis_call
    async def claim_guarded(self, guard: str, guard_value: str, guard_ttl_ms: int,
                            key: str, value: bytes | str, ttl_ms: int, *,
                            read_also: str | None = None,
                            done_if: tuple[bytes | None, bytes] | None = None,
                            hold_if: str | None = None,
                            also_set: tuple[str, bytes | str, int] | None = None) -> Claim:
        """Two claims in one round trip: ``guard`` (``SET NX``, but a repeat with the
        same ``guard_value`` passes), then ``key``; and the value of ``read_also``.

        ``done_if=(stamp, answer)``: store ``answer`` in ``key`` instead of ``value`` if
        ``read_also`` still holds ``stamp`` (None: absent; :data:`ANY_STAMP`: whatever),
        unless the key ``hold_if`` exists (``Claim.held`` says whether it did).
        ``also_set=(key, value, ttl_ms)``: set that key too, only when ``key`` is claimed
        for the first time (not on a retry of the same push).
        Round trips, not commands, are what a push pays for (see docs/PERFORMANCE.md)."""
        keys = [self.key(guard), self.key(key)]
        flags = ""
        for flag, extra_key in (("r", read_also), ("h", hold_if),
                                ("s", also_set[0] if also_set else None)):
            if extra_key is not None:
                keys.append(self.key(extra_key))
                flags += flag
        args: list[bytes | str | int] = [guard_value, guard_ttl_ms, value, ttl_ms, b"", b""]
        if done_if is not None:
            stamp, answer = done_if
            args[4:6] = [b"" if stamp is None else stamp, answer]
            flags += "d"
        args.append(flags)
        if also_set is not None:
            args += [also_set[1], also_set[2]]
        reply = await self._claim_guarded(keys=keys, args=args)
        extra = reply[1] if len(reply) > 1 else None
        held = len(reply) > 3 and bool(reply[3])
        if reply[0] == -1:
            return Claim(True, False, False, None, extra)
        if reply[0] in (1, 2):
            return Claim(False, True, reply[0] == 2, None, extra, held)
        return Claim(False, False, False, reply[2] if len(reply) > 2 else None, extra, held)

    @redis_call
    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self.redis.get(self.key(key)))

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
            values = cast(list[bytes | None], await self.redis.mget(watched))
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
                old = cast(bytes | None, await self.redis.set(by_owner, code, px=ttl_ms, get=True))
                if old is not None and old.decode() != code:
                    # Only delete the old code if it still belongs to this owner.
                    old_key = self.key("code", purpose, old.decode())
                    if await self.redis.get(old_key) == owner.encode():
                        await self.redis.delete(old_key)
                return code
        raise RuntimeError("could not draw a free one-time code")  # 20 collisions in 10^6

    @staticmethod
    def _is_code(code: str) -> bool:
        return len(code) == CODE_DIGITS and code.isascii() and code.isdigit()

    @redis_call
    async def peek_code(self, purpose: str, code: str) -> str | None:
        """The owner of ``code`` without using it up: a wrong guess checked against an
        owner must not void that owner's code."""
        if not self._is_code(code):
            return None
        owner = cast(bytes | None, await self.redis.get(self.key("code", purpose, code)))
        return owner.decode() if owner is not None else None

    @redis_call
    async def void_code(self, purpose: str, owner: str) -> bool:
        """End ``owner``'s live code of this purpose (too many wrong tries against it)."""
        by_owner = self.key("code", purpose, "by", owner)
        code = cast(bytes | None, await self.redis.getdel(by_owner))
        if code is None:
            return False
        return bool(await self._delete_if_equals(
            keys=[self.key("code", purpose, code.decode())], args=[owner]))

    @redis_call
    async def consume_code_of(self, purpose: str, code: str, owner: str) -> int | None:
        """Use up ``code`` if it belongs to ``owner`` (compare-and-delete: a code of
        someone else's stays valid); its remaining lifetime in ms, or None."""
        if not self._is_code(code):
            return None
        key = self.key("code", purpose, code)
        ttl = await self.redis.pttl(key)
        if not await self._delete_if_equals(keys=[key], args=[owner]):
            return None
        await self._delete_if_equals(keys=[self.key("code", purpose, "by", owner)], args=[code])
        return max(int(ttl), 1000)

    @redis_call
    async def give_back_code(self, purpose: str, code: str, owner: str, ttl_ms: int) -> None:
        """Make a code consumed by :meth:`consume_code_of` valid again (the request that
        used it failed for a reason that is not the user's, such as a lost race for a
        username), unless the owner has drawn a newer one meanwhile."""
        if await self.redis.set(self.key("code", purpose, "by", owner), code, nx=True,
                                px=ttl_ms):
            await self.redis.set(self.key("code", purpose, code), owner, nx=True, px=ttl_ms)

    @redis_call
    async def consume_code(self, purpose: str, code: str) -> str | None:
        """The owner of ``code`` if it is valid, and the code is used up; else None."""
        if not self._is_code(code):
            return None
        owner = cast(bytes | None, await self.redis.getdel(self.key("code", purpose, code)))
        if owner is None:
            return None
        await self.redis.delete(self.key("code", purpose, "by", owner.decode()))
        return owner.decode()
