"""The fake web WeChat's accounts: generated contacts with UserNames derived from the
uin and an index (see :mod:`sandbox.webwx.protocol`), so an account of 500 friends
costs the fake almost nothing."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

CGI = "/cgi-bin/mmwebwx-bin"  # the web API's path (its avatar URLs start with it)

# -- accounts and their generated contacts ---------------------------------------------


def _hexpad(prefix: str, width: int, epoch: int = 0) -> str:
    """``prefix`` padded with stable hex noise to ``width`` characters: real UserNames are
    long lowercase hex, and itchat's group regex only accepts ``[0-9a-z]``.  ``epoch``
    (the account's web-login count, see ``new_names_per_login``) changes the noise."""
    seed = prefix if not epoch else f"{prefix}:{epoch}"
    noise = hashlib.sha256(seed.encode()).hexdigest() * 2
    return prefix + noise[: width - len(prefix)]


@dataclasses.dataclass(eq=False)
class FakeAccount:
    """A personal WeChat account.  Contacts are generated from the counts on demand."""

    uin: int
    nickname: str
    friends: int = 5
    groups: int = 2
    members: int = 4
    mps: int = 2
    refuse_web_login: bool = False  # every login ends in 1203
    allow_push: bool = True  # webwxpushloginurl works for this uin
    group_display_name: str = ""  # the account's own name in its groups ("" = nickname)
    # Bumped at each web login when the fake's ``new_names_per_login`` is on: every
    # UserName of the account (its own and its contacts') is then new, as on the real
    # service, where UserNames are only valid for one web login (itchat's docs: "UserName
    # … changes every login"; wxpy built its "puid" on top of that for this reason).
    epoch: int = 0

    @property
    def user_name(self) -> str:
        return "@" + _hexpad(f"{self.uin:012x}e", 32, self.epoch)

    # UserName layout: uin (12 hex) + kind letter + index, padded; decoded by _decode.
    def friend_name(self, i: int) -> str:
        return "@" + _hexpad(f"{self.uin:012x}a{i:06x}", 32, self.epoch)

    def mp_name(self, i: int) -> str:
        return "@" + _hexpad(f"{self.uin:012x}b{i:06x}", 32, self.epoch)

    def member_name(self, g: int, j: int) -> str:
        return "@" + _hexpad(f"{self.uin:012x}c{g:03x}{j:04x}", 32, self.epoch)

    def group_name(self, g: int) -> str:
        return "@@" + _hexpad(f"{self.uin:012x}d{g:06x}", 64, self.epoch)

    @staticmethod
    def friend_nick(i: int) -> str:
        return f"好友{i:03d}"

    @staticmethod
    def mp_nick(i: int) -> str:
        return f"公众号{i}"

    @staticmethod
    def group_nick(g: int) -> str:
        return f"群聊{g:02d}"

    @staticmethod
    def member_nick(g: int, j: int) -> str:
        return f"群友{g}-{j}"

    @property
    def display_in_groups(self) -> str:
        return self.group_display_name or self.nickname

    def _decode(self, user_name: str) -> tuple[str, int, int] | None:
        """(kind, index, sub-index) of one of this account's generated UserNames."""
        prefix = f"{self.uin:012x}"
        if user_name.startswith("@@"):
            body = user_name[2:]
            if len(body) == 64 and body.startswith(prefix + "d"):
                g = int(body[13:19], 16)
                if body == _hexpad(f"{prefix}d{g:06x}", 64, self.epoch) and g < self.groups:
                    return ("group", g, 0)
            return None
        body = user_name[1:]
        if len(body) != 32 or not body.startswith(prefix):
            return None
        kind = body[12]
        if kind == "e" and user_name == self.user_name:
            return ("self", 0, 0)
        if kind == "c":
            g, j = int(body[13:16], 16), int(body[16:20], 16)
            if user_name == self.member_name(g, j) and g < self.groups and j < self.members:
                return ("member", g, j)
            return None
        index = int(body[13:19], 16)
        if kind == "a" and index < self.friends and user_name == self.friend_name(index):
            return ("friend", index, 0)
        if kind == "b" and index < self.mps and user_name == self.mp_name(index):
            return ("mp", index, 0)
        return None

    def kind_of(self, user_name: str) -> str | None:
        if user_name == "filehelper":
            return "filehelper"
        decoded = self._decode(user_name)
        return decoded[0] if decoded else None

    # -- contact dicts as the service sends them ---------------------------------------

    def self_dict(self) -> dict[str, Any]:
        return {
            "Uin": self.uin, "UserName": self.user_name, "NickName": self.nickname,
            "HeadImgUrl": f"{CGI}/webwxgeticon?seq=1&username={self.user_name}&skey=",
            "RemarkName": "", "PYInitial": "", "PYQuanPin": "", "RemarkPYInitial": "",
            "RemarkPYQuanPin": "", "HideInputBarFlag": 0, "StarFriend": 0, "Sex": 1,
            "Signature": "", "AppAccountFlag": 0, "VerifyFlag": 0, "ContactFlag": 0,
            "WebWxPluginSwitch": 0, "HeadImgFlag": 1, "SnsFlag": 17,
        }

    def _contact(self, user_name: str, nick: str, *, sex: int = 1, verify_flag: int = 0,
                 remark: str = "", member_count: int = 0) -> dict[str, Any]:
        return {
            "Uin": 0, "UserName": user_name, "NickName": nick,
            "HeadImgUrl": f"{CGI}/webwxgeticon?seq=1&username={user_name}&skey=",
            "ContactFlag": 3, "MemberCount": member_count, "MemberList": [],
            "RemarkName": remark, "HideInputBarFlag": 0, "Sex": sex, "Signature": "",
            "VerifyFlag": verify_flag, "OwnerUin": 0, "PYInitial": "", "PYQuanPin": "",
            "RemarkPYInitial": "", "RemarkPYQuanPin": "", "StarFriend": 0,
            "AppAccountFlag": 0, "Statues": 0, "AttrStatus": 0, "Province": "",
            "City": "", "Alias": "", "SnsFlag": 0, "UniFriend": 0, "DisplayName": "",
            "ChatRoomId": 0, "KeyWord": "", "EncryChatRoomId": "", "IsOwner": 0,
        }

    def friend_dict(self, i: int) -> dict[str, Any]:
        # Every tenth friend has a remark name, so that code reading RemarkName is tried.
        remark = f"备注{i}" if i % 10 == 1 else ""
        return self._contact(self.friend_name(i), self.friend_nick(i), sex=1 + i % 2,
                             remark=remark)

    def mp_dict(self, i: int) -> dict[str, Any]:
        return self._contact(self.mp_name(i), self.mp_nick(i), sex=0,
                             verify_flag=8 if i % 2 else 24)

    def group_dict(self, g: int, *, with_members: bool) -> dict[str, Any]:
        """A group as the contact list has it (``MemberList`` empty, as the real
        ``webwxgetcontact`` sends groups), or ``with_members`` as ``webwxbatchgetcontact``
        answers for a chatroom: the owner and every member, each as the short member
        record.  itchat's ``update_chatroom`` (``itchat/components/contact.py``) asks for
        it the first time someone in the group speaks, because ``produce_group_chat``
        (``components/messages.py``) looks the sender up in ``MemberList`` by UserName
        to set ``ActualNickName`` and reads the owner's own member (``Self``) for
        ``IsAt``.  The list is built from the indexes on each call, never stored."""
        room = self._contact(self.group_name(g), self.group_nick(g), sex=0,
                             member_count=self.members + 1)
        room["ContactFlag"] = 2
        if with_members:
            room["EncryChatRoomId"] = "@" + _hexpad(f"{self.uin:012x}f{g:06x}", 32)
            room["MemberList"] = [self._member(self.user_name, self.nickname,
                                               self.group_display_name)]
            room["MemberList"] += [self._member(self.member_name(g, j),
                                                self.member_nick(g, j), "")
                                   for j in range(self.members)]
        return room

    @staticmethod
    def _member(user_name: str, nick: str, display: str) -> dict[str, Any]:
        return {"Uin": 0, "UserName": user_name, "NickName": nick, "AttrStatus": 0,
                "PYInitial": "", "PYQuanPin": "", "RemarkPYInitial": "",
                "RemarkPYQuanPin": "", "MemberStatus": 0, "DisplayName": display,
                "KeyWord": ""}

    def filehelper_dict(self) -> dict[str, Any]:
        return self._contact("filehelper", "文件传输助手", sex=0)

    def contact_count(self) -> int:
        return self.friends + self.groups + self.mps + 1

    def contact_dict(self, index: int) -> dict[str, Any]:
        """The index-th entry of the full contact list (friends, groups, mps, filehelper)."""
        if index < self.friends:
            return self.friend_dict(index)
        index -= self.friends
        if index < self.groups:
            return self.group_dict(index, with_members=False)
        index -= self.groups
        if index < self.mps:
            return self.mp_dict(index)
        return self.filehelper_dict()

    def lookup_dict(self, user_name: str) -> dict[str, Any] | None:
        """A contact as ``webwxbatchgetcontact`` returns it (groups with members)."""
        if user_name == "filehelper":
            return self.filehelper_dict()
        decoded = self._decode(user_name)
        if decoded is None:
            return None
        kind, index, sub = decoded
        if kind == "friend":
            return self.friend_dict(index)
        if kind == "mp":
            return self.mp_dict(index)
        if kind == "group":
            return self.group_dict(index, with_members=True)
        if kind == "member":
            return self._contact(user_name, self.member_nick(index, sub))
        return self.self_dict()

    # -- resolving what tests pass in --------------------------------------------------

    def resolve(self, ref: str | int, kind: str) -> str:
        """The UserName of a contact given as UserName, index or nickname."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return self._by_index(int(ref), kind)
        if ref == "filehelper" or ref.startswith("@"):
            return ref
        names = {
            "friend": (self.friends, self.friend_nick),
            "mp": (self.mps, self.mp_nick),
            "group": (self.groups, self.group_nick),
        }
        if kind in names:
            count, nick = names[kind]
            for i in range(count):
                if nick(i) == ref:
                    return self._by_index(i, kind)
        raise LookupError(f"account {self.nickname!r} has no {kind} {ref!r}")

    def _by_index(self, i: int, kind: str) -> str:
        limits = {"friend": (self.friends, self.friend_name), "mp": (self.mps, self.mp_name),
                  "group": (self.groups, self.group_name)}
        count, name = limits[kind]
        if not 0 <= i < count:
            raise LookupError(f"account {self.nickname!r} has no {kind} number {i}")
        return name(i)

    def resolve_member(self, g: int, ref: str | int) -> str:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            j = int(ref)
            if not 0 <= j < self.members:
                raise LookupError(f"group {g} has no member number {j}")
            return self.member_name(g, j)
        if ref.startswith("@"):
            return ref
        for j in range(self.members):
            if self.member_nick(g, j) == ref:
                return self.member_name(g, j)
        raise LookupError(f"group {g} has no member {ref!r}")

    def summary(self) -> dict[str, Any]:
        return {"uin": self.uin, "nickname": self.nickname, "user_name": self.user_name,
                "friends": self.friends, "groups": self.groups, "members": self.members,
                "mps": self.mps, "refuse_web_login": self.refuse_web_login,
                "allow_push": self.allow_push}
