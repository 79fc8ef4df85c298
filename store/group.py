"""Group commit for the rule write path: the writes that arrive while one command is on
its way go out together as the next one.  Nobody's write waits for a timer: a write alone
goes out at once; under load the batches grow with the load.

On the embedded MongoDB-wire server most of a small write's cost is the command around
it, not the statement (docs/PERFORMANCE.md, "The write path"): 16 compare-and-set updates
by ``_id`` cost 0.88 ms of server CPU each as commands of their own and 0.28 ms each as
one ``update`` command.  Two kinds go out grouped:

* :class:`GroupInsert`: rule documents, one ``insert`` and one journaled commit for all;
* :class:`GroupMove`: compare-and-set moves of *different* users' rule counters, one
  ``update`` command (adds of one user take turns, store/rules.py, so one batch never
  holds the same user twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import AutoReconnect, BulkWriteError

DUPLICATE_KEY = 11000
# The field a counter move writes its own mark (an ObjectId) into: how a move learns,
# when not all of a batch matched, whether it was one of those that did.
MOVE_MARK = "rule_reserved_by"

Item = TypeVar("Item")
Result = TypeVar("Result")
T = TypeVar("T")


class _Group(Generic[Item, Result]):
    """Queues items; one task sends them in batches of at most ``MAX_SIZE`` (counted by
    :meth:`_size`) while any are queued.  :meth:`_send` settles every future of a batch."""

    MAX_SIZE = 500

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing = False

    async def _submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._flushing:
            self._flushing = True
            # Its own task: a caller that gives up (a timeout) does not stop the batch
            # that carries the others' writes.
            _keep(asyncio.ensure_future(self._flush()))
        return await asyncio.shield(future)

    def _size(self, item: Item) -> int:
        return 1

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch: list[tuple[Item, asyncio.Future[Result]]] = []
                size = 0
                while self._queue and (not batch or size + self._size(self._queue[0][0])
                                       <= self.MAX_SIZE):
                    item = self._queue.pop(0)
                    batch.append(item)
                    size += self._size(item[0])
                try:
                    await self._send(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                    _fail(batch, exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._flushing = False

    async def _send(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        raise NotImplementedError


class GroupInsert(_Group[list[dict[str, Any]], int | None]):
    """Rule inserts: one ``insert`` command, one journaled commit (``j: true``, fsynced)
    acknowledging all of them.

    :meth:`insert` returns ``None`` when all of the caller's documents went in, else the
    index (in the caller's list) of one the unique index refused; the caller undoes the
    rest.  Any other failure is raised to every caller of that batch."""

    async def insert(self, docs: list[dict[str, Any]]) -> int | None:
        return await self._submit(docs)

    def _size(self, item: list[dict[str, Any]]) -> int:
        return len(item)

    async def _send(self, batch: list[tuple[list[dict[str, Any]],
                                            asyncio.Future[int | None]]]) -> None:
        docs = [doc for group, _ in batch for doc in group]
        failed: dict[int, int] = {}  # batch index → first refused index in its group
        try:
            # What a first try stored comes back to the second as a duplicate of its own _id.
            await _twice(lambda: self._collection.insert_many(docs, ordered=False))
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            refused = [int(e.get("index", 0)) for e in errors]
            # A retried insert can meet the rule's own ``_id``: the first try went in (the
            # restarted server forgot it ran, or only the answer was lost).  Such a
            # document is stored, not refused (ObjectIds are ours alone).
            stored = {d["_id"] async for d in self._collection.find(
                {"_id": {"$in": [docs[i]["_id"] for i in refused]}}, {"_id": 1})}
            owner = [(b, i) for b, (group, _) in enumerate(batch) for i in range(len(group))]
            for index in refused:
                if docs[index]["_id"] in stored:
                    continue
                b, i = owner[index]
                failed.setdefault(b, i)
        for b, (_, future) in enumerate(batch):
            if not future.done():
                future.set_result(failed.get(b))


class GroupMove(_Group[tuple[dict[str, Any], dict[str, Any]], bool]):
    """Compare-and-set updates of different documents (rule counters): one ``update``
    command with a statement each.  :meth:`move` returns whether the caller's filter
    matched (and so its update was applied).

    MongoDB reports how many statements of a command matched, not which.  Each move sets
    a mark of its own (``MOVE_MARK``); when fewer than all matched (a counter another
    process moved, a user at the limit), one read of the batch's documents tells which
    marks are there.  A mark overwritten meanwhile by another process's move reads as
    "not matched": the caller looks again and reserves anew, leaving unused numbers and a
    count ahead of the truth, which heals (store/rules.py) — never two owners of one
    number."""

    async def move(self, query: dict[str, Any], update: dict[str, Any]) -> bool:
        return await self._submit((query, update))

    async def _send(self, batch: list[tuple[tuple[dict[str, Any], dict[str, Any]],
                                            asyncio.Future[bool]]]) -> None:
        marks = [ObjectId() for _ in batch]
        ops = [UpdateOne(query, {**update, "$set": {**update.get("$set", {}),
                                                   MOVE_MARK: mark}})
               for ((query, update), _), mark in zip(batch, marks, strict=True)]
        # A move a first try made reads as "not matched" to the second, and is then
        # found by its mark.
        result = await _twice(lambda: self._collection.bulk_write(ops, ordered=False))
        if result.matched_count == len(batch):
            matched = [True] * len(batch)
        else:
            ids = [query["_id"] for (query, _), _ in batch]
            there = {doc["_id"]: doc.get(MOVE_MARK) async for doc in self._collection.find(
                {"_id": {"$in": ids}}, {MOVE_MARK: 1})}
            matched = [there.get(query["_id"]) == mark
                       for ((query, _), _), mark in zip(batch, marks, strict=True)]
        for (_, future), ok in zip(batch, matched, strict=True):
            if not future.done():
                future.set_result(ok)


async def _twice(call: Callable[[], Awaitable[T]]) -> T:
    """``call``, and once more if the connection broke under it (a store restart, a reset,
    a pool the driver cleared after a missed heartbeat), as a driver's retryable write
    would: they are off (store/stores.py).  Not after a timeout: the call's time is
    spent."""
    try:
        return await call()
    except AutoReconnect as exc:
        if exc.timeout:
            raise
        return await call()


def _fail(batch: Sequence[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


_running: set[asyncio.Future[Any]] = set()


def _keep(task: asyncio.Future[Any]) -> None:
    """Hold a reference to a background task until it ends (asyncio keeps only weak ones)."""
    _running.add(task)
    task.add_done_callback(_running.discard)
