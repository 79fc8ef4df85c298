"""Rules: keyword → reply, numbered per user 01, 02 … and never renumbered.

The limits (keyword length, reply length, rules per user; docs/CONFIGURATION.md) are enforced
here and nowhere else: the chat commands and the JSON API both end up in
:meth:`RuleRepo.add_many`, so neither can forget a check.

Numbers come from a per-user counter (``next_rule_no``) on the user document, and the
rule count (``rule_count``) is kept beside it so that "at most N rules" is checked and
reserved in one atomic update, even under concurrent adds.

Every write bumps the user's version stamp (``bot:ver:<uid>`` in Redis) after MongoDB
acknowledged it, whoever the caller is (chat command, JSON API, a script): the
official-account edge serves ``列表`` from a cache tagged with that stamp
(:meth:`RuleRepo.snapshot`, see :mod:`store.cache`), and bot workers reload their
matchers when it moves.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from config.clock import wall_clock
from store._guard import mongo_call
from store.bots import settings_version_key
from store.cache import Lru, Stamp, VersionedCache
from store.errors import DuplicateKeyword, InvalidRule, RuleLimitReached, RuleNotFound, UserNotFound
from store.group import GroupInsert, GroupMove
from store.kv import KV
from store.models import MatchMode, Rule, RuleLimits, normalize_keyword

# Control characters other than newline and tab have no place in a keyword or reply;
# they would break the XML reply or show as garbage on a phone.
_ALLOWED_CONTROL = {"\n", "\t"}
# Store operations time out after 3 s, so no reservation older than this is in flight.
HEAL_QUIET_S = 30.0
# The rules of this many users are kept per process (200 rules at most each), and for at
# most this long: the age limit only matters if a version bump was lost.
SNAPSHOT_USERS = 4096
SNAPSHOT_MAX_AGE_S = 60.0
# Each user's rule counter as last seen, for the next reservation's compare-and-set.
COUNTER_USERS = 65_536
# Compare-and-set rounds lost in a row before a reservation falls back to findAndModify.
CAS_ATTEMPTS = 8


def _rule(doc: dict[str, Any]) -> Rule:
    return Rule(
        uid=doc["uid"],
        number=doc["no"],
        keyword=doc["keyword"],
        reply=doc["reply"],
        mode=MatchMode(doc.get("mode", MatchMode.EXACT)),
        created_at=doc.get("created_at"),
        updated_at=doc.get("updated_at"),
    )


class _Turns:
    """Per-key asyncio locks, dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _has_control(text: str, allowed: set[str]) -> bool:
    """Control characters, and the code points XML 1.0 forbids (lone surrogates, which
    JSON's ``\\ud800`` can carry, U+FFFE, U+FFFF): a rule holding one would make every
    reply that shows it (列表, the bot's answer) malformed."""
    return any(((ord(ch) < 32 or ord(ch) == 127) and ch not in allowed)
               or 0xD800 <= ord(ch) <= 0xDFFF or ord(ch) in (0xFFFE, 0xFFFF)
               for ch in text)


class RuleRepo:
    """``kv``: where the version stamps live.  Without it (tests of the repository alone)
    nothing is cached and nothing is bumped."""

    def __init__(self, db: AsyncDatabase, limits: RuleLimits = RuleLimits(),
                 now: Callable[[], float] = wall_clock, kv: KV | None = None) -> None:
        self._rules = db["rules"]
        self._users = db["users"]
        # Counter moves that need no fsync of their own: each is followed by a journaled
        # write (the insert, the delete) whose fsync covers it — the log is one sequence —
        # and if that write never comes, a count ahead of the truth heals itself
        # (:meth:`_heal_count`) and a number counter behind it is repaired on the first
        # collision (:meth:`_resync`).
        self._users_unsynced = self._users.with_options(
            write_concern=WriteConcern(w=1, j=False))
        self.limits = limits
        self._now = now
        self._kv = kv
        self.snapshots: VersionedCache[int, tuple[Rule, ...]] = VersionedCache(
            SNAPSHOT_USERS, SNAPSHOT_MAX_AGE_S)
        self._counters: Lru[int, int] = Lru(COUNTER_USERS)
        self._turns = _Turns()
        self._inserts = GroupInsert(self._rules)
        self._moves = GroupMove(self._users_unsynced)

    def _stamp(self) -> datetime:
        return datetime.fromtimestamp(self._now(), UTC)

    async def ensure_indexes(self) -> None:
        await self._rules.create_index([("uid", 1), ("no", 1)], unique=True)
        await self._rules.create_index([("uid", 1), ("mode", 1), ("norm", 1)], unique=True)

    # -- validation: the one place the limits live ---------------------------------

    def check_keyword(self, keyword: str) -> str:
        keyword = keyword.strip()
        if not keyword:
            raise InvalidRule("keyword", "关键词不能为空")
        if _has_control(keyword, set()):
            raise InvalidRule("keyword", "关键词不能包含控制字符、换行或无效字符（如 U+FFFF）")
        if len(keyword) > self.limits.keyword_max:
            raise InvalidRule(
                "keyword",
                f"关键词最多 {self.limits.keyword_max} 个字，现在是 {len(keyword)} 个字",
            )
        return keyword

    def check_reply(self, reply: str) -> str:
        reply = reply.strip()
        if not reply:
            raise InvalidRule("reply", "回复内容不能为空")
        if _has_control(reply, _ALLOWED_CONTROL):
            raise InvalidRule("reply", "回复内容不能包含控制字符或无效字符（如 U+FFFF）")
        if len(reply) > self.limits.reply_max:
            raise InvalidRule(
                "reply", f"回复最多 {self.limits.reply_max} 个字，现在是 {len(reply)} 个字"
            )
        return reply

    # -- reads -----------------------------------------------------------------------

    @mongo_call
    async def list(self, uid: int, *, skip: int = 0, limit: int = 0) -> list[Rule]:
        cursor = self._rules.find({"uid": uid}).sort("no", 1).skip(skip).limit(limit)
        return [_rule(doc) async for doc in cursor]

    async def snapshot(self, uid: int, stamp: Stamp | None = None) -> tuple[Rule, ...]:
        """All of ``uid``'s rules in number order, from this process's cache while the
        version stamp is unchanged: no MongoDB query, and no round trip at all when the
        caller already read the stamp (``stamp``).

        The stamp is read before MongoDB, never after: a write that commits after our
        read bumps the stamp past the tag we store, so no process can keep serving the
        copy (see :mod:`store.cache`)."""
        if self._kv is None:
            return tuple(await self.list(uid))
        if stamp is not None and stamp.uid == uid:
            version = stamp.version
        else:
            version = await self._kv.get(settings_version_key(uid))
        rules = self.snapshots.get(uid, version)
        if rules is None:
            rules = tuple(await self.list(uid))
            self.snapshots.put(uid, version, rules)
        return rules

    async def _changed(self, uid: int) -> None:
        """After a write MongoDB acknowledged: forget our copy, and move the stamp so
        that every other process (web and worker) forgets theirs."""
        self.snapshots.invalidate(uid)
        if self._kv is not None:
            await self._kv.bump(settings_version_key(uid))

    @mongo_call
    async def count(self, uid: int) -> int:
        return await self._rules.count_documents({"uid": uid})

    @mongo_call
    async def get(self, uid: int, number: int) -> Rule:
        doc = await self._rules.find_one({"uid": uid, "no": number})
        if doc is None:
            raise RuleNotFound(number)
        return _rule(doc)

    # -- writes ----------------------------------------------------------------------

    async def add(self, uid: int, keyword: str, reply: str,
                  mode: MatchMode = MatchMode.EXACT) -> Rule:
        (rule,) = await self.add_many(uid, [(keyword, reply, mode)])
        return rule

    @mongo_call
    async def add_many(self, uid: int,
                       items: Sequence[tuple[str, str, MatchMode]]) -> builtins.list[Rule]:
        """Add several rules, all or nothing.  Raises :class:`InvalidRule`,
        :class:`DuplicateKeyword` (within the batch or against existing rules) or
        :class:`RuleLimitReached`; in each case nothing is added.

        Two MongoDB writes in the common case, no read, each shared with concurrent adds
        (:mod:`store.group`): the reservation (a compare-and-set on the user's counter, see
        :meth:`_reserve`; other users' go out in the same command) and the insert (one
        command and one journaled commit for all of them).  A duplicate keyword is caught
        by the unique index, not by a query first; its numbers are then given back (see
        :meth:`_release`)."""
        if not items:
            return []
        cleaned: list[tuple[str, str, MatchMode, str]] = []
        seen: set[tuple[MatchMode, str]] = set()
        for keyword, reply, mode in items:
            keyword = self.check_keyword(keyword)
            reply = self.check_reply(reply)
            mode = MatchMode(mode)
            norm = normalize_keyword(keyword)
            if (mode, norm) in seen:
                raise DuplicateKeyword(keyword)
            seen.add((mode, norm))
            cleaned.append((keyword, reply, mode, norm))
        return await self._add_cleaned(uid, cleaned)

    async def _add_cleaned(self, uid: int, cleaned: Sequence[tuple[str, str, MatchMode, str]],
                           *, resynced: bool = False) -> builtins.list[Rule]:
        try:
            first = await self._reserve(uid, len(cleaned))
        except RuleLimitReached:
            # A full user adding a keyword they already have is told about the keyword.
            await self._raise_if_duplicate(uid, cleaned)
            raise
        now = self._stamp()
        docs = [
            {"_id": ObjectId(), "uid": uid, "no": first + i, "keyword": keyword, "reply": reply,
             "mode": mode.value, "norm": norm, "created_at": now, "updated_at": now}
            for i, (keyword, reply, mode, norm) in enumerate(cleaned)
        ]
        try:
            failed = await self._inserts.insert(docs)
            if failed is not None and not resynced and await self._resync(
                    uid, first, [d["_id"] for d in docs]):
                # The numbers were taken already: the counter had fallen behind (a store
                # crash lost its move, not the rule's insert).  Once, with fresh numbers.
                await self._rules.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
                await self._users.update_one({"_id": uid}, {"$inc": {"rule_count": -len(docs)}})
                return await self._add_cleaned(uid, cleaned, resynced=True)
            if failed is not None:
                # The unique index refused one (an existing keyword, or one a concurrent
                # add took): undo our part so the batch stays all-or-nothing, and give
                # the slots (and, when nobody reserved after us, the numbers) back.
                await self._rules.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
                await self._release(uid, first, len(docs))
                await self._raise_if_duplicate(uid, cleaned)
                raise DuplicateKeyword(str(docs[failed]["keyword"]))
        finally:
            # Also after a rollback: a reader may have cached the rules that were briefly
            # there.
            await self._changed(uid)
        return [_rule(d) for d in docs]

    async def _raise_if_duplicate(self, uid: int,
                                  cleaned: Sequence[tuple[str, str, MatchMode, str]]) -> None:
        for keyword, _, mode, norm in cleaned:
            existing = await self._rules.find_one({"uid": uid, "mode": mode.value, "norm": norm},
                                                  {"no": 1})
            if existing is not None:
                raise DuplicateKeyword(keyword, existing["no"])

    async def _reserve(self, uid: int, n: int) -> int:
        """Atomically take ``n`` rule slots and numbers; return the first number.

        A compare-and-set on ``next_rule_no`` (an update by ``_id``, which the embedded
        server runs through its index; ``findAndModify`` is a collection scan there, see
        docs/PERFORMANCE.md): it succeeds only if the counter still holds the value we
        last saw, so the numbers after it are ours alone, across processes.  The value
        seen is kept per user, so a user's next add needs no read; adds of one user in
        this process take turns instead of racing for the counter."""
        async with self._turns.hold(uid):
            return await self._reserve_cas(uid, n)

    async def _reserve_cas(self, uid: int, n: int) -> int:
        room = self.limits.rules_max - n
        known = self._counters.get(uid)
        healed = False
        for _attempt in range(CAS_ATTEMPTS):
            if known is None:
                user = await self._users.find_one({"_id": uid},
                                                  {"next_rule_no": 1, "rule_count": 1})
                if user is None:
                    raise UserNotFound(uid)
                known = int(user.get("next_rule_no", 0))
                used = int(user.get("rule_count", 0))
                if used > room:
                    if healed or not await self._heal_count(uid):
                        raise RuleLimitReached(self.limits.rules_max,
                                               max(0, self.limits.rules_max - used))
                    healed, known = True, None
                    continue
            # Grouped with other users' moves into one command (store.group.GroupMove).
            if await self._moves.move(
                    {"_id": uid, "next_rule_no": known, "rule_count": {"$lte": room}},
                    {"$inc": {"rule_count": n, "next_rule_no": n},
                     "$set": {"rule_reserved_at": self._stamp()}}):
                self._counters.put(uid, known + n)
                return known + 1
            # Another process reserved meanwhile, or the count is at the limit: look.
            self._counters.pop(uid)
            known = None
        return await self._reserve_scan(uid, n)

    async def _reserve_scan(self, uid: int, n: int) -> int:
        """The reservation as one ``findAndModify`` (slow on the embedded server, always
        correct): only when the compare-and-set lost CAS_ATTEMPTS times in a row."""
        room = self.limits.rules_max - n
        for attempt in range(2):
            doc = await self._users.find_one_and_update(
                {"_id": uid, "rule_count": {"$lte": room}},
                {"$inc": {"rule_count": n, "next_rule_no": n},
                 "$set": {"rule_reserved_at": self._stamp()}},
                projection={"next_rule_no": 1},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return int(doc["next_rule_no"]) - n + 1
            if attempt or not await self._heal_count(uid):
                break
        user = await self._users.find_one({"_id": uid}, {"rule_count": 1})
        used = int(user.get("rule_count", 0)) if user is not None else 0
        raise RuleLimitReached(self.limits.rules_max, max(0, self.limits.rules_max - used))

    async def _resync(self, uid: int, first: int, ours: Sequence[Any]) -> bool:
        """If the numbers reserved from ``first`` on were taken already by rules other than
        ``ours`` (the batch's own, some of which may be in), the counter had fallen behind
        the user's highest rule number: move it up (and the count up to the rules there
        are); True if it was behind.  Compared with ``first``, not
        with the counter: the reservation that collided has already moved the counter,
        possibly up to the highest number, which is then still taken."""
        top = await self._rules.find_one({"uid": uid, "_id": {"$nin": list(ours)}}, {"no": 1},
                                         sort=[("no", -1)])
        if top is None or int(top["no"]) < first:
            return False
        actual = await self._rules.count_documents({"uid": uid})
        self._counters.pop(uid)
        await self._users.update_one({"_id": uid}, {"$max": {"next_rule_no": int(top["no"]),
                                                             "rule_count": actual}})
        return True

    async def _release(self, uid: int, first: int, n: int) -> None:
        """Give back a reservation whose rules were not inserted: the slots always, the
        numbers too if nobody reserved after us (else they stay unused: never reused)."""
        self._counters.pop(uid)
        result = await self._users.update_one(
            {"_id": uid, "next_rule_no": first + n - 1},
            {"$inc": {"rule_count": -n, "next_rule_no": -n}})
        if result.matched_count != 1:
            await self._users.update_one({"_id": uid}, {"$inc": {"rule_count": -n}})

    async def _heal_count(self, uid: int) -> bool:
        """Recount a user's rules if the stored count ran ahead of the truth (a process
        died between reserving a slot and inserting).  Only when no reservation happened
        in the last ``HEAL_QUIET_S``: a recent one may still be inserting, and counting
        it out would let a concurrent add exceed the limit.  True if the count changed."""
        user = await self._users.find_one({"_id": uid}, {"rule_count": 1})
        if user is None:
            raise UserNotFound(uid)
        actual = await self._rules.count_documents({"uid": uid})
        if actual >= user.get("rule_count", 0):
            return False
        quiet_since = datetime.fromtimestamp(self._now() - HEAL_QUIET_S, UTC)
        result = await self._users.update_one(
            {"_id": uid, "rule_count": user["rule_count"],
             "rule_reserved_at": {"$not": {"$gte": quiet_since}}},
            {"$set": {"rule_count": actual}},
        )
        return result.modified_count == 1

    @mongo_call
    async def delete(self, uid: int, number: int) -> Rule:
        # Read, then delete by _id (not findAndModify, which the embedded MongoDB-wire
        # server runs as a collection scan; see docs/PERFORMANCE.md).  Still exactly
        # once: of two concurrent deletes only one deletes the document.
        doc = await self._rules.find_one({"uid": uid, "no": number})
        if doc is None:
            raise RuleNotFound(number)
        if (await self._rules.delete_one({"_id": doc["_id"]})).deleted_count != 1:
            raise RuleNotFound(number)
        try:
            await self._users_unsynced.update_one({"_id": uid}, {"$inc": {"rule_count": -1}})
        finally:
            await self._changed(uid)
        return _rule(doc)

    @mongo_call
    async def update(self, uid: int, number: int, *, reply: str,
                     keyword: str | None = None, mode: MatchMode | None = None) -> Rule:
        """Change a rule's reply (and, from the API, its keyword and mode)."""
        fields: dict[str, Any] = {"reply": self.check_reply(reply), "updated_at": self._stamp()}
        if keyword is not None:
            fields["keyword"] = self.check_keyword(keyword)
            fields["norm"] = normalize_keyword(fields["keyword"])
        if mode is not None:
            fields["mode"] = MatchMode(mode).value
        # Read, update by _id, read back (see delete): three indexed operations.
        doc = await self._rules.find_one({"uid": uid, "no": number})
        if doc is None:
            raise RuleNotFound(number)
        try:
            result = await self._rules.update_one({"_id": doc["_id"]}, {"$set": fields})
        except DuplicateKeyError:
            raise DuplicateKeyword(fields.get("keyword", "")) from None
        stored = await self._rules.find_one({"_id": doc["_id"]})
        if result.matched_count != 1 or stored is None:
            raise RuleNotFound(number)  # deleted meanwhile
        await self._changed(uid)
        return _rule(stored)
