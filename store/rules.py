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

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from config.clock import wall_clock
from store._guard import mongo_call
from store.bots import settings_version_key
from store.cache import Stamp, VersionedCache
from store.errors import DuplicateKeyword, InvalidRule, RuleLimitReached, RuleNotFound, UserNotFound
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
        self.limits = limits
        self._now = now
        self._kv = kv
        self.snapshots: VersionedCache[int, tuple[Rule, ...]] = VersionedCache(
            SNAPSHOT_USERS, SNAPSHOT_MAX_AGE_S)

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
                       items: Sequence[tuple[str, str, MatchMode]]) -> list[Rule]:
        """Add several rules, all or nothing.  Raises :class:`InvalidRule`,
        :class:`DuplicateKeyword` (within the batch or against existing rules) or
        :class:`RuleLimitReached`; in each case nothing is added."""
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
        for keyword, _, mode, norm in cleaned:
            existing = await self._rules.find_one({"uid": uid, "mode": mode.value, "norm": norm},
                                                  {"no": 1})
            if existing is not None:
                raise DuplicateKeyword(keyword, existing["no"])

        first = await self._reserve(uid, len(cleaned))
        now = self._stamp()
        docs = [
            {"_id": ObjectId(), "uid": uid, "no": first + i, "keyword": keyword, "reply": reply,
             "mode": mode.value, "norm": norm, "created_at": now, "updated_at": now}
            for i, (keyword, reply, mode, norm) in enumerate(cleaned)
        ]
        try:
            await self._rules.insert_many(docs, ordered=True)
        except BulkWriteError as exc:
            # A concurrent add took one of our keywords between the check and the insert;
            # undo our part so the batch stays all-or-nothing, and give the slots back.
            await self._rules.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
            await self._users.update_one({"_id": uid}, {"$inc": {"rule_count": -len(docs)}})
            failed = exc.details.get("writeErrors", [{}])[0].get("index", 0)
            raise DuplicateKeyword(docs[failed]["keyword"]) from None
        finally:
            # Also after a rollback: a reader may have cached the rules that were briefly
            # there.
            await self._changed(uid)
        return [_rule(d) for d in docs]

    async def _reserve(self, uid: int, n: int) -> int:
        """Atomically take ``n`` rule slots and numbers; return the first number."""
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
            await self._users.update_one({"_id": uid}, {"$inc": {"rule_count": -1}})
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
