"""Turn driver-level connection failures into the one typed error callers handle."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import redis.exceptions
from pymongo import errors as mongo_errors

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


def mongo_call(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except _MONGO_DOWN as exc:
            raise StoreUnavailable("mongodb", type(exc).__name__) from exc
        except mongo_errors.PyMongoError as exc:
            if _is_timeout(exc):
                raise StoreUnavailable("mongodb", type(exc).__name__) from exc
            raise

    return wrapper


def redis_call(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except _REDIS_DOWN as exc:
            raise StoreUnavailable("redis", type(exc).__name__) from exc

    return wrapper
