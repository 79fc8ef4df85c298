"""itchat's contact lists: slimming them, looking contacts up, saving and restoring them.

Memory (a worker must hold thousands of sessions): itchat keeps every contact as a dict
of about 30 keys, and each group's full member list once someone in it has spoken.  The
driver rebuilds those dicts with the few keys that replying and itchat's own message
handling read (:func:`trim`), after login and after every round that changed contacts.
Measured with 500 friends and 20 groups: about 0.5 MB per session before any group
speaks, plus about 0.8 KB per member of each group that has spoken.

Every function here takes the session's ``itchat.Core`` and holds its
``storageClass.updateLock`` while it reads or rebuilds the lists (itchat's receiving loop
merges contacts under the same lock).
"""

from __future__ import annotations

import hashlib
from typing import Any

from itchat.storage import templates

from replybot.driver import Contact

__all__ = ["KEEP_CONTACT", "chat_kind", "contact_key", "dump", "find", "known_kind", "load",
           "trim"]

# What is kept of itchat's contact dicts (about 30 keys each as received).  Rebuilding the
# dicts, not deleting keys, is what frees the memory: a dict never shrinks its table.
KEEP_CONTACT = frozenset({"UserName", "NickName", "RemarkName", "DisplayName", "VerifyFlag",
                          "Uin"})
_KEEP_ROOM = KEEP_CONTACT | {"ChatRoomOwner", "OwnerUin", "IsAdmin", "EncryChatRoomId",
                             "MemberCount"}
_KEEP_MEMBER = frozenset({"UserName", "NickName", "DisplayName"})


def find(core: Any, user_name: str) -> Contact | None:
    """The contact ``user_name`` (never the owner), from the lists as they are now."""
    lists = ((core.chatroomList, "group"), (core.mpList, "mp"), (core.memberList, "friend"))
    with core.storageClass.updateLock:
        for contacts, kind in lists:
            for item in contacts:
                if item.get("UserName") == user_name and \
                        user_name != core.storageClass.userName:
                    return Contact(user_name, item.get("NickName") or "",
                                   item.get("RemarkName") or "", kind)
    return None


def known_kind(core: Any, user_name: str) -> str | None:
    """"mp" or "friend" if ``user_name`` is in those lists now, else None."""
    with core.storageClass.updateLock:
        if any(c.get("UserName") == user_name for c in core.mpList):
            return "mp"
        if any(c.get("UserName") == user_name for c in core.memberList):
            return "friend"
    return None


def chat_kind(chat: str, user: Any, me: str | None) -> str:
    """The kind of chat ``chat`` of a produced message whose ``User`` is ``user``."""
    if chat.startswith("@@"):
        return "group"
    if chat == "filehelper":
        return "filehelper"
    if chat == me:
        return "self"
    if not chat.startswith("@"):
        return "mp"  # weixin, fmessage, newsapp …: system accounts, never answered
    if isinstance(user, templates.MassivePlatform):
        return "mp"
    # produce_msg found the chat in the friend list (a copy with "UserName"), or made
    # an empty placeholder (only a lower-case "userName" key).
    if isinstance(user, templates.User) and user.get("UserName") == chat:
        return "friend"
    return "stranger"


def contact_key(kind: str, user: Any) -> str:
    """What identifies a contact across web logins, whose UserNames are new every time.

    The remark the owner gave a friend, else the nickname, with the kind: what the owner
    sees in the chat list, and what wxpy's "puid" also builds on.  Two friends with the
    same name and no remark share it (the conservative side: one cooldown for both).
    ``""`` when there is no name (strangers, filehelper): the UserName is all there is."""
    if kind not in ("friend", "group", "mp") or not isinstance(user, dict):
        return ""
    name = str(user.get("RemarkName") or user.get("NickName") or "")
    if not name:
        return ""
    digest = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    return f"{kind[0]}:{digest}"


def trim(core: Any) -> None:
    """Rebuild itchat's contact dicts with only the keys that replying and itchat's own
    message handling read (see the module notes on memory)."""
    with core.storageClass.updateLock:
        for contacts in (core.memberList, core.mpList):
            for i, item in enumerate(contacts):
                if not _is_slim(item, KEEP_CONTACT):
                    slim = type(item)(_slim(item, KEEP_CONTACT))
                    slim.core = core
                    contacts[i] = slim
        for i, room in enumerate(core.chatroomList):
            members = room.get("MemberList") or []
            if _is_slim(room, _KEEP_ROOM | {"Self"}) and \
                    _is_slim(room.get("Self") or {}, _KEEP_MEMBER) and \
                    all(_is_slim(m, _KEEP_MEMBER) for m in members):
                continue
            data = _slim(room, _KEEP_ROOM)
            data["MemberList"] = [_slim(m, _KEEP_MEMBER) for m in members]
            slim_room = templates.Chatroom(data)
            old_self = room.get("Self") or {}
            me = next((m for m in slim_room["MemberList"]
                       if m.get("UserName") == core.storageClass.userName), None)
            if me is None and old_self:
                me = templates.ChatroomMember(_slim(old_self, _KEEP_MEMBER))
                me.chatroom = slim_room
            if me is not None:
                slim_room["Self"] = me
            slim_room.core = core
            if me is not None:
                me.core = core
            core.chatroomList[i] = slim_room


def dump(core: Any) -> dict[str, list[list[str]]]:
    """The contacts as saved in the resumable state (names only, no owner)."""
    with core.storageClass.updateLock:
        me = core.storageClass.userName
        friends = [[c.get("UserName", ""), c.get("NickName", ""), c.get("RemarkName", "")]
                   for c in core.memberList if c.get("UserName") not in (None, me)]
        mps = [[c.get("UserName", ""), c.get("NickName", "")] for c in core.mpList]
        groups = [[c.get("UserName", ""), c.get("NickName", "")]
                  for c in core.chatroomList]
    return {"friends": friends, "mps": mps, "groups": groups}


def load(core: Any, me: dict[str, Any], contacts: dict[str, Any]) -> None:
    """Fill itchat's lists from :func:`dump`'s data, the owner's record first (as
    ``web_init`` puts it); groups without members (itchat fetches them when they speak)."""
    friends = [{"UserName": u, "NickName": n, "RemarkName": r, "VerifyFlag": 0}
               for u, n, r in contacts.get("friends", [])]
    mps = [{"UserName": u, "NickName": n, "RemarkName": "", "VerifyFlag": 8}
           for u, n in contacts.get("mps", [])]
    rooms = [{"UserName": u, "NickName": n, "MemberList": []}
             for u, n in contacts.get("groups", [])]
    core.storageClass.loads({
        "userName": me["UserName"], "nickName": me.get("NickName", ""),
        "memberList": [{k: me[k] for k in KEEP_CONTACT if k in me}, *friends],
        "mpList": mps, "chatroomList": rooms})


def _slim(contact: dict[str, Any], keep: frozenset[str]) -> dict[str, Any]:
    """The kept keys of a contact, without empty values (itchat reads the optional ones
    with ``.get``); dicts of five keys or fewer take the smallest table."""
    return {k: v for k, v in contact.items()
            if k in keep and (v or k in ("UserName", "NickName"))}


def _is_slim(contact: dict[str, Any], keep: frozenset[str]) -> bool:
    # "MemberList" is the shared empty list itchat puts into every non-group contact.
    return all(k in keep or k == "MemberList" for k in contact)
