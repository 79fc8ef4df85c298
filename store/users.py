"""Users: one per official-account openid, with a short numeric id that is never reused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from config.clock import wall_clock
from store._guard import mongo_call
from store.errors import UsernameTaken, UserNotFound
from store.models import User

# User ids start at 1000 so that every id has at least four digits.
FIRST_UID = 1000


def _xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids (C0 controls other than tab and
    newlines, lone surrogates, U+FFFE, U+FFFF)."""
    return "".join(ch for ch in text
                   if not ((ord(ch) < 32 and ch not in "\t\n\r") or 0xD800 <= ord(ch) <= 0xDFFF
                           or ord(ch) in (0xFFFE, 0xFFFF)))


def _user(doc: dict[str, Any]) -> User:
    return User(
        uid=doc["_id"],
        openid=doc["openid"],
        username=doc.get("username"),
        password_hash=doc.get("password_hash"),
        nickname=doc.get("nickname", ""),
        wechat_name=doc.get("wechat_name", ""),
        email=doc.get("email", ""),
        autoreply=doc.get("autoreply", True),
        group_reply=doc.get("group_reply", False),
        subscribed=doc.get("subscribed", True),
        rule_count=doc.get("rule_count", 0),
        created_at=doc.get("created_at"),
        updated_at=doc.get("updated_at"),
    )


class UserRepo:
    def __init__(self, db: AsyncDatabase, now: Callable[[], float] = wall_clock) -> None:
        self._users = db["users"]
        self._counters = db["counters"]
        self._now = now

    def _stamp(self) -> datetime:
        return datetime.fromtimestamp(self._now(), UTC)

    async def ensure_indexes(self) -> None:
        await self._users.create_index("openid", unique=True)
        # Sparse: users who never registered on the web have no username at all.
        await self._users.create_index("username", unique=True, sparse=True)
        # Create the id counter here, once, rather than by upsert on first use:
        # concurrent first upserts of one document race (two inserts, one of which fails).
        try:
            await self._counters.update_one(
                {"_id": "uid"}, {"$setOnInsert": {"seq": 0}}, upsert=True
            )
        except DuplicateKeyError:
            pass  # another process created it a moment ago

    @mongo_call
    async def _next_uid(self) -> int:
        # A counter document, not max(_id)+1: ids are never reused even after a delete,
        # and concurrent creations never collide.
        doc = await self._counters.find_one_and_update(
            {"_id": "uid"}, {"$inc": {"seq": 1}}, return_document=ReturnDocument.AFTER
        )
        if doc is None:
            raise RuntimeError("user id counter missing: ensure_indexes() was not run")
        return FIRST_UID - 1 + int(doc["seq"])

    @mongo_call
    async def get_or_create(self, openid: str) -> tuple[User, bool]:
        """The user for ``openid``, created if new; the flag says whether it was created."""
        doc = await self._users.find_one({"openid": openid})
        if doc is not None:
            return _user(doc), False
        now = self._stamp()
        doc = {
            "_id": await self._next_uid(),
            "openid": openid,
            "autoreply": True,
            "group_reply": False,
            "subscribed": True,
            "rule_count": 0,
            "next_rule_no": 0,
            "created_at": now,
            "updated_at": now,
        }
        try:
            await self._users.insert_one(doc)
        except DuplicateKeyError:
            # Two first messages from one openid raced; the other insert won.  The id we
            # drew stays unused, which keeps "never reused" true.
            existing = await self._users.find_one({"openid": openid})
            if existing is None:
                raise
            return _user(existing), False
        return _user(doc), True

    @mongo_call
    async def get(self, uid: int) -> User:
        doc = await self._users.find_one({"_id": uid})
        if doc is None:
            raise UserNotFound(uid)
        return _user(doc)

    @mongo_call
    async def by_openid(self, openid: str) -> User | None:
        doc = await self._users.find_one({"openid": openid})
        return None if doc is None else _user(doc)

    @mongo_call
    async def by_username(self, username: str) -> User | None:
        doc = await self._users.find_one({"username": username})
        return None if doc is None else _user(doc)

    @mongo_call
    async def _set(self, uid: int, fields: dict[str, Any]) -> User:
        doc = await self._users.find_one_and_update(
            {"_id": uid},
            {"$set": {**fields, "updated_at": self._stamp()}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise UserNotFound(uid)
        return _user(doc)

    async def set_autoreply(self, uid: int, on: bool) -> User:
        return await self._set(uid, {"autoreply": on})

    async def set_group_reply(self, uid: int, on: bool) -> User:
        return await self._set(uid, {"group_reply": on})

    async def set_profile(self, uid: int, *, nickname: str | None = None,
                          wechat_name: str | None = None, email: str | None = None) -> User:
        # Names come from WeChat and may hold anything; what XML forbids is dropped
        # here, so no reply that shows them can be malformed.
        fields = {k: _xml_text(v) for k, v in
                  {"nickname": nickname, "wechat_name": wechat_name, "email": email}.items()
                  if v is not None}
        return await self._set(uid, fields)

    async def set_password(self, uid: int, password_hash: bytes) -> User:
        return await self._set(uid, {"password_hash": password_hash})

    async def set_credentials(self, uid: int, username: str, password_hash: bytes) -> User:
        """Bind a web username and password to this user; :class:`UsernameTaken` if another
        user has the name."""
        try:
            return await self._set(uid, {"username": username, "password_hash": password_hash})
        except DuplicateKeyError:
            raise UsernameTaken(username) from None

    @mongo_call
    async def set_scene(self, openid: str, scene: str) -> None:
        """Record the QR-code scene a user last came through (a subscribe with
        ``qrscene_…`` or a SCAN): ``scene`` and ``scene_at`` on the user document."""
        now = self._stamp()
        await self._users.update_one(
            {"openid": openid}, {"$set": {"scene": scene, "scene_at": now, "updated_at": now}})

    @mongo_call
    async def set_subscribed(self, openid: str, subscribed: bool) -> User | None:
        """Mark follow/unfollow.  Unfollowing keeps every rule (docs/OFFICIAL_ACCOUNT.md)."""
        doc = await self._users.find_one_and_update(
            {"openid": openid},
            {"$set": {"subscribed": subscribed, "updated_at": self._stamp()}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else _user(doc)
