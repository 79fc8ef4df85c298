"""Small in-process caches for the official-account hot path.

A web process answers every push of a user from the same few facts: their user id and
their rules.  Reading those from MongoDB on every push made MongoDB the bottleneck of the
whole edge (three queries per ``列表``; see docs/PERFORMANCE.md).  What is cached here, and
why each is safe with any number of web processes:

* ``openid → uid``: never changes (a user id is drawn once and users are never deleted),
  so it needs no invalidation at all — only a bound on its size.
* a user's rules: tagged with the version stamp ``bot:ver:<uid>`` that every rule write
  bumps *after* MongoDB acknowledged it (:class:`store.rules.RuleRepo`).  A reader reads the
  stamp *before* it reads MongoDB, so a cached copy is never newer-tagged than its data:
  a write that lands after the read bumps the stamp past the tag, and the next reader in
  any process reloads.  The age limit bounds staleness if a bump is ever lost (Redis
  restored from an append-only file that missed its last second).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry first.

    Used from one event loop only (no lock): every caller runs on the web process's
    IOLoop, and ``get``/``put`` never await.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._data: collections.OrderedDict[K, V] = collections.OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


@dataclasses.dataclass(frozen=True, slots=True)
class Stamp:
    """A user's version stamp (``bot:ver:<uid>``) as read at some moment: the edge reads
    it in the same round trip as its dedup claims, so that a command can use a cached
    copy without a round trip of its own.  Read before any data it validates."""

    uid: int
    version: bytes | None


@dataclasses.dataclass(frozen=True, slots=True)
class Versioned(Generic[V]):
    """A cached value with the version stamp read before it was loaded."""

    version: bytes | None
    value: V
    loaded_at: float


class VersionedCache(Generic[K, V]):
    """Values tagged with a version stamp; valid while the stamp is unchanged and the
    value is younger than ``max_age_s``."""

    def __init__(self, max_entries: int, max_age_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: Lru[K, Versioned[V]] = Lru(max_entries)
        self.max_age_s = max_age_s
        self._clock = clock
        self.hits = 0
        self.misses = 0

    def get(self, key: K, version: bytes | None) -> V | None:
        entry = self._entries.get(key)
        if (entry is not None and entry.version == version
                and self._clock() - entry.loaded_at < self.max_age_s):
            self.hits += 1
            return entry.value
        self.misses += 1
        return None

    def peek(self, key: K) -> Versioned[V] | None:
        """The entry whatever the current stamp (the caller checks it later, atomically
        with what it does), if it is not too old."""
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry.loaded_at >= self.max_age_s:
            return None
        return entry

    def put(self, key: K, version: bytes | None, value: V) -> None:
        self._entries.put(key, Versioned(version, value, self._clock()))

    def invalidate(self, key: K) -> None:
        self._entries.pop(key)

    def __len__(self) -> int:
        return len(self._entries)
