"""What a session keeps of its friends and groups (replybot.webwx.contacts), checked on
itchat's own structures and its own message shaping (``produce_msg``), no network: a
friend's message still names the friend after the records were slimmed, an @-mention in
a group is still seen, and a group fetch no longer holds its members' full records.
"""

from __future__ import annotations

import copy
import gc
import tracemalloc
from typing import Any

import itchat
from itchat.components.contact import update_local_chatrooms, update_local_friends
from itchat.components.messages import produce_msg
from itchat.storage import templates

from replybot.webwx import contacts, messages
from replybot.webwx.contacts import Members
from sandbox.webwx import FakeAccount

FRIENDS, GROUPS, MEMBERS = 500, 3, 200


def _account() -> FakeAccount:
    return FakeAccount(uin=4242, nickname="店主", friends=FRIENDS, groups=GROUPS,
                       members=MEMBERS, group_display_name="店长小王")


def _saved(account: FakeAccount) -> dict[str, Any]:
    """The contacts as the driver saves them (``contacts.dump``) and resumes from."""
    return {"friends": [[account.friend_name(i), account.friend_nick(i),
                         f"备注{i}" if i % 10 == 1 else ""] for i in range(FRIENDS)],
            "mps": [[account.mp_name(0), account.mp_nick(0)]],
            "groups": [[account.group_name(g), account.group_nick(g)]
                       for g in range(GROUPS)]}


def _core(account: FakeAccount) -> Any:
    core = itchat.Core()
    me = account.self_dict()
    user = templates.User(itchat.utils.struct_friend_info(me))
    user.core = core
    core.loginInfo = {"wxuin": str(account.uin), "User": user}
    contacts.load(core, me, _saved(account))
    contacts.trim(core)
    return core


def _text(src: str, dst: str, content: str, msg_id: int) -> dict[str, Any]:
    # A webwxsync AddMsgList entry with the fields produce_msg reads for a text.
    return {"MsgId": str(msg_id), "FromUserName": src, "ToUserName": dst, "MsgType": 1,
            "Content": content, "Url": "", "CreateTime": 1700000000, "Status": 3,
            "ImgStatus": 1, "AppMsgType": 0, "FileName": "", "FileSize": "",
            "MediaId": "", "StatusNotifyCode": 0, "StatusNotifyUserName": "",
            "RecommendInfo": {}, "NewMsgId": msg_id}


def _fetch(core: Any, account: FakeAccount, g: int) -> None:
    """What ``update_chatroom`` does with webwxbatchgetcontact's answer for group g."""
    update_local_chatrooms(core, [account.group_dict(g, with_members=True)])


def test_a_friends_message_still_names_the_friend() -> None:
    account = _account()
    core = _core(account)
    assert len(core.memberList) == FRIENDS + 1  # the owner's record first, as web_init
    friend = core.memberList[12]
    assert isinstance(friend, templates.User)
    assert set(friend) <= contacts.KEEP_CONTACT | {"MemberList"}
    for i in (0, 11):  # without and with a remark
        (msg,) = produce_msg(core, [_text(account.friend_name(i), account.user_name,
                                          "价格", i + 1)])
        user = msg["User"]
        assert isinstance(user, templates.User)
        assert user.core is core  # itchat set it on its copy of the slimmed record
        assert user["NickName"] == account.friend_nick(i)
        incoming = messages.incoming(msg, self_user_name=account.user_name,
                                     nickname="店主")
        assert (incoming.chat_kind, incoming.chat, incoming.text) == \
            ("friend", account.friend_name(i), "价格")
        assert incoming.chat_key == contacts.contact_key("friend", {
            "NickName": account.friend_nick(i), "RemarkName": "备注11" if i else ""})
        found = contacts.find(core, account.friend_name(i))
        assert found is not None
        assert (found.nick_name, found.remark_name, found.kind) == \
            (account.friend_nick(i), "备注11" if i else "", "friend")


def test_a_friend_changed_by_wechat_is_updated_then_slimmed_again() -> None:
    account = _account()
    core = _core(account)
    changed = account.friend_dict(5)
    changed["RemarkName"] = "老客户"
    update_local_friends(core, [changed])  # a ModContactList entry merged by itchat
    found = contacts.find(core, account.friend_name(5))
    assert found is not None
    assert found.remark_name == "老客户"
    contacts.trim(core)
    record = next(c for c in core.memberList if c["UserName"] == account.friend_name(5))
    assert record["RemarkName"] == "老客户"
    assert set(record) <= contacts.KEEP_CONTACT | {"MemberList"}
    assert copy.deepcopy(record).verifyDict == {}  # as itchat's own User copies


def test_a_mention_in_a_group_is_seen_after_the_fetch_and_the_trim() -> None:
    account = _account()
    core = _core(account)
    _fetch(core, account, 1)
    room = next(r for r in core.chatroomList if r["UserName"] == account.group_name(1))
    members = room["MemberList"]
    # The fetch merged the others in as names only: the owner's is the one full record.
    assert isinstance(members, Members)
    assert [m["UserName"] for m in members.kept] == [account.user_name]
    assert members.names == [account.member_name(1, j) for j in range(MEMBERS)]
    assert room["Self"]["DisplayName"] == "店长小王"
    contacts.trim(core)
    room = next(r for r in core.chatroomList if r["UserName"] == account.group_name(1))
    assert room["Self"]["DisplayName"] == "店长小王"

    sender = account.member_name(1, 150)
    content = f"{sender}:<br/>@店长小王\u2005价格"
    (msg,) = produce_msg(core, [_text(account.group_name(1), account.user_name, content, 9)])
    assert msg["IsAt"] is True  # itchat found the sender without fetching the group
    assert msg["ActualUserName"] == sender
    incoming = messages.incoming(msg, self_user_name=account.user_name, nickname="店主")
    assert (incoming.is_group, incoming.mentioned, incoming.text, incoming.chat_kind) == \
        (True, True, "价格", "group")
    assert incoming.chat_key == contacts.contact_key("group",
                                                     {"NickName": account.group_nick(1)})


def test_a_member_who_left_is_dropped_on_the_next_fetch() -> None:
    account = _account()
    core = _core(account)
    _fetch(core, account, 0)
    contacts.trim(core)
    account.members -= 1  # the last member left
    _fetch(core, account, 0)
    room = next(r for r in core.chatroomList if r["UserName"] == account.group_name(0))
    assert len(room["MemberList"]) == MEMBERS  # the owner and the others still there
    assert account.member_name(0, MEMBERS - 1) not in room["MemberList"].names


def test_slimmed_friends_hold_less_than_itchats_records() -> None:
    """Measured, not a timing: the records of 500 friends after the trim, with
    tracemalloc.  itchat's own User records (a dict plus an attribute dict each, and an
    empty verifyDict) took about 620 bytes a friend beside the names, the slotted ones
    about 230."""
    account = _account()
    saved = _saved(account)  # the names are allocated before measuring
    core = itchat.Core()
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        contacts.load(core, account.self_dict(), saved)
        loaded = tracemalloc.get_traced_memory()[0] - start
        contacts.trim(core)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert kept / FRIENDS < 350, (loaded, kept)
    assert kept < loaded / 2


def test_a_group_fetch_holds_slim_members_until_the_trim_and_nothing_after() -> None:
    """The 200 members of a fetched group are names as soon as itchat merges them in.
    While the merge runs (until the next trim) they are also handed out as two-key dicts,
    one each, reused by every search of the merge: tracemalloc finds about 80 KB held
    right after the merge (not the 260 KB of 200 member records as itchat keeps them),
    and about 18 KB once the trim dropped the dicts (the names and what itchat copies of
    the group's own record)."""
    account = _account()
    core = _core(account)
    answer = account.group_dict(2, with_members=True)
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        update_local_chatrooms(core, [answer])
        merged = tracemalloc.get_traced_memory()[0] - start
        contacts.trim(core)
        gc.collect()
        trimmed = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert merged < MEMBERS * 500, merged
    assert trimmed < MEMBERS * 120, trimmed


class _Watched(Members):
    """Members that keep every dict they hand out (so none is freed and its id reused):
    how many distinct dicts a merge was handed."""

    __slots__ = ("handed",)

    def __iter__(self) -> Any:
        for member in super().__iter__():
            self.handed.append(member)
            yield member


def test_a_merge_hands_out_one_dict_per_member_not_one_per_search() -> None:
    """itchat's merge searches the whole list once per member it merges in
    (``search_dict_list``): a new dict per member per search was about 20,000 dicts per
    200-member group; now one per member, dropped by the trim."""
    account = _account()
    core = _core(account)
    room = next(r for r in core.chatroomList if r["UserName"] == account.group_name(1))
    watched = _Watched(list(room["MemberList"].kept), [])
    watched.core, watched.handed = core, []
    room["MemberList"] = watched
    _fetch(core, account, 1)
    wanted = len(account.group_dict(1, with_members=True)["MemberList"])  # the owner too
    assert len(watched) == wanted
    distinct = {id(m) for m in watched.handed if m.get("UserName") != core.storageClass.userName}
    assert len(watched.handed) > MEMBERS * 10  # itchat searched the list many times
    assert MEMBERS - 1 <= len(distinct) <= MEMBERS, len(distinct)
    assert watched.has(account.member_name(1, 7))
    assert not watched.has(account.member_name(1, MEMBERS + 3))
    assert not watched.has("")
    assert watched._view is not None
    watched.settle()  # what contacts.trim does to every group's members
    assert watched._view is None
    assert len(watched) == wanted
    assert watched.has(account.member_name(1, 7))
