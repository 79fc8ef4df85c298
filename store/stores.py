"""One object holding the async clients and the repositories built on them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pymongo import AsyncMongoClient, WriteConcern
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from config.clock import wall_clock
from store._guard import shielded, wait_detached
from store.bots import BotRepo
from store.bus import Bus
from store.cache import Lru
from store.kv import KV
from store.mailbox import Mailbox
from store.models import RuleLimits
from store.rules import RuleRepo
from store.users import UserRepo

# The official account must be answered within 5 s (we aim for 4 s), so every store
# call fails fast instead of waiting on a dead server: 2 s to find a Mongo server,
# 3 s for any single operation; Redis gets 1 s to connect and 2 s per command.
MONGO_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 2000,
    "connectTimeoutMS": 2000,
    "timeoutMS": 3000,
    "appname": "wxreply",
    # No retryable writes.  The embedded server keeps a record of every retryable write
    # for 30 min (up to 10,000) and scans them all, sorting them once full, on each write:
    # after 11,000 writes, 16 users' adds went from 222/s to 47/s (docs/PERFORMANCE.md).
    # Its records also die with it, so a retry after a crash re-applied the write anyway.
    # Without them a write cut off by a crash fails (the caller says "busy"); the rule
    # insert, idempotent by its own _id, retries once itself (store/rules.py).
    "retryWrites": False,
}
# About 200 bytes each (40 MB when full); an evicted entry costs one MongoDB query.
UID_CACHE_ENTRIES = 200_000
REDIS_OPTIONS = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": 2.0,
    "health_check_interval": 15,
}
# Connections to Redis per process.  When all are busy (a flood of concurrent requests),
# a caller waits up to REDIS_POOL_WAIT_S for one instead of failing at once: redis-py's
# default pool raises MaxConnectionsError, which turned 150 concurrent logins into
# "busy" answers for everyone else.
REDIS_MAX_CONNECTIONS = 200
REDIS_POOL_WAIT_S = 2.0


class Stores:
    """Users, rules and Redis helpers over one Mongo database and one Redis prefix."""

    def __init__(self, mongo: AsyncMongoClient, db_name: str, redis: Redis,
                 prefix: str = "wxr:", limits: RuleLimits = RuleLimits(),
                 now: Callable[[], float] = wall_clock) -> None:
        self.mongo = mongo
        # Acknowledged by the majority and journaled: a rule the user was told about
        # survives a kill -9 of the server (docs/RELIABILITY.md).
        self.db = mongo.get_database(db_name, write_concern=WriteConcern(w="majority", j=True))
        self.redis = redis
        self.kv = KV(redis, prefix)
        self.users = UserRepo(self.db, now)
        self.rules = RuleRepo(self.db, limits, now, kv=self.kv)
        # openid → user id, for the official-account edge: the mapping never changes (ids
        # are never reused, users never deleted), so it is cached without invalidation.
        self.uids: Lru[str, int] = Lru(UID_CACHE_ENTRIES)
        self.bots = BotRepo(self.db, now, kv=self.kv)
        self.bus = Bus(redis, prefix)
        self.mailbox = Mailbox(redis, prefix, now)

    @classmethod
    def connect(cls, mongo_url: str, redis_url: str, *, db_name: str = "wxreply",
                prefix: str = "wxr:", limits: RuleLimits = RuleLimits(),
                now: Callable[[], float] = wall_clock) -> Stores:
        """Create the clients (no I/O happens until the first call)."""
        mongo: AsyncMongoClient = AsyncMongoClient(mongo_url, **MONGO_OPTIONS)
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1)
        pool = BlockingConnectionPool.from_url(
            redis_url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_POOL_WAIT_S,
            retry=retry, **REDIS_OPTIONS,
        )
        redis = Redis.from_pool(pool)  # owns the pool: aclose() closes it
        return cls(mongo, db_name, redis, prefix, limits, now)

    async def ensure_indexes(self) -> None:
        """Idempotent: safe on every start and from every process."""
        await self.users.ensure_indexes()
        await self.rules.ensure_indexes()
        await self.bots.ensure_indexes()
        await self.bus.ensure_groups()

    async def health(self, probe_timeout: float = 1.5) -> dict[str, bool]:
        """Reachability of each store, each probed with its own short timeout."""

        async def probe(coro_fn: Callable[[], object]) -> bool:
            try:
                await asyncio.wait_for(coro_fn(), probe_timeout)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - any failure means "not reachable"
                return False
            return True

        redis_ok, mongo_ok = await asyncio.gather(
            probe(self.redis.ping),
            probe(lambda: shielded(self.mongo.admin.command("ping"))),
        )
        return {"redis": redis_ok, "mongodb": mongo_ok}

    async def close(self) -> None:
        await self.redis.aclose()
        # Calls that callers gave up on end within the driver's own timeouts (3 s).
        await wait_detached(4.0)
        await self.mongo.close()
