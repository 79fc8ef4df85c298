"""Turn driver-level connection failures into the one typed error callers handle, and keep
callers' cancellations out of the MongoDB driver.

Why the shield: on Python 3.11, pymongo's async client waits for a server with
``asyncio.wait_for(condition.wait(), 0.5)`` under its topology lock.  If the calling task
is cancelled (the official account's 4 s budget, a health probe's timeout, a worker
stopping) while that inner wait is re-acquiring the lock, ``wait_for`` gives up on the
inner task, the caller releases a lock it no longer holds ("Lock is not acquired"), and
the inner task then takes the lock and never gives it back: every later MongoDB call of
the process hangs, and so does ``close()``.  Seen in tests/reliability/
test_stores_down_traffic.py about one run in three (Python 3.12 rewrote ``wait_for``).
So each MongoDB call runs as a task of its own that a caller's cancellation does not
reach; the caller still stops waiting at once, and the call ends by itself within the
driver's own timeouts (``timeoutMS``, ``serverSelectionTimeoutMS``; store/stores.py).

Both wrappers also time each call and count its failures (config.metrics: the
process's ``wxreply_store_call_seconds`` and ``wxreply_store_errors_total``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import redis.exceptions
from pymongo import errors as mongo_errors

from config.metrics import PROCESS
from store.errors import StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")

_MONGO_DOWN = (
    mongo_errors.ConnectionFailure,  # AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
    mongo_errors.ExecutionTimeout,
    mongo_errors.WTimeoutError,
)
_REDIS_DOWN = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError while a restart replays the AOF
    redis.exceptions.TimeoutError,
)


def _is_timeout(exc: BaseException) -> bool:
    # pymongo's client-side operation timeout (timeoutMS) raises PyMongoError subclasses
    # flagged with .timeout; treat them as "unavailable" like a network timeout.
    return isinstance(exc, mongo_errors.PyMongoError) and bool(getattr(exc, "timeout", False))


# MongoDB calls whose callers stopped waiting; kept referenced until they end.
_detached: set[asyncio.Future[Any]] = set()


def _settled(task: asyncio.Future[Any]) -> None:
    _detached.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nobody is left to see it


async def shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` in a task of its own that the caller's cancellation leaves running."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            _detached.add(task)
            task.add_done_callback(_settled)
        raise


async def wait_detached(seconds: float) -> None:
    """Let MongoDB calls that callers gave up on finish (before closing the client)."""
    loop = asyncio.get_running_loop()
    mine = [task for task in _detached if task.get_loop() is loop]
    if mine:
        await asyncio.wait(mine, timeout=seconds)


_MONGO_SECONDS = PROCESS.store_seconds.labels("mongodb")
_REDIS_SECONDS = PROCESS.store_seconds.labels("redis")
_MONGO_DOWN_COUNT = PROCESS.store_errors.labels("mongodb", "unavailable")
_MONGO_ERROR_COUNT = PROCESS.store_errors.labels("mongodb", "error")
_REDIS_DOWN_COUNT = PROCESS.store_errors.labels("redis", "unavailable")
_REDIS_ERROR_COUNT = PROCESS.store_errors.labels("redis", "error")


def mongo_call(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            return await shielded(fn(*args, **kwargs))
        except _MONGO_DOWN as exc:
            _MONGO_DOWN_COUNT.inc()
            raise StoreUnavailable("mongodb", type(exc).__name__) from exc
        except mongo_errors.PyMongoError as exc:
            if _is_timeout(exc):
                _MONGO_DOWN_COUNT.inc()
                raise StoreUnavailable("mongodb", type(exc).__name__) from exc
            _MONGO_ERROR_COUNT.inc()  # a duplicate key is often expected: still counted
            raise
        finally:
            _MONGO_SECONDS.observe(time.perf_counter() - started)

    return wrapper


def redis_call(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        except _REDIS_DOWN as exc:
            _REDIS_DOWN_COUNT.inc()
            raise StoreUnavailable("redis", type(exc).__name__) from exc
        except redis.exceptions.RedisError:
            _REDIS_ERROR_COUNT.inc()
            raise
        finally:
            _REDIS_SECONDS.observe(time.perf_counter() - started)

    return wrapper
