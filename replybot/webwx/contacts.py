"""itchat's contact lists: slimming them, looking contacts up, saving and restoring them.

Memory (a worker must hold thousands of sessions): itchat keeps every contact as a dict
of about 30 keys, and each group's full member list once someone in it has spoken.  The
driver rebuilds those dicts with the few keys that replying and itchat's own message
handling read (:func:`trim`), after login and after every round that changed contacts.
A group's members become a :class:`Members`: the owner's own member record (its group
display name is what an @-mention names) and the others' UserNames only, in one string,
about 35 bytes a member instead of 1.3 KB as itchat keeps them; the names go in as itchat
merges a fetched list, so that 200 full records never wait for the next trim (those,
spread among the parser's freed objects, kept Python's memory arenas from being freed:
3.0 MB a session with 20 groups that spoke when they were made, 0.8 MB now; see
docs/PERFORMANCE.md).  The kept records are
of itchat's own classes with their attributes in slots (:class:`_Friend`, :class:`_Mp`,
:class:`_Self`), not in an attribute dict each (docs/ARCHITECTURE.md, "What is kept of a
friend").

Every function here takes the session's ``itchat.Core`` and holds its
``storageClass.updateLock`` while it reads or rebuilds the lists (itchat's receiving loop
merges contacts under the same lock).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from typing import Any

from itchat.storage import templates

from replybot.driver import Contact

__all__ = ["KEEP_CONTACT", "Members", "chat_kind", "contact_key", "dump", "find",
           "known_kind", "load", "trim"]

# What is kept of itchat's contact dicts (about 30 keys each as received).  Rebuilding the
# dicts, not deleting keys, is what frees the memory: a dict never shrinks its table.
KEEP_CONTACT = frozenset({"UserName", "NickName", "RemarkName", "DisplayName", "VerifyFlag",
                          "Uin"})
_KEEP_ROOM = KEEP_CONTACT | {"ChatRoomOwner", "OwnerUin", "IsAdmin", "EncryChatRoomId",
                             "MemberCount"}
_KEEP_MEMBER = frozenset({"UserName", "NickName", "DisplayName"})


class _Member(dict[str, Any]):
    """A member other than the owner as :class:`Members` hands it out: UserName, and an
    empty NickName (``produce_group_chat`` reads ``member['NickName']`` for
    ``ActualNickName``, which replying never uses).  A dict subclass so that itchat may
    set ``.core``/``.chatroom`` on it as on its own member records."""


# The kept records as itchat's own classes, with their attributes in slots: itchat's
# classes are dict subclasses whose every instance also carries an attribute dict (for
# ``_core``, and a ``User``'s empty ``verifyDict``), about 170 bytes each, more than the
# record's own keys.  A slot is a pointer; the weak reference to the core is one shared
# object (``weakref.ref`` hands out the same one).  Copies itchat makes (``search_friends``
# deep-copies a friend into each message's ``User``) are of the same class.
class _Friend(templates.User):
    __slots__ = ("_core", "verifyDict")


class _Mp(templates.MassivePlatform):
    __slots__ = ("_core",)


class _Self(templates.ChatroomMember):
    __slots__ = ("_chatroom", "_chatroomUserName", "_core")


_NO_VERIFY: dict[str, Any] = {}  # friends' verifyDict: add_friend's, never filled here


def _slotted(item: Any) -> Any:
    """The slotted class for a record of itchat's own class, else None."""
    if type(item) is templates.User:
        return _Friend
    if type(item) is templates.MassivePlatform:
        return _Mp
    return None


def _rebuilt(core: Any, item: Any) -> Any:
    """A friend's or an mp's record with the kept keys, in its slotted class."""
    slim: Any = (_slotted(item) or type(item))(_slim(item, KEEP_CONTACT))
    slim.core = core
    if isinstance(slim, _Friend):
        slim.verifyDict = _NO_VERIFY
    return slim


class Members:
    """A group's ``MemberList`` as itchat uses it, kept small.

    What itchat does with a member list (``itchat/components/messages.py``
    ``produce_group_chat``; ``components/contact.py`` ``update_local_chatrooms``): look
    the sender up by UserName (found: ``ActualNickName`` and ``IsAt`` are set; not
    found: it fetches the whole group again with ``update_chatroom``, so the others'
    UserNames must stay or every group message would be a fetch), find the owner's own
    member (``Self``, whose ``DisplayName`` is the name an @-mention uses), and on a
    later fetch merge the new list in (``append``, ``len``, ``del [i]``).

    ``kept`` holds full records (the owner's, and a merged record without a UserName
    until the next :func:`trim` drops it); the others are UserNames in one
    newline-joined string, handed out as :class:`_Member` dicts while itchat iterates.
    A merge (``append``) adds a member other than the owner to that string at once.

    A merge searches the list once per member it merges (``search_dict_list``, itchat's
    own loop over the whole list): 200 searches of a list growing to 200, which handed
    out about 20,000 new dicts, 6.6 ms of CPU per group on its first fetch.  So from the
    first ``append`` until the next :func:`trim` the handed-out dicts are kept and reused
    (``_view``, in the order of the names): 200 dicts for one merge, then freed."""

    __slots__ = ("__weakref__", "_count", "_names", "_view", "core", "kept")

    def __init__(self, kept: list[Any], names: list[str]) -> None:
        self.kept = kept
        self._names = "\n".join(names)
        self._count = len(names)
        self._view: list[_Member] | None = None
        self.core: Any = None

    @property
    def names(self) -> list[str]:
        """The UserNames held as names only (not in ``kept``)."""
        return self._names.split("\n") if self._count else []

    def __len__(self) -> int:
        return len(self.kept) + self._count

    def __iter__(self) -> Iterator[Any]:
        yield from self.kept
        if self._view is not None:
            yield from self._view
            return
        for name in self.names:
            yield _Member(UserName=name, NickName="")

    def has(self, user_name: str) -> bool:
        """Whether ``user_name`` is a member (a substring search, no dict made)."""
        if any(m.get("UserName") == user_name for m in self.kept):
            return True
        return bool(user_name) and "\n" not in user_name and \
            f"\n{user_name}\n" in f"\n{self._names}\n"

    def settle(self) -> None:
        """Drop the dicts a merge kept (:func:`trim` calls it)."""
        self._view = None

    def __getitem__(self, index: Any) -> Any:
        return list(self)[index]

    def __delitem__(self, index: int) -> None:
        if index < 0:
            index += len(self)
        if index < len(self.kept):
            del self.kept[index]
            return
        names = self.names
        del names[index - len(self.kept)]
        self._names, self._count = "\n".join(names), len(names)
        if self._view is not None:
            del self._view[index - len(self.kept)]

    def append(self, member: Any) -> None:
        # What update_local_chatrooms merges in when a group is fetched: the owner's
        # record is kept (the next trim slims it), every other member only by UserName,
        # so that a fetch never holds 200 full records until the next trim.
        user_name = member.get("UserName") if isinstance(member, dict) else None
        me = getattr(self.core, "storageClass", None)
        if user_name and me is not None and user_name != me.userName:
            if self._view is None:  # a merge began: keep what it is handed from now on
                self._view = [_Member(UserName=name, NickName="") for name in self.names]
            self._view.append(_Member(UserName=user_name, NickName=""))
            self._names = f"{self._names}\n{user_name}" if self._count else user_name
            self._count += 1
            return
        # As itchat's own ContactList does, a plain dict becomes a record that takes
        # attributes (itchat sets ``.core`` on every member when it copies a group).
        self.kept.append(_Member(member) if type(member) is dict else member)

    def __deepcopy__(self, memo: dict[int, Any]) -> Members:
        # produce_msg deep-copies the group into each message: the names string is
        # immutable and shared.
        twin = Members(copy.deepcopy(self.kept, memo), [])
        twin._names, twin._count, twin.core = self._names, self._count, self.core
        return twin


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
                if not _is_slim(item, KEEP_CONTACT) or _slotted(item) is not None:
                    contacts[i] = _rebuilt(core, item)
        me = core.storageClass.userName
        for i, room in enumerate(core.chatroomList):
            members = room.get("MemberList") or []
            if isinstance(members, Members):
                members.settle()
            if _is_slim(room, _KEEP_ROOM | {"Self"}) and isinstance(members, Members) and \
                    all(m.get("UserName") == me and _is_slim(m, _KEEP_MEMBER)
                        for m in members.kept):
                continue
            core.chatroomList[i] = _slim_room(core, room, me)


def _slim_room(core: Any, room: dict[str, Any], me: str) -> Any:
    """``room`` rebuilt with the kept keys and its members as :class:`Members`."""
    slim_room = templates.Chatroom(_slim(room, _KEEP_ROOM))
    slim_room.core = core  # before the members: the setter walks them
    own = None
    names: dict[str, None] = {}
    for member in room.get("MemberList") or []:
        user_name = member.get("UserName")
        if not user_name:
            continue
        if user_name == me:
            own = member
        else:
            names[user_name] = None
    if own is None:
        own = room.get("Self") or None
    kept = []
    if own is not None:
        # The owner's record: its DisplayName in this group is the @-mention's name.
        slim_self = _Self(_slim(own, _KEEP_MEMBER))
        slim_self.core = core
        slim_self.chatroom = slim_room
        slim_room["Self"] = slim_self
        if own.get("UserName") == me:
            kept.append(slim_self)
    members = Members(kept, list(names))
    members.core = core
    slim_room["MemberList"] = members
    return slim_room


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
